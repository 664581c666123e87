"""A ResNet-style model (submodules as attributes, a residual addition) built from
batchnorm layers or torch.nn's, and its float64 reference written with plain torch
operations, for the tracing and folding tests."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parameter import is_lazy

import batchnorm

MOMENTUM, EPS = 0.5, 1e-3
# each batch-norm layer and the module before it
PAIRS = {
    "bn1": "conv1",
    "block1.bn1": "block1.conv1",
    "block1.bn2": "block1.conv2",
    "block2.bn1": "block2.conv1",
    "block2.bn2": "block2.conv2",
    "bn_fc": "fc",
}


def ours(channels: int) -> nn.Module:
    """Our layer on axis 1 (the channels of a Conv's and of a 2-D Linear's output)."""
    del channels
    return batchnorm.BatchNormalization(
        axis=1, momentum=MOMENTUM, epsilon=EPS, unbiased_moving_variance=True
    )


def torch_bn(channels: int, dims: int = 2) -> nn.Module:
    """torch.nn's equivalent of ``ours`` (momentum 1 − 0.5)."""
    cls = nn.BatchNorm2d if dims == 2 else nn.BatchNorm1d
    return cls(channels, eps=EPS, momentum=1 - MOMENTUM)


class Block(nn.Module):
    """conv1 → bn1 → relu → conv2 → bn2, plus the input, → relu."""

    def __init__(self, channels: int, make_bn: Callable[[int], nn.Module]) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = make_bn(channels)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.bn2 = make_bn(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + x)


class ResNetStyle(nn.Module):
    """conv1/bn1/relu, two residual blocks, global average pooling, fc/bn_fc."""

    def __init__(self, make_bn: Callable[..., nn.Module] = ours) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.bn1 = make_bn(4)
        self.relu = nn.ReLU()
        self.block1 = Block(4, make_bn)
        self.block2 = Block(4, make_bn)
        self.fc = nn.Linear(4, 5)
        self.bn_fc = make_bn(5) if make_bn is ours else torch_bn(5, dims=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.block2(self.block1(x))
        return self.bn_fc(self.fc(x.mean((2, 3))))


def randomized(model: nn.Module, seed: int = 0) -> nn.Module:
    """``model`` with moving statistics from three training steps and random gamma/beta,
    in eval mode."""
    g = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(3):
        model(torch.randn(8, 3, 6, 6, generator=g) * 2 + 1)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, batchnorm.BatchNormalization):
                module.gamma.copy_(0.5 + torch.rand(module.gamma.shape, generator=g))
                module.beta.copy_(torch.randn(module.beta.shape, generator=g))
    return model.eval()


class Reference:
    """``ResNetStyle``'s forward in float64 with plain torch operations, from a snapshot
    of the model's weights and moving statistics (a layer's initial values while its
    variables are placeholders); training steps update the snapshot's statistics with
    TensorFlow's rule and the unbiased batch variance."""

    def __init__(self, model: nn.Module) -> None:
        self.params = {
            name: p.detach().double().clone()
            for name, p in model.named_parameters()
            if not is_lazy(p)
        }
        self.stats: dict[str, list[torch.Tensor]] = {}
        self.affine: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        for name, before in PAIRS.items():
            layer = model.get_submodule(name)
            channels = model.get_submodule(before).weight.shape[0]
            if is_lazy(layer.moving_mean):  # the initializers' values
                one = torch.ones(channels, dtype=torch.float64)
                self.stats[name] = [torch.zeros_like(one), one.clone()]
                self.affine[name] = (one.clone(), torch.zeros_like(one))
            else:
                self.stats[name] = [
                    layer.moving_mean.detach().double().clone(),
                    layer.moving_variance.detach().double().clone(),
                ]
                self.affine[name] = (
                    layer.gamma.detach().double().clone(),
                    layer.beta.detach().double().clone(),
                )

    def _conv(self, name: str, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.params[f"{name}.weight"], self.params.get(f"{name}.bias"), 1, 1)

    def _bn(self, name: str, z: torch.Tensor, training: bool) -> torch.Tensor:
        dims = [d for d in range(z.dim()) if d != 1]
        view = [1, -1] + [1] * (z.dim() - 2)
        if training:
            mean, var = z.mean(dims), z.var(dims, unbiased=False)
            n = z.numel() // z.shape[1]
            moving = self.stats[name]
            moving[0] = moving[0] * MOMENTUM + mean * (1 - MOMENTUM)
            moving[1] = moving[1] * MOMENTUM + var * n / (n - 1) * (1 - MOMENTUM)
        else:
            mean, var = self.stats[name]
        gamma, beta = self.affine[name]
        scale = gamma / torch.sqrt(var + EPS)
        return (z - mean.reshape(view)) * scale.reshape(view) + beta.reshape(view)

    def __call__(self, x: torch.Tensor, training: bool) -> torch.Tensor:
        x = torch.relu(self._bn("bn1", self._conv("conv1", x.double()), training))
        for block in ("block1", "block2"):
            out = torch.relu(self._bn(f"{block}.bn1", self._conv(f"{block}.conv1", x), training))
            out = self._bn(f"{block}.bn2", self._conv(f"{block}.conv2", out), training)
            x = torch.relu(out + x)
        z = F.linear(x.mean((2, 3)), self.params["fc.weight"], self.params["fc.bias"])
        return self._bn("bn_fc", z, training)
