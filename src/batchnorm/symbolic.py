"""Symbolic mode: TF1's graph construction, on PyTorch.

``Input(shape)`` makes a ``SymbolicTensor`` (a shape with ``None`` for unknown
sizes, a dtype, no data). Calling any ``Layer`` on symbolic tensors builds it,
infers the output shape with ``compute_output_shape`` and records a ``Node``
(layer, inputs, outputs, call arguments) in the tensors' ``Graph``, together
with the call's update and loss descriptions. ``Function(inputs, outputs)``
(``symbolic_function``) is an ``nn.Module`` that runs the recorded nodes on real
tensors, each once, in order, so a symbolic model trains like any PyTorch module::

    x = batchnorm.Input((8,))
    h = batchnorm.Wrap(nn.Linear(8, 16))(x)
    h = batchnorm.BatchNormalization()(h)
    y = batchnorm.Lambda(torch.relu)(h)
    model = batchnorm.Function(x, y)
    out = model(torch.randn(32, 8), training=True)   # moving statistics update in place
"""

from __future__ import annotations

import contextlib
import inspect
import threading
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch

from ._utils import as_dtype

__all__ = [
    "Graph",
    "Input",
    "Loss",
    "Node",
    "SymbolicTensor",
    "Update",
    "get_default_graph",
]

GraphKeys = ("trainable_variables", "update_ops", "regularization_losses")


class Graph:
    """Holds the nodes of symbolic calls, TF1's collections and the default-name counters.

    A default graph always exists (``get_default_graph()``); ``with g.as_default():``
    makes ``g`` the default for layers and inputs created inside.
    """

    def __init__(self) -> None:
        self.nodes: list[Node] = []
        self._collections: dict[str, list[Any]] = defaultdict(list)
        self._names: dict[str, int] = {}
        self._lock = threading.Lock()

    def unique_name(self, base: str) -> str:
        """``base``, then ``base_1``, ``base_2``, … (Keras' default layer names)."""
        with self._lock:
            n = self._names.get(base, 0)
            self._names[base] = n + 1
        return base if n == 0 else f"{base}_{n}"

    def reset_names(self) -> None:
        """Restart the default-name counters (``batchnorm.clear_session()`` does this)."""
        with self._lock:
            self._names.clear()

    def add_to_collection(self, name: str, value: Any) -> None:
        """Append ``value`` to collection ``name`` (once: collections hold no duplicates)."""
        items = self._collections[name]
        if not any(item is value for item in items):
            items.append(value)

    def get_collection(self, name: str) -> list[Any]:
        """TF1's collections: ``'trainable_variables'``, ``'update_ops'``,
        ``'regularization_losses'`` (and any other name used with ``add_to_collection``)."""
        return list(self._collections.get(name, []))

    @contextlib.contextmanager
    def as_default(self) -> Iterator[Graph]:
        """Context manager making this graph the default (``get_default_graph()``) for the
        layers and inputs created inside; yields the graph."""
        _stack().append(self)
        try:
            yield self
        finally:
            _stack().pop()

    def __repr__(self) -> str:
        return f"Graph(nodes={len(self.nodes)})"


_local = threading.local()
_DEFAULT: list[Graph] = [Graph()]


def _stack() -> list[Graph]:
    if not hasattr(_local, "stack"):
        _local.stack = []
    return _local.stack


def get_default_graph() -> Graph:
    """The innermost ``Graph.as_default()`` graph, else the process-wide default graph."""
    stack = _stack()
    return stack[-1] if stack else _DEFAULT[0]


def reset_default_graph() -> Graph:
    """Replace the process-wide default graph with a new, empty one."""
    _DEFAULT[0] = Graph()
    return _DEFAULT[0]


class SymbolicTensor:
    """A placeholder: shape (``None`` for unknown sizes), dtype and graph; no data.

    Produced by ``Input`` and by calling layers on symbolic tensors; ``node`` is
    the node that produced it (None for an ``Input``).
    """

    _bn_node = True  # marks symbolic values for the layer machinery

    def __init__(
        self,
        shape: Sequence[int | None],
        dtype: torch.dtype = torch.float32,
        graph: Graph | None = None,
        name: str | None = None,
        node: Node | None = None,
    ) -> None:
        self.shape = tuple(None if d is None else int(d) for d in shape)
        self.dtype = dtype
        self.graph = graph or get_default_graph()
        self.name = name or self.graph.unique_name("tensor")
        self.node = node
        self._keras_mask: SymbolicTensor | None = None

    def dim(self) -> int:
        return len(self.shape)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __repr__(self) -> str:
        shape = "(" + ", ".join("None" if d is None else str(d) for d in self.shape) + ")"
        return f"SymbolicTensor(name={self.name!r}, shape={shape}, dtype={self.dtype})"


def Input(
    shape: Sequence[int | None],
    dtype: Any = torch.float32,
    batch_size: int | None = None,
    name: str | None = None,
) -> SymbolicTensor:
    """A symbolic model input of per-example ``shape`` (the batch dimension is added,
    ``batch_size`` or None), like ``tf.keras.Input``."""
    if isinstance(shape, int):
        shape = (shape,)
    if not isinstance(shape, Sequence) or any(
        d is not None and (not isinstance(d, int) or isinstance(d, bool) or d < 0) for d in shape
    ):
        raise TypeError(
            f"`shape` must be a tuple of non-negative ints or None; received {shape!r}."
        )
    if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 0):
        raise TypeError(
            f"`batch_size` must be a non-negative int or None; received {batch_size!r}."
        )
    dtype = as_dtype(dtype, "dtype") if not isinstance(dtype, torch.dtype) else dtype
    graph = get_default_graph()
    return SymbolicTensor((batch_size, *shape), dtype, graph, name or graph.unique_name("input"))


