"""The ``demo``'s data, model, normalization variants and training loop.

scikit-learn's bundled digits (no download), an MLP with three hidden ReLU layers,
and four choices of normalization after each hidden linear layer: plain batch norm,
batch renormalization, ghost batches and none. Every run is one variant at one
learning rate and one seed, trained with SGD and evaluated in inference mode (the
moving statistics) after every epoch.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ._demo_config import HIDDEN, SGD_MOMENTUM, DemoConfig
from .normalization import BatchNormalization

DEMO_EXTRA = "pip install 'batchnorm[demo]'"

Data = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def demo_modules() -> dict[str, Any]:
    """Import the demo's optional dependencies; exit naming the extra if any is missing."""
    modules: dict[str, Any] = {}
    missing: list[str] = []
    for key, module, package in (
        ("datasets", "sklearn.datasets", "scikit-learn"),
        ("model_selection", "sklearn.model_selection", "scikit-learn"),
        ("tqdm", "tqdm", "tqdm"),
        ("figure", "matplotlib.figure", "matplotlib"),
        ("agg", "matplotlib.backends.backend_agg", "matplotlib"),
    ):
        try:
            modules[key] = importlib.import_module(module)
        except ImportError:
            if package not in missing:
                missing.append(package)
    if missing:
        raise SystemExit(
            f"batchnorm demo needs scikit-learn, tqdm and matplotlib (missing: "
            f"{', '.join(missing)}). Install them with: {DEMO_EXTRA}"
        )
    return modules


def load_digits_split(seed: int = 0, modules: dict[str, Any] | None = None) -> Data:
    """scikit-learn's bundled digits (1797 images of 8×8 pixels, no download), split
    75/25 stratified with ``random_state=seed``; pixels scaled to [0, 1].

    Returns ``(x_train, x_test, y_train, y_test)``: float32 ``(N, 64)`` inputs and
    int64 labels in 0..9 (1347 training and 450 test images).
    """
    modules = modules or demo_modules()
    data = modules["datasets"].load_digits()
    x_train, x_test, y_train, y_test = modules["model_selection"].train_test_split(
        data.data, data.target, test_size=0.25, random_state=seed, stratify=data.target
    )

    def to_x(a: Any) -> torch.Tensor:
        return torch.tensor(a, dtype=torch.float32) / 16.0

    def to_y(a: Any) -> torch.Tensor:
        return torch.tensor(a, dtype=torch.long)

    return to_x(x_train), to_x(x_test), to_y(y_train), to_y(y_test)


def make_mlp(
    norm: Callable[[int], nn.Module] | None = None,
    features: int = 64,
    hidden: Sequence[int] = HIDDEN,
    classes: int = 10,
) -> nn.Sequential:
    """Linear → norm → ReLU for each width in ``hidden``, then a linear classifier;
    PyTorch's default initialization.

    ``norm(channels)`` builds each normalization layer; the default is
    ``BatchNormalization(momentum=0.9)``. The normalization layers draw no random
    numbers, so after the same ``torch.manual_seed`` every ``norm`` gets the same
    linear weights.
    """
    if norm is None:

        def norm(_: int) -> nn.Module:
            return BatchNormalization(momentum=0.9)

    layers: list[nn.Module] = []
    width = features
    for units in hidden:
        layers += [nn.Linear(width, units), norm(units), nn.ReLU()]
        width = units
    layers.append(nn.Linear(width, classes))
    return nn.Sequential(*layers)


@dataclass(frozen=True)
class Variant:
    """One normalization choice of the demo: a short name, the layer as text, and
    ``norm(channels)`` building it."""

    name: str
    layer: str
    norm: Callable[[int], nn.Module]


def demo_variants(config: DemoConfig) -> list[Variant]:
    """Plain batch norm, batch renormalization, ghost batches and no normalization.

    Batch renormalization (Ioffe, 2017) trains with
    ``y = ((x − μ_B)/σ_B · r + d)·γ + β`` where
    ``r = clip(σ_B/σ, rmin, rmax)`` and ``d = clip((μ_B − μ)/σ, −dmax, dmax)`` use
    moving averages ``μ, σ`` and carry no gradient; ghost batches normalize each
    group of ``virtual_batch_size`` examples with its own statistics.
    """
    m, rm, vbs = config.momentum, config.renorm_momentum, config.virtual_batch_size
    clip = config.renorm_clipping
    clip_text = ", ".join(f"{k}={v:.3g}" for k, v in clip.items())
    return [
        Variant(
            "batchnorm",
            f"BatchNormalization(momentum={m})",
            lambda _: BatchNormalization(momentum=m),
        ),
        Variant(
            "renorm",
            f"BatchNormalization(renorm=True, {clip_text})",
            lambda _: BatchNormalization(
                momentum=m, renorm=True, renorm_clipping=dict(clip), renorm_momentum=rm
            ),
        ),
        Variant(
            "ghost",
            f"BatchNormalization(virtual_batch_size={vbs})",
            lambda _: BatchNormalization(momentum=m, virtual_batch_size=vbs),
        ),
        Variant("none", "nn.Identity()", lambda _: nn.Identity()),
    ]


@dataclass
class History:
    """Per-epoch curves of one run (one variant, learning rate and seed): mean training
    loss, test accuracy, and the seconds each epoch's training steps took (evaluation
    excluded)."""

    name: str
    layer: str
    lr: float
    seed: int
    train_loss: list[float] = field(default_factory=list)
    test_accuracy: list[float] = field(default_factory=list)
    epoch_seconds: list[float] = field(default_factory=list)

    @property
    def final_accuracy(self) -> float:
        """Test accuracy after the last epoch."""
        return self.test_accuracy[-1]

    @property
    def mean_epoch_seconds(self) -> float:
        """Mean seconds of training per epoch."""
        return sum(self.epoch_seconds) / len(self.epoch_seconds)


def train_run(variant: Variant, data: Data, config: DemoConfig, lr: float, seed: int) -> History:
    """Train ``make_mlp(variant.norm, hidden=config.hidden)`` with SGD (momentum
    ``SGD_MOMENTUM``, rate ``lr``) and cross-entropy; evaluate on the test set in
    inference mode (moving statistics) after every epoch.

    The weights come from ``torch.manual_seed(seed)`` and the batch order from a
    generator with the same seed, so at one seed every variant and rate starts from
    the same weights and sees the same batches. Each epoch uses ``config.steps``
    full batches: the last incomplete batch is dropped, so every batch splits into
    whole ghost batches. A loss that is no longer finite is recorded as it is and
    the run goes on (its accuracy shows what is left).
    """
    x_train, x_test, y_train, y_test = data
    torch.manual_seed(seed)
    model = make_mlp(variant.norm, hidden=config.hidden)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=SGD_MOMENTUM)
    loss_fn = nn.CrossEntropyLoss()
    order_rng = torch.Generator().manual_seed(seed)
    size = config.batch_size
    history = History(variant.name, variant.layer, lr, seed)
    for _ in range(config.epochs):
        model.train()
        order = torch.randperm(len(x_train), generator=order_rng)
        loss_sum = 0.0
        start = time.perf_counter()
        for step in range(config.steps):
            idx = order[step * size : (step + 1) * size]
            loss = loss_fn(model(x_train[idx]), y_train[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            loss_sum += loss.item()
        history.epoch_seconds.append(time.perf_counter() - start)
        model.eval()
        with torch.no_grad():
            accuracy = (model(x_test).argmax(1) == y_test).float().mean().item()
        history.train_loss.append(loss_sum / config.steps)
        history.test_accuracy.append(accuracy)
    return history
