"""A whole training step (``python -m batchnorm bench --model``): a ResNet-18-shaped CNN
with ``nn.BatchNorm2d`` against the same model after ``batchnorm.from_torch``.

The network is written here (no torchvision): a 7×7 stride-2 stem, max pooling, four
stages of two basic blocks (64, 128, 256, 512 channels; 20 batch norms in all), global
average pooling and a 1000-way linear layer. A step is forward, cross-entropy, backward
and an SGD update, on channels-last input, in float32 and under bfloat16 autocast.
Times are medians over interleaved rounds (CUDA events on a GPU); a ratio is the median
of one round's ours ÷ PyTorch's.
"""

from __future__ import annotations

import copy
import statistics
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from .bench import _timed
from .interop.torch_nn import from_torch


class _Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return torch.relu(y + (x if self.down is None else self.down(x)))


def resnet18(classes: int = 1000) -> nn.Module:
    """A ResNet-18-shaped CNN with ``nn.BatchNorm2d`` (20 of them)."""
    layers: list[nn.Module] = [
        nn.Conv2d(3, 64, 7, 2, 3, bias=False),
        nn.BatchNorm2d(64),
        nn.ReLU(),
        nn.MaxPool2d(3, 2, 1),
    ]
    cin = 64
    for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        layers += [_Block(cin, cout, stride), _Block(cout, cout, 1)]
        cin = cout
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, classes)]
    return nn.Sequential(*layers)


def _step(model: nn.Module, x: torch.Tensor, labels: torch.Tensor, autocast: bool) -> Callable:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()

    def run() -> Any:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=autocast):
            loss = loss_fn(model(x), labels)
        loss.backward()
        optimizer.step()

    return run


def model_rows(
    device: str = "cuda",
    batch: int = 128,
    size: int = 224,
    rounds: int = 5,
    calls: int = 5,
    compiled: bool = False,
) -> list[str]:
    """Table rows ``| precision | nn.BatchNorm2d ms | ours ms | ours ÷ torch |`` of a
    training step of ``resnet18`` on ``batch`` channels-last images of ``size``²."""
    dev = torch.device(device)
    events = dev.type == "cuda"
    sync = torch.cuda.synchronize if events else (lambda: None)
    torch.manual_seed(0)
    base = resnet18().to(dev).to(memory_format=torch.channels_last)
    x = torch.randn(batch, 3, size, size, device=dev).contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, 1000, (batch,), device=dev)
    rows = []
    for precision, autocast in (("float32", False), ("bfloat16 autocast", True)):
        models = {"torch": copy.deepcopy(base), "ours": from_torch(copy.deepcopy(base))}
        if compiled:
            models = {k: torch.compile(m) for k, m in models.items()}
        steps = {k: _step(m, x, labels, autocast) for k, m in models.items()}
        for fn in steps.values():  # warm up (and compile)
            fn()
            fn()
        times: dict[str, list[float]] = {k: [] for k in steps}
        for round_ in range(rounds):
            order = list(steps) if round_ % 2 == 0 else list(steps)[::-1]
            for name in order:
                times[name].append(_timed(steps[name], calls, sync, events))
        ratio = statistics.median(o / t for o, t in zip(times["ours"], times["torch"], strict=True))
        torch_ms, ours_ms = (statistics.median(times[k]) for k in ("torch", "ours"))
        label = precision + (", torch.compile" if compiled else "")
        rows.append(f"| {label} | {torch_ms:.2f} | {ours_ms:.2f} | {ratio:.2f}× |")
    return rows
