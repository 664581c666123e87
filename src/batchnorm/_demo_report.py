"""The ``demo``'s report: the table of final test accuracy (mean ± standard deviation
over seeds, one column per learning rate, and how many runs beat the baseline run of
the same seed and rate) and the PNG of the curves."""

from __future__ import annotations

import os
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ._demo_train import History, demo_modules

DEFAULT_PLOT_NAME = "batchnorm-demo.png"


def mean_std(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (n − 1); the deviation is None for one value."""
    mean = statistics.fmean(values)
    return mean, (statistics.stdev(values) if len(values) > 1 else None)


def _cell(values: Sequence[float]) -> str:
    mean, std = mean_std(values)
    return f"{mean:.3f}" if std is None else f"{mean:.3f} ± {std:.3f}"


def _by_name(histories: Sequence[History]) -> dict[str, list[History]]:
    groups: dict[str, list[History]] = {}
    for h in histories:
        groups.setdefault(h.name, []).append(h)
    return groups


def wins(runs: Sequence[History], baseline: Sequence[History]) -> tuple[int, int]:
    """How many of ``runs`` end above the ``baseline`` run of the same learning rate and
    seed (strictly), out of how many such pairs."""
    reference = {(h.lr, h.seed): h.final_accuracy for h in baseline}
    pairs = [
        (h.final_accuracy, reference[h.lr, h.seed]) for h in runs if (h.lr, h.seed) in reference
    ]
    return sum(ours > theirs for ours, theirs in pairs), len(pairs)


def format_table(histories: Sequence[History], baseline: str = "none") -> str:
    """One row per variant, in the order of ``histories``: the final test accuracy at
    each learning rate as mean ± std over seeds (the mean alone for one seed), the
    runs that beat the ``baseline`` variant's run of the same rate and seed, mean
    seconds of training per epoch, and the layer."""
    lrs = sorted({h.lr for h in histories})
    groups = _by_name(histories)
    cells = {
        name: [_cell([h.final_accuracy for h in runs if h.lr == lr]) for lr in lrs]
        for name, runs in groups.items()
    }
    width = max(9, *(len(cell) for row in cells.values() for cell in row))
    beats = f"beats {baseline}"
    titles = [f"{'variant':<10}", *(f"{f'lr {lr:g}':<{width}}" for lr in lrs)]
    lines = ["  ".join([*titles, beats, f"{'s/epoch':>7}", "layer"])]
    for name, runs in groups.items():
        won, total = wins(runs, groups.get(baseline, []))
        score = "—" if name == baseline or not total else f"{won}/{total}"
        seconds = statistics.fmean(h.mean_epoch_seconds for h in runs)
        row = [f"{name:<10}", *(f"{cell:<{width}}" for cell in cells[name])]
        lines.append("  ".join([*row, f"{score:>{len(beats)}}", f"{seconds:>7.3f}", runs[0].layer]))
    return "\n".join(lines)


def resolve_plot_path(out: str | Path | None) -> Path:
    """Where the plot goes, as an absolute path: ``./batchnorm-demo.png`` when ``out``
    is None; inside ``out`` when it is an existing directory or has no suffix (created
    if needed); ``out`` itself when it ends in ``.png``. Any other suffix is a
    ValueError."""
    if out is None:
        return Path.cwd() / DEFAULT_PLOT_NAME
    path = Path(os.path.abspath(Path(out).expanduser()))
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
    """Write the curves to a PNG, one column per learning rate: test accuracy (top)
    and mean training loss (bottom, log scale) per epoch of every variant, the mean
    over seeds as a line and the range over seeds shaded. Drawn with matplotlib's
    non-interactive Agg canvas (pyplot's global state is untouched). Creates the
    parent directory; returns the path."""
    modules = modules or demo_modules()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lrs = sorted({h.lr for h in histories})
    figure = modules["figure"].Figure(figsize=(1.5 + 3.6 * len(lrs), 6.5), layout="constrained")
    modules["agg"].FigureCanvasAgg(figure)
    axes = figure.subplots(2, len(lrs), squeeze=False, sharex=True)
    for column, lr in enumerate(lrs):
        accuracy_axes, loss_axes = axes[0][column], axes[1][column]
        for name, runs in _by_name([h for h in histories if h.lr == lr]).items():
            for row_axes, curve in ((accuracy_axes, "test_accuracy"), (loss_axes, "train_loss")):
                per_epoch = list(zip(*(getattr(h, curve) for h in runs), strict=True))
                epochs = range(1, len(per_epoch) + 1)
                (line,) = row_axes.plot(
                    epochs, [statistics.fmean(v) for v in per_epoch], marker="o", label=name
                )
                if len(runs) > 1:
                    low, high = [min(v) for v in per_epoch], [max(v) for v in per_epoch]
                    row_axes.fill_between(epochs, low, high, color=line.get_color(), alpha=0.15)
        accuracy_axes.set(title=f"lr {lr:g}", ylim=(0.0, 1.0))
        loss_axes.set(xlabel="epoch")
        loss_axes.set_yscale("log")
        for row_axes in (accuracy_axes, loss_axes):
            row_axes.grid(alpha=0.3)
            row_axes.xaxis.get_major_locator().set_params(integer=True)
    axes[0][0].set(ylabel="test accuracy")
    axes[1][0].set(ylabel="mean training loss")
    axes[0][-1].legend(loc="lower right")
    if title:
        figure.suptitle(title)
    figure.savefig(path, dpi=100)
    return path