def is_symbolic(value: Any) -> bool:
    """Whether ``value`` is a symbolic tensor or a (nested) sequence of them."""
    if isinstance(value, SymbolicTensor):
        return True
    if isinstance(value, (list, tuple)) and value:
        return all(is_symbolic(v) for v in value)
    return False


def flatten(value: Any) -> list[Any]:
    if isinstance(value, (list, tuple)):
        return [v for item in value for v in flatten(item)]
    return [value]


class Update:
    """A recorded update of a symbolic call: ``variable`` (its TF name) changes when
    the call runs in training. ``run`` is None for updates the layer applies itself
    during the call (the moving averages); a callable from ``add_update`` is run by
    ``Function`` right after the call."""

    def __init__(
        self, layer: Any, variable: str, node: Node | None, run: Callable[[], Any] | None = None
    ) -> None:
        self.layer = layer
        self.variable = variable
        self.node = node
        self.run = run

    @property
    def conditional(self) -> bool:
        return self.node is not None

    def __repr__(self) -> str:
        where = f"node {self.node.index}" if self.node is not None else "unconditional"
        return f"Update({self.variable!r}, {where})"


class Loss:
    """A recorded loss: ``value()`` computes it (regularization penalties afresh; an
    activity loss from the latest run of its node). ``node`` None means unconditional."""

    def __init__(self, layer: Any, kind: str, node: Node | None, fn: Callable[[], Any]) -> None:
        self.layer = layer
        self.kind = kind
        self.node = node
        self._fn = fn

    def value(self) -> torch.Tensor:
        return self._fn()

    @property
    def conditional(self) -> bool:
        return self.node is not None

    def __repr__(self) -> str:
        return f"Loss({self.kind!r}, layer={self.layer.name!r})"


class Node:
    """One symbolic call: the layer, its symbolic inputs and outputs, the other call
    arguments, and the updates and losses the call records."""

    def __init__(self, layer: Any, inputs: Any, outputs: Any, args: tuple, kwargs: dict) -> None:
        self.layer = layer
        self.inputs = inputs
        self.outputs = outputs
        self.args = args
        self.kwargs = kwargs
        self.index = len(layer._inbound_nodes)
        self.order = 0  # position in its graph's recording order
        self.updates: list[Update] = []
        self.losses: list[Loss] = []

    @property
    def input_shapes(self) -> Any:
        return _shapes(self.inputs)

    @property
    def output_shapes(self) -> Any:
        return _shapes(self.outputs)

    def __repr__(self) -> str:
        return f"Node({self.layer.name!r}, index={self.index})"


def _shapes(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_shapes(v) for v in value]
    return value.shape


def call_symbolic(layer: Any, inputs: Any, args: tuple, kwargs: dict) -> Any:
    """``layer(inputs, …)`` on symbolic tensors: build, infer the output, record a node."""
    tensors = flatten(inputs)
    graph = tensors[0].graph
    if any(t.graph is not graph for t in tensors):
        raise ValueError(f"Layer {layer.name}: all inputs must come from the same Graph.")
    if "mask" not in kwargs and layer._accepts("mask") and tensors[0]._keras_mask is not None:
        kwargs["mask"] = tensors[0]._keras_mask
    if not layer.built:
        layer._build_symbolic(inputs, graph)
    out_shape = layer.compute_output_shape(_shapes(inputs))
    dtype = layer._output_dtype(tensors[0].dtype)
    outputs = SymbolicTensor(
        out_shape, dtype, graph, f"{layer.name}/output_{len(layer._inbound_nodes)}"
    )
    node = Node(layer, inputs, outputs, args, kwargs)
    outputs.node = node
    outputs._keras_mask = kwargs.get("mask")
    node.order = len(graph.nodes)
    layer._inbound_nodes.append(node)
    graph.nodes.append(node)
    training = kwargs.get("training", args[0] if args else None)
    node.updates.extend(layer._symbolic_updates(node, training))
    for update in node.updates:
        graph.add_to_collection("update_ops", update)
    if layer.activity_regularizer is not None:
        node.losses.append(Loss(layer, "activity", node, lambda: layer._latest_activity_loss()))
    return outputs


def _accepts(fn: Callable[..., Any], name: str) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def probe_shape(fn: Callable[[torch.Tensor], Any], shape: Sequence[int | None], dtype: Any) -> Any:
    """Output shape of ``fn`` by running it on zeros twice, unknown sizes set to 2 then
    3: output sizes that change are unknown (None)."""
    outs = []
    for fill in (2, 3):
        x = torch.zeros([fill if d is None else d for d in shape], dtype=dtype)
        with torch.no_grad():
            outs.append(tuple(fn(x).shape))
    a, b = outs
    if len(a) != len(b):
        raise ValueError(f"Could not infer a consistent output rank from input shape {shape}.")
    return tuple(x if x == y else None for x, y in zip(a, b, strict=True))
