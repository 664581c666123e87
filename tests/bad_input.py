"""What the bad-input tests share: sample inputs, a trained layer, the check that a layer
is still unbuilt, and user callables that can be made to fail. Each bad-input test checks
the exception type, that the message names the argument (or input) and what was
expected, and that a failing call leaves the layer exactly as it was (every weight and
buffer bit-identical, or still unbuilt when the call was the first one)."""

from __future__ import annotations

import pytest
import torch
from torch.nn.parameter import UninitializedBuffer, UninitializedParameter

from batchnorm import BatchNormalization

param = pytest.param
NAN = float("nan")
X = torch.randn(8, 3, generator=torch.Generator().manual_seed(1)) * 2 + 1
NAN_X = X.clone().index_fill_(0, torch.tensor([2]), NAN)


def trained(**kwargs):
    """A layer built and trained for one step, so its statistics are not the initial ones."""
    kwargs.setdefault("momentum", 0.5)
    layer = BatchNormalization(**kwargs)
    layer(torch.randn(8, 3) * 3 - 2, training=True)
    assert not torch.equal(layer.moving_mean, torch.zeros(3))
    return layer


def assert_unbuilt(layer):
    """Unbuilt, as PyTorch's lazy modules: no weights, and every parameter and buffer an
    uninitialized placeholder (gamma, beta, the moving statistics)."""
    assert not layer.built
    assert layer.weights == []
    params, buffers = dict(layer.named_parameters()), dict(layer.named_buffers())
    assert all(isinstance(p, UninitializedParameter) for p in params.values()), params
    assert all(isinstance(b, UninitializedBuffer) for b in buffers.values()), buffers
    assert set(buffers) >= {"moving_mean", "moving_variance"}


class Flaky:
    """A user callable that behaves until ``broken`` is set, then raises."""

    def __init__(self, good):
        self.good = good
        self.broken = False

    def __call__(self, *args, **kwargs):
        if self.broken:
            raise RuntimeError("user bug")
        return self.good(*args, **kwargs)


def ones_adjustment(shape):
    return torch.ones(shape[-1]), torch.zeros(shape[-1])
