"""The ``demo`` command: one small MLP on scikit-learn's bundled digits, trained four
times from the same start — plain batch normalization, batch renormalization, ghost
batches and no normalization — with a comparison table and a plot of the curves
(needs the ``[demo]`` extra: scikit-learn, matplotlib, tqdm)."""

from __future__ import annotations

import importlib
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import _native
from .normalization import BatchNormalization

DEMO_EXTRA = "pip install 'batchnorm[demo]'"
DEFAULT_PLOT_NAME = "batchnorm-demo.png"
RENORM_CLIPPING: dict[str, float] = {"rmax": 3.0, "rmin": 1.0 / 3.0, "dmax": 5.0}

SMALL_BATCH_NOTE = (
    "--small-batch: batches of 4 give noisy batch statistics, so plain batch norm trains on a "
    "normalization that its test-time moving averages do not match; batch renormalization "
    "corrects each batch towards the moving averages and learns faster here (digits, seeds "
    "0-7: +1.3 points of test accuracy on average after 5 epochs, ahead on every seed; +0.5 "
    "after 10). Ghost batches of 2 normalize every feature to about +/-1 and do worst."
)


# ---------------------------------------------------------------------------- data and model


def _demo_modules() -> dict[str, Any]:
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


def load_digits_split(
    seed: int = 0, modules: dict[str, Any] | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """scikit-learn's bundled digits (1797 images of 8×8 pixels, no download), split
    75/25 stratified with ``random_state=seed``; pixels scaled to [0, 1].

    Returns ``(x_train, x_test, y_train, y_test)``: float32 ``(N, 64)`` inputs and
    int64 labels in 0..9 (1347 training and 450 test images).
    """
    modules = modules or _demo_modules()
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
    hidden: int = 128,
    classes: int = 10,
) -> nn.Sequential:
    """Linear → norm → ReLU, twice (``hidden`` then ``hidden // 2`` units), then a
    linear classifier.

    ``norm(channels)`` builds each normalization layer; the default is
    ``BatchNormalization(momentum=0.9)``. The normalization layers draw no random
    numbers, so after the same ``torch.manual_seed`` every ``norm`` gets the same
    linear weights.
    """
    if norm is None:

        def norm(_: int) -> nn.Module:
            return BatchNormalization(momentum=0.9)

    return nn.Sequential(
        nn.Linear(features, hidden),
        norm(hidden),
        nn.ReLU(),
        nn.Linear(hidden, hidden // 2),
        norm(hidden // 2),
        nn.ReLU(),
        nn.Linear(hidden // 2, classes),
    )


# ---------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class DemoConfig:
    """Settings of one demo run.

    ``momentum`` is TensorFlow's decay of the moving statistics
    (``moving ← moving·momentum + batch·(1 − momentum)``); ``renorm_momentum`` the
    same for the renormalization statistics. Optimizer: Adam with rate ``lr``.
    """

    epochs: int = 10
    batch_size: int = 64
    virtual_batch_size: int = 16
    lr: float = 1e-2
    momentum: float = 0.9
    renorm_momentum: float = 0.9
    renorm_clipping: dict[str, float] = field(default_factory=lambda: dict(RENORM_CLIPPING))
    seed: int = 0
    small_batch: bool = False


def default_virtual_batch_size(batch_size: int) -> int:
    """The smallest divisor of ``batch_size`` that is at least ``max(2, batch_size // 4)``
    (16 for batches of 64, 2 for batches of 4; a prime batch size gives itself)."""
    for size in range(max(2, batch_size // 4), batch_size + 1):
        if batch_size % size == 0:
            return size
    return batch_size


def make_config(
    epochs: int | None = None,
    batch_size: int | None = None,
    virtual_batch_size: int | None = None,
    lr: float | None = None,
    seed: int = 0,
    small_batch: bool = False,
) -> DemoConfig:
    """The demo's settings: 10 epochs of batches of 64 (ghost batches of 16), Adam at
    1e-2 and momentum 0.9 by default; with ``small_batch``, 5 epochs of batches of 4
    (ghost batches of 2), Adam at 1e-3 and TensorFlow's momentum 0.99 (336 steps an
    epoch). Explicit arguments override these.

    Raises ValueError for an epoch count below 1, a batch size below 2 or above the
    1347 training images, or a ghost batch size below 2 that does not divide the batch.
    """
    if epochs is None:
        epochs = 5 if small_batch else 10
    if epochs < 1:
        raise ValueError(f"--epochs must be >= 1; received {epochs}")
    if batch_size is None:
        batch_size = 4 if small_batch else 64
    if not 2 <= batch_size <= 1347:
        raise ValueError(
            f"--batch-size must be between 2 and 1347 (the training images); received {batch_size}"
        )
    if virtual_batch_size is None:
        virtual_batch_size = default_virtual_batch_size(batch_size)
    if virtual_batch_size < 2 or batch_size % virtual_batch_size:
        raise ValueError(
            f"--virtual-batch-size must be >= 2 and divide --batch-size {batch_size}; "
            f"received {virtual_batch_size}"
        )
    if lr is None:
        lr = 1e-3 if small_batch else 1e-2
    if not lr > 0:
        raise ValueError(f"--lr must be > 0; received {lr}")
    momentum = 0.99 if small_batch else 0.9
    return DemoConfig(
        epochs=epochs,
        batch_size=batch_size,
        virtual_batch_size=virtual_batch_size,
        lr=lr,
        momentum=momentum,
        renorm_momentum=momentum,
        seed=seed,
        small_batch=small_batch,
    )


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


# ---------------------------------------------------------------------------- training


@dataclass
class History:
    """Per-epoch curves of one variant: mean training loss, test accuracy, and the
    seconds each epoch's training steps took (evaluation excluded)."""

    name: str
    layer: str
    train_loss: list[float] = field(default_factory=list)
    test_accuracy: list[float] = field(default_factory=list)
    epoch_seconds: list[float] = field(default_factory=list)

    @property
    def final_accuracy(self) -> float:
        return self.test_accuracy[-1]

    @property
    def best_accuracy(self) -> float:
        return max(self.test_accuracy)

    @property
    def best_epoch(self) -> int:
        return self.test_accuracy.index(self.best_accuracy) + 1

    @property
    def mean_epoch_seconds(self) -> float:
        return sum(self.epoch_seconds) / len(self.epoch_seconds)


def train_variant(
    variant: Variant,
    data: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor],
    config: DemoConfig,
    progress: Callable[..., Any] | None = None,
) -> History:
    """Train ``make_mlp(variant.norm)`` with Adam and cross-entropy; evaluate on the
    test set in inference mode (moving statistics) after every epoch.

    The weights come from ``torch.manual_seed(config.seed)`` and the batch order
    from a generator with the same seed, so every variant starts from the same
    weights and sees the same batches. Each epoch uses ``len(x_train) //
    batch_size`` full batches: the last incomplete batch is dropped, so every
    batch splits into whole ghost batches. ``progress`` is a tqdm-like factory
    (an iterable over epochs with ``set_postfix``); None shows none.
    """
    x_train, x_test, y_train, y_test = data
    torch.manual_seed(config.seed)
    model = make_mlp(variant.norm)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    loss_fn = nn.CrossEntropyLoss()
    order_rng = torch.Generator().manual_seed(config.seed)
    steps = len(x_train) // config.batch_size
    history = History(variant.name, variant.layer)
    epochs: Any = range(1, config.epochs + 1)
    if progress is not None:
        epochs = progress(epochs, desc=f"{variant.name:>9}", unit="epoch")
    for _ in epochs:
        model.train()
        order = torch.randperm(len(x_train), generator=order_rng)
        loss_sum = 0.0
        start = time.perf_counter()
        for step in range(steps):
            idx = order[step * config.batch_size : (step + 1) * config.batch_size]
            loss = loss_fn(model(x_train[idx]), y_train[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            loss_sum += loss.item()
        history.epoch_seconds.append(time.perf_counter() - start)
        model.eval()
        with torch.no_grad():
            accuracy = (model(x_test).argmax(1) == y_test).float().mean().item()
        history.train_loss.append(loss_sum / steps)
        history.test_accuracy.append(accuracy)
        if progress is not None:
            epochs.set_postfix(loss=f"{loss_sum / steps:.3f}", test_acc=f"{accuracy:.3f}")
    return history


# ---------------------------------------------------------------------------- reporting


def format_table(histories: Sequence[History]) -> str:
    """One row per variant: final and best test accuracy (epoch of the best), mean
    seconds of training per epoch, and the layer."""
    lines = [f"{'variant':<10} {'final acc':>9} {'best acc (epoch)':>16} {'s/epoch':>8}  layer"]
    for h in histories:
        best = f"{h.best_accuracy:.3f} ({h.best_epoch})"
        lines.append(
            f"{h.name:<10} {h.final_accuracy:>9.3f} {best:>16} {h.mean_epoch_seconds:>8.3f}  "
            f"{h.layer}"
        )
    return "\n".join(lines)


def resolve_plot_path(out: str | Path | None) -> Path:
    """Where the plot goes: ``./batchnorm-demo.png`` when ``out`` is None; inside
    ``out`` when it is an existing directory or has no suffix (created if needed);
    ``out`` itself when it ends in ``.png``. Any other suffix is a ValueError."""
    if out is None:
        return Path.cwd() / DEFAULT_PLOT_NAME
    path = Path(out).expanduser()
    if path.is_dir() or not path.suffix:
        return path / DEFAULT_PLOT_NAME
    if path.suffix.lower() != ".png":
        raise ValueError(f"--out must be a directory or a .png file; received {str(out)!r}")
    return path


def plot_histories(
    histories: Sequence[History],
    path: str | Path,
    title: str = "",
    modules: dict[str, Any] | None = None,
) -> Path:
    """Write test accuracy and training loss per epoch of every variant to a PNG,
    drawn with matplotlib's non-interactive Agg canvas (pyplot's global state is
    untouched). Creates the parent directory; returns the path."""
    modules = modules or _demo_modules()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure = modules["figure"].Figure(figsize=(10, 4), layout="constrained")
    modules["agg"].FigureCanvasAgg(figure)
    accuracy_axes, loss_axes = figure.subplots(1, 2)
    for h in histories:
        epochs = range(1, len(h.test_accuracy) + 1)
        accuracy_axes.plot(epochs, h.test_accuracy, marker="o", label=h.name)
        loss_axes.plot(epochs, h.train_loss, marker="o", label=h.name)
    accuracy_axes.set(xlabel="epoch", ylabel="test accuracy", title="test accuracy")
    loss_axes.set(xlabel="epoch", ylabel="mean training loss", title="training loss")
    loss_axes.set_yscale("log")
    for axes in (accuracy_axes, loss_axes):
        axes.grid(alpha=0.3)
        axes.legend()
        axes.xaxis.get_major_locator().set_params(integer=True)
    if title:
        figure.suptitle(title)
    figure.savefig(path, dpi=110)
    return path


# ---------------------------------------------------------------------------- commands


def demo(
    epochs: int | None = None,
    batch_size: int | None = None,
    seed: int = 0,
    out: str | Path | None = None,
    small_batch: bool = False,
    virtual_batch_size: int | None = None,
    lr: float | None = None,
    progress: bool = True,
) -> list[History]:
    """Train the MLP on digits with each of ``demo_variants``, print the
    comparison table and the plot's path; returns the histories.

    Settings as in ``make_config``; the plot goes where
    ``resolve_plot_path`` says. Progress bars (one per variant, over epochs)
    go to stderr. Training runs on one thread (the model is too small to gain from
    more, and a busy machine slows several threads down); the setting is restored.

    With ``small_batch`` the table shows what batch renormalization is for. On
    seeds 0–7, after 5 epochs renorm's final test accuracy was above plain batch
    norm's on every seed (0.980 against 0.967 on average; no normalization 0.958);
    after 10 epochs the gap narrows (0.983 against 0.978, renorm ahead on 7 of 8).
    Ghost batches of 2 reach about 0.90: with two examples, ``(x − μ_B)/σ_B`` is
    ±1 for every feature whose two values differ by much more than √ε.
    """
    config = make_config(epochs, batch_size, virtual_batch_size, lr, seed, small_batch)
    path = resolve_plot_path(out)
    modules = _demo_modules()
    data = load_digits_split(seed, modules)
    _native.library()  # build or load the kernels before anything is timed
    steps = len(data[0]) // config.batch_size
    dropped = len(data[0]) - steps * config.batch_size
    print(
        f"digits: {len(data[0])} train / {len(data[1])} test images, 8x8 pixels, 10 classes; "
        f"MLP 64-128-64-10"
    )
    print(
        f"{config.epochs} epochs of {steps} batches of {config.batch_size} "
        f"({dropped} images left out each epoch), ghost batches of "
        f"{config.virtual_batch_size}, Adam lr={config.lr:g}, momentum={config.momentum}, "
        f"seed {config.seed}"
    )
    if small_batch:
        print(SMALL_BATCH_NOTE)
    bar = None
    if progress:

        def bar(iterable: Any, **kwargs: Any) -> Any:
            return modules["tqdm"].tqdm(
                iterable, file=sys.stderr, leave=False, dynamic_ncols=True, **kwargs
            )

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        histories = [train_variant(v, data, config, bar) for v in demo_variants(config)]
    finally:
        torch.set_num_threads(threads)
    print()
    print(format_table(histories))
    title = (
        f"digits MLP, batch {config.batch_size}, ghost batch {config.virtual_batch_size}, "
        f"lr {config.lr:g}, momentum {config.momentum}, seed {config.seed}"
    )
    written = plot_histories(histories, path, title, modules)
    print(f"\nplot: {written}")
    return histories
