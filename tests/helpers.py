"""Small helpers shared by the tests."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

import reference
from batchnorm import BatchNormalization

CLIP = {"rmin": 0.9, "rmax": 1.1, "dmax": 0.05}  # renorm clipping of the step tests
CPP_NAME = "BatchNormTrainBackward"  # the C++ training node's name (grad_fn.name())


def snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    """Copies of every parameter and buffer."""
    tensors = {**dict(module.named_parameters()), **dict(module.named_buffers())}
    return {name: t.detach().clone() for name, t in tensors.items()}


def assert_unchanged(module: nn.Module, before: dict[str, torch.Tensor]) -> None:
    """Every parameter and buffer is bit-identical to ``before``."""
    after = snapshot(module)
    assert after.keys() == before.keys()
    for name, value in before.items():
        assert torch.equal(after[name], value), name


def weighted_layer(
    shape: tuple[int, ...], rng: np.random.Generator, device: str = "cpu", **config: Any
) -> BatchNormalization:
    """A layer (momentum 0.5) built on ``device`` for inputs of ``shape``, its weights
    drawn uniformly from [0.5, 1.5)."""
    layer = BatchNormalization(momentum=0.5, **config)
    layer(torch.zeros((2, *shape[1:]), device=device), training=False)
    layer.set_weights([rng.uniform(0.5, 1.5, w.shape) for w in layer.weights])
    return layer


def step_options(layer: BatchNormalization, config: dict[str, Any]) -> reference.Options:
    """The float64 reference's options for a training step of ``weighted_layer``."""
    return reference.Options(
        momentum=0.5,
        bessel=layer._bessel,
        renorm=layer.renorm,
        clipping=CLIP,
        virtual_batch_size=config.get("virtual_batch_size"),
    )


def step_against_reference(x, dy, config, rng):
    """One training step (forward and backward) of a layer with momentum 0.5, ``config``
    (renorm and its clipping included) and random γ/β, and the float64 reference step
    from the same state; returns the layer, its output, that state and
    ``reference.train_step``'s results."""
    layer = BatchNormalization(momentum=0.5, **config)
    layer(x.detach()[:2], training=False)
    layer.set_weights([rng.uniform(0.5, 1.5, w.shape) for w in layer.weights])
    state = reference.state_of(layer)
    y = layer(x, training=True)
    y.backward(dy)
    options = reference.Options(
        momentum=0.5,
        epsilon=1e-3,
        bessel=layer._bessel,
        renorm=bool(config.get("renorm")),
        clipping=config.get("renorm_clipping") or {},
        virtual_batch_size=config.get("virtual_batch_size"),
    )
    ref = reference.train_step(
        x.detach().double().numpy(), dy.double().numpy(), layer.axis, state, options
    )
    return layer, y, state, ref
