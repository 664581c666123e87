"""The graph half of TF1's layer API: node accessors, updates, losses, scope, graph.

Mixed into ``Layer``. Symbolic calls (``symbolic.call_symbolic``) record nodes;
these members read them, with the errors TF1's ``tf.layers.Layer`` documents:
never called → AttributeError (``input``, ``output``, shapes) or RuntimeError
(``get_*_at``); a node index out of range → ValueError; several nodes →
AttributeError for ``input``/``output`` (and for shapes that differ); a layer
only ever called on concrete tensors (eager) → RuntimeError naming symbolic mode.

The errors of the four properties (``input``, ``output``, ``input_shape``,
``output_shape``) on an eager layer, and of ``scope_name`` before the first call,
are also ``AttributeError``s (``SymbolicModeError``, ``ScopeNameError``): Python's
attribute protocol (``hasattr``, ``getattr(obj, name, default)``,
``inspect.getmembers``) and the tools built on it (``torch.jit.trace``) then see an
absent attribute instead of failing. ``graph`` is always readable.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from . import symbolic
from .symbolic import Loss, Update


def _unwrap(values: Any) -> Any:
    if isinstance(values, (list, tuple)) and len(values) == 1:
        return values[0]
    return values


def _same(a: Any, b: Any) -> bool:
    """Whether two (lists of) tensors are the same objects."""
    fa, fb = symbolic.flatten(a), symbolic.flatten(b)
    return len(fa) == len(fb) and all(x is y for x, y in zip(fa, fb, strict=True))


__all__ = ["GraphAPI", "ScopeNameError", "SymbolicModeError"]


class SymbolicModeError(RuntimeError, AttributeError):
    """A symbolic-mode property (``input``, ``output``, ``input_shape``,
    ``output_shape``) read on a layer only ever called on concrete tensors.

    A ``RuntimeError`` as TF1 documents, and an ``AttributeError`` so that
    ``hasattr(layer, "output")`` is False instead of raising."""


class ScopeNameError(ValueError, AttributeError):
    """``scope_name`` read before the layer's first call: a ``ValueError`` as TF1
    documents, and an ``AttributeError`` so that ``hasattr`` is False instead of
    raising."""


_module_getattr = torch.nn.Module.__getattr__
_PROPERTIES = frozenset({"input", "output", "input_shape", "output_shape", "scope_name"})


class GraphAPI:
    """TF1 graph-mode members of ``Layer`` (see the module docstring)."""

    def __getattr__(self, name: str) -> Any:
        # A property that raises AttributeError makes Python fall back to __getattr__
        # (nn.Module's, with a generic message): run it again so its own error shows.
        if name in _PROPERTIES:
            return getattr(GraphAPI, name).fget(self)
        return _module_getattr(self, name)  # parameters, buffers, submodules

    _inbound_nodes: list[symbolic.Node]
    _called_eagerly: bool
    name: str

    # ------------------------------------------------------------------ graph and scope
    @property
    def graph(self) -> symbolic.Graph:
        """The Graph this layer was created in (and records its symbolic calls in);
        readable in eager mode too (eager layers belong to the default graph)."""
        return self._graph

    @property
    def scope_name(self) -> str:
        """The variable scope: ``scope=`` of the first call, else the layer name."""
        if self._scope is None:
            raise ScopeNameError(
                f"No name available for layer scope because the layer {self.name!r} has not "
                "been used yet. The scope name is determined the first time the layer "
                "instance is called."
            )
        return self._scope

    def _require_symbolic(self, what: str, error: type[RuntimeError] = RuntimeError) -> None:
        """Raise ``error`` (RuntimeError; ``SymbolicModeError`` for properties) when the
        layer was only ever called on concrete tensors."""
        if not self._inbound_nodes and self._called_eagerly:
            raise error(
                f"Layer.{what} is only available in symbolic mode: layer {self.name!r} has "
                "only been called on concrete tensors. Call it on batchnorm.Input(...) tensors "
                "to record inbound nodes."
            )

    # ------------------------------------------------------------------ node accessors
    def _node_attribute_at(self, index: int, attr: str, label: str) -> Any:
        self._require_symbolic(f"get_{label}_at")
        if not self._inbound_nodes:
            raise RuntimeError(
                f"The layer {self.name!r} has never been called and thus has no defined {label}."
            )
        if not isinstance(index, int) or not 0 <= index < len(self._inbound_nodes):
            raise ValueError(
                f"Asked to get {label} at node {index}, but the layer has only "
                f"{len(self._inbound_nodes)} inbound nodes."
            )
        return _unwrap(getattr(self._inbound_nodes[index], attr))

    def get_input_at(self, node_index: int) -> Any:
        """Input tensor(s) of inbound node ``node_index`` (node 0 is the first call)."""
        return self._node_attribute_at(node_index, "inputs", "input")

    def get_output_at(self, node_index: int) -> Any:
        """Output tensor(s) of inbound node ``node_index``."""
        return self._node_attribute_at(node_index, "outputs", "output")

    def get_input_shape_at(self, node_index: int) -> Any:
        """Input shape(s) of inbound node ``node_index`` (tuples, None for unknown sizes)."""
        return self._node_attribute_at(node_index, "input_shapes", "input shape")

    def get_output_shape_at(self, node_index: int) -> Any:
        """Output shape(s) of inbound node ``node_index``."""
        return self._node_attribute_at(node_index, "output_shapes", "output shape")

    def _single_node(self, what: str, attr: str) -> Any:
        self._require_symbolic(what, SymbolicModeError)
        if not self._inbound_nodes:
            raise AttributeError(f"Layer {self.name} is not connected, no {what} to return.")
        if len(self._inbound_nodes) > 1:
            raise AttributeError(
                f'Layer {self.name} has multiple inbound nodes, hence the notion of "layer '
                f'{what}" is ill-defined. Use `get_{what}_at(node_index)` instead.'
            )
        return _unwrap(getattr(self._inbound_nodes[0], attr))

    @property
    def input(self) -> Any:
        """The input of the only inbound node (AttributeError with none or several)."""
        return self._single_node("input", "inputs")

    @property
    def output(self) -> Any:
        """The output of the only inbound node (AttributeError with none or several)."""
        return self._single_node("output", "outputs")

    def _common_shape(self, what: str, attr: str) -> Any:
        self._require_symbolic(what, SymbolicModeError)
        if not self._inbound_nodes:
            raise AttributeError(
                f"The layer {self.name!r} has never been called and thus has no defined {what}."
            )
        shapes = [getattr(node, attr) for node in self._inbound_nodes]
        if any(s != shapes[0] for s in shapes[1:]):
            raise AttributeError(
                f"The layer {self.name!r} has multiple inbound nodes, with different "
                f'{what}s. Hence the notion of "{what}" is ill-defined for the layer. Use '
                f"`get_{what}_at(node_index)` instead."
            )
        return _unwrap(shapes[0])

    @property
    def input_shape(self) -> Any:
        """Input shape shared by every inbound node (tuples with None)."""
        return self._common_shape("input_shape", "input_shapes")

    @property
    def output_shape(self) -> Any:
        """Output shape shared by every inbound node (tuples with None)."""
        return self._common_shape("output_shape", "output_shapes")

    # ------------------------------------------------------------------ updates
    @property
    def updates(self) -> list[Update]:
        """Recorded updates of symbolic calls (conditional ones and unconditional ones);
        eager calls apply their updates immediately, so they add nothing. A frozen
        layer reports none, as TF1's ``Layer.updates``."""
        if not self.trainable:
            return []
        recorded = [u for node in self._inbound_nodes for u in node.updates]
        return recorded + list(self._unconditional_updates)

    def add_update(self, updates: Any, inputs: Any = None) -> None:
        """Add updates: callables or descriptions. With symbolic ``inputs`` they are
        conditional on the node those inputs fed (``Function`` runs callables right
        after that node in training); without, unconditional. In eager mode callables
        run now (the TF2 behaviour)."""
        items = updates if isinstance(updates, (list, tuple)) else [updates]
        node = self._node_for(inputs)
        if node is None and not self._inbound_nodes:
            for item in items:  # eager: apply now
                if callable(item):
                    item()
            return
        for item in items:
            run = item if callable(item) else None
            update = Update(self, getattr(item, "variable", repr(item)), node, run)
            (node.updates if node is not None else self._unconditional_updates).append(update)
            self._graph.add_to_collection("update_ops", update)

    def get_updates_for(self, inputs: Any) -> list[Update]:
        """Updates conditional on ``inputs`` (the tensors a symbolic call received), or the
        unconditional ones for ``inputs=None``. RuntimeError in eager mode."""
        self._require_symbolic("get_updates_for")
        if inputs is None:
            return list(self._unconditional_updates) if self.trainable else []
        return [u for node in self._nodes_with_inputs(inputs) for u in node.updates]

    def _node_for(self, inputs: Any) -> symbolic.Node | None:
        if inputs is None:
            return None
        nodes = self._nodes_with_inputs(inputs)
        if not nodes:
            if symbolic.is_symbolic(inputs):
                raise ValueError(f"{inputs!r} is not an input of any call of layer {self.name}.")
            return None
        return nodes[-1]

    def _nodes_with_inputs(self, inputs: Any) -> list[symbolic.Node]:
        return [node for node in self._inbound_nodes if _same(node.inputs, inputs)]

    def _symbolic_updates(self, node: symbolic.Node, training: Any) -> list[Update]:
        """The updates a symbolic call records; layers with state override this."""
        return []

    # ------------------------------------------------------------------ losses
    def get_losses_for(self, inputs: Any) -> list[Loss]:
        """Losses conditional on ``inputs`` (activity regularization of that call), or the
        unconditional ones (weight regularization, ``add_loss`` without inputs) for
        ``inputs=None``. Each ``Loss`` gives its value with ``.value()``. RuntimeError
        in eager mode."""
        self._require_symbolic("get_losses_for")
        if inputs is None:
            return self._unconditional_losses()
        return [loss for node in self._nodes_with_inputs(inputs) for loss in node.losses]

    def _unconditional_losses(self) -> list[Loss]:
        regularization = [Loss(self, "regularization", None, fn) for fn in self._callable_losses]
        return regularization + list(self._symbolic_losses)

    def _record_symbolic_loss(self, loss: Any, inputs: Any) -> None:
        """add_loss in symbolic mode: record a description, conditional on ``inputs``."""
        node = self._node_for(inputs)
        fn: Callable[[], Any] = loss if callable(loss) else (lambda: loss)
        entry = Loss(self, "added", node, fn)
        (node.losses if node is not None else self._symbolic_losses).append(entry)

    def _latest_activity_loss(self) -> torch.Tensor:
        """The activity-regularization loss of the layer's most recent concrete call."""
        if not self._call_losses:
            raise RuntimeError(
                f"Layer {self.name} has no activity loss yet: run the graph (for example with "
                "batchnorm.Function) first."
            )
        return self._call_losses[0]
