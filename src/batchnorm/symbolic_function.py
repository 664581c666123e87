"""``Function``: a recorded symbolic graph (``batchnorm.symbolic``) run on real tensors,
each node once, in recording order, as an ``nn.Module``."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ._utils import to_snake_case
from .symbolic import Node, SymbolicTensor, Update, flatten

__all__ = ["Function"]


class Function(nn.Module):
    """Runs a recorded symbolic graph on real tensors: ``Function(inputs, outputs)``.

    ``forward(*tensors, training=None)`` feeds the real tensors to the ``Input``s
    and runs every node between inputs and outputs once, in recording order;
    ``training=None`` follows this module's ``train()``/``eval()`` flag. Layers
    update their moving statistics in place as they run; ``add_update``
    callables recorded for a node run after it in training. The layers are
    submodules, so ``parameters()``, optimizers, ``state_dict`` and ``.to()`` work.
    """

    def __init__(self, inputs: Any, outputs: Any, name: str | None = None) -> None:
        super().__init__()
        self._inputs = inputs
        self._outputs = outputs
        self._input_list = flatten(inputs)
        self.name = name or to_snake_case(type(self).__name__)
        known = {id(t) for t in self._input_list}
        self._nodes: list[Node] = []
        seen: set[int] = set()

        def visit(tensor: SymbolicTensor) -> None:
            if id(tensor) in known:
                return
            node = tensor.node
            if node is None:
                raise ValueError(
                    f"Graph disconnected: {tensor.name} is needed for the outputs but is not "
                    f"among this Function's inputs {[t.name for t in self._input_list]}."
                )
            if id(node) in seen:
                return
            seen.add(id(node))
            for t in flatten(node.inputs) + [
                v
                for v in flatten(list(node.args) + list(node.kwargs.values()))
                if isinstance(v, SymbolicTensor)
            ]:
                visit(t)
            self._nodes.append(node)

        for t in flatten(outputs):
            visit(t)
        self._nodes.sort(key=lambda n: n.order)
        layers: list[nn.Module] = []
        for node in self._nodes:
            if not any(node.layer is m for m in layers):
                layers.append(node.layer)
        self.layers = nn.ModuleList(layers)

    @property
    def nodes(self) -> list[Node]:
        return list(self._nodes)

    def forward(self, *tensors: Any, training: Any = None) -> Any:
        if (
            len(tensors) == 1
            and isinstance(tensors[0], (list, tuple))
            and len(self._input_list) > 1
        ):
            tensors = tuple(tensors[0])
        if len(tensors) != len(self._input_list):
            raise ValueError(
                f"{self.name} expects {len(self._input_list)} input(s) "
                f"({[t.name for t in self._input_list]}); received {len(tensors)}."
            )
        if training is None:
            training = self.training
        values = {id(s): t for s, t in zip(self._input_list, tensors, strict=True)}

        def resolve(value: Any) -> Any:
            if isinstance(value, SymbolicTensor):
                return values[id(value)]
            if isinstance(value, list):
                return [resolve(v) for v in value]
            if isinstance(value, tuple):
                return tuple(resolve(v) for v in value)
            return value

        for node in self._nodes:
            kwargs = {k: resolve(v) for k, v in node.kwargs.items()}
            if node.layer._accepts("training") and kwargs.get("training") is None:
                kwargs["training"] = training
            out = node.layer(resolve(node.inputs), *resolve(node.args), **kwargs)
            for sym, real in zip(flatten(node.outputs), flatten(out), strict=True):
                values[id(sym)] = real
            if training and node.layer.trainable:
                for update in node.updates:
                    if update.run is not None:
                        update.run()
        return resolve(self._outputs)

    @property
    def losses(self) -> list[torch.Tensor]:
        """Every layer's losses (regularization afresh, activity from the latest run)."""
        return [loss for layer in self.layers if hasattr(layer, "losses") for loss in layer.losses]

    @property
    def updates(self) -> list[Update]:
        return [u for node in self._nodes for u in node.updates]
