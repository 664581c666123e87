"""Small helpers shared by the tests."""

from __future__ import annotations

import torch
from torch import nn


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
