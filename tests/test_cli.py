"""The command line runs end to end in a subprocess."""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import batchnorm
from batchnorm import _demo, _demo_report, cli
from batchnorm.backends.c import build

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
VARIANTS = ["batchnorm", "renorm", "ghost", "none"]


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "batchnorm", *args],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=cwd,
    )


CELL = r"([\d.]+)(?: ± ([\d.]+))?"


def demo_table(stdout: str) -> tuple[list[str], dict[str, dict]]:
    """The learning rates of the table's columns, and variant → {"cells": [(mean, std or
    None) per rate], "beats": (won, runs) or None, "seconds": s/epoch, "layer": text}."""
    lines = stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("variant "))
    lrs = re.findall(r"lr ([\d.e-]+)", lines[header])
    row = re.compile(rf"^(\w+)\s+((?:{CELL}\s+){{{len(lrs)}}})(\d+/\d+|—)\s+([\d.]+)\s+(\S.*)$")
    table = {}
    for line in lines[header + 1 :]:
        match = row.match(line)
        if match is None:
            break
        cells = [
            (float(mean), float(std) if std else None)
            for mean, std in re.findall(CELL, match.group(2))
        ]
        beats = match.group(5)
        table[match.group(1)] = {
            "cells": cells,
            "beats": None if beats == "—" else tuple(int(v) for v in beats.split("/")),
            "seconds": float(match.group(6)),
            "layer": match.group(7),
        }
    return lrs, table


def check_png(path: Path) -> None:
    from matplotlib import image

    assert path.read_bytes()[:8] == PNG_SIGNATURE
    pixels = image.imread(path)
    assert pixels.ndim == 3 and pixels.shape[0] > 0 and pixels.shape[1] > 0


def check_table(stdout: str, lrs: list[str], seeds: int, baseline: str) -> dict[str, dict]:
    """The table lists the four variants with one sane cell per rate, and every
    variant but the baseline counts its wins out of rates × seeds runs."""
    columns, table = demo_table(stdout)
    assert columns == lrs, stdout
    assert list(table) == VARIANTS, stdout
    for name, row in table.items():
        assert len(row["cells"]) == len(lrs)
        for mean, std in row["cells"]:
            assert 0.0 <= mean <= 1.0
            assert (std is None) == (seeds == 1)
            assert std is None or 0.0 <= std <= 0.6
        if name == baseline:
            assert row["beats"] is None
        else:
            won, runs = row["beats"]
            assert runs == len(lrs) * seeds and 0 <= won <= runs
        assert row["seconds"] > 0
    assert table["none"]["layer"] == "nn.Identity()"
    assert table["renorm"]["layer"].startswith("BatchNormalization(renorm=True")
    return table


def test_demo_default_run_shows_batch_norm_ahead_at_every_rate(tmp_path):
    """The default run (5 epochs, rates 0.02, 0.1, 0.5, seeds 0-2, a few seconds): every
    normalized variant beats no normalization on every run, by more than the two
    spreads together, and the printed plot path is absolute."""
    result = run("demo", "--no-progress", "--out", "curves", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    table = check_table(result.stdout, ["0.02", "0.1", "0.5"], seeds=3, baseline="none")
    assert "MLP 64-128-64-64-10" in result.stdout and "seeds 0, 1, 2" in result.stdout
    assert "batches of 64" in result.stdout and "ghost batches of 16" in result.stdout
    assert "Without normalization" in result.stdout  # the note on what to look at
    for name in ("batchnorm", "renorm", "ghost"):
        assert table[name]["beats"] == (9, 9), result.stdout
        for (mean, std), (none_mean, none_std) in zip(
            table[name]["cells"], table["none"]["cells"], strict=True
        ):
            assert mean > 0.9
            assert mean - none_mean > std + none_std, result.stdout
    plot = tmp_path / "curves" / _demo.DEFAULT_PLOT_NAME
    assert f"plot: {plot}\n" in result.stdout
    check_png(plot)
    assert result.stderr == ""  # --no-progress


def test_demo_small_batch_explains_and_writes_default_plot(tmp_path):
    result = run(
        "demo", "--small-batch", "--epochs", "1", "--seeds", "2", "--no-progress", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    check_table(result.stdout, ["0.01"], seeds=2, baseline="batchnorm")
    assert "batches of 4" in result.stdout and "ghost batches of 2" in result.stdout
    assert "seeds 0, 1" in result.stdout and "momentum 0.99" in result.stdout
    notes = [line for line in result.stdout.splitlines() if line.startswith("--small-batch:")]
    assert len(notes) == 1 and "renormalization" in result.stdout
    assert f"plot: {tmp_path / _demo.DEFAULT_PLOT_NAME}\n" in result.stdout
    check_png(tmp_path / _demo.DEFAULT_PLOT_NAME)
    assert "run" not in result.stderr  # --no-progress


def test_demo_one_seed_chosen_rates_and_progress(tmp_path):
    result = run(
        "demo", "--lr", "0.05,0.2", "--seed", "4", "--seeds", "1", "--epochs", "1",
        "--out", "sub/figure.png", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    table = check_table(result.stdout, ["0.05", "0.2"], seeds=1, baseline="none")
    assert table["batchnorm"]["cells"][0][0] > 0.8  # one epoch of the BN MLP gets there
    assert "seeds 4\n" in result.stdout
    assert "Without normalization" not in result.stdout  # the note describes the default rates
    assert f"plot: {tmp_path / 'sub' / 'figure.png'}\n" in result.stdout
    check_png(tmp_path / "sub" / "figure.png")
    assert "/8" in result.stderr and "run" in result.stderr  # the progress bar goes to stderr
    assert "run/s" not in result.stdout


def test_demo_needs_the_extra():
    code = (
        "import sys; sys.modules['tqdm'] = None\n"
        "from batchnorm.cli import main\n"
        "sys.exit(main(['demo', '--epochs', '1', '--seeds', '1', '--out', 'unused.png']))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 1
    assert "pip install 'batchnorm[demo]'" in result.stderr and "tqdm" in result.stderr


def test_info_lists_versions_and_backends():
    code = (
        "import sys\n"
        "from batchnorm.cli import main\n"
        "main(['info'])\n"
        "print('imported:', sorted(m for m in ('tensorflow', 'tf_keras', 'onnx', 'onnxruntime',"
        " 'h5py') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    lines = dict(line.split(": ", 1) for line in result.stdout.splitlines() if ": " in line)
    first = result.stdout.splitlines()[0]
    assert first == f"batchnorm {batchnorm.__version__}"
    assert re.search(r"^python 3\.\d+", result.stdout, re.MULTILINE)
    assert f"torch {torch.__version__}" in result.stdout
    assert lines["C kernels"].split(" ", 1)[0] in ("yes", "no")
    if lines["C kernels"].startswith("yes"):  # the threshold the loader set from the cache
        mib = build.stream_threshold() / 2**20
        assert f"  streaming stores for outputs of {mib:g} MiB or more" in result.stdout
    assert lines["C++ autograd nodes"].split(" ", 1)[0] in ("yes", "no")
    assert lines["CUDA"].startswith("yes" if torch.cuda.is_available() else "no")
    for name in ("c", "triton", "torch"):  # each backend, then what it takes
        at = result.stdout.index(f"backend {name}: ")
        assert result.stdout[at:].splitlines()[1].startswith("  takes ")
    assert "leaves float64, per-example adjustments" in result.stdout
    distributed = lines["torch.distributed"]
    assert distributed.startswith("yes" if torch.distributed.is_available() else "no")
    if torch.distributed.is_available():
        gloo = "yes" if torch.distributed.is_gloo_available() else "no"
        assert f"gloo {gloo}" in distributed and "nccl " in distributed and "mpi " in distributed
    for module in ("tensorflow", "tf_keras", "onnx", "onnxruntime", "h5py"):
        assert module in lines, result.stdout
        try:
            version = importlib.metadata.version(module)
        except importlib.metadata.PackageNotFoundError:
            continue
        assert lines[module] == version
    assert lines["imported"] == "[]"  # found without importing any of them


def test_bad_arguments():
    bad = run("demo", "--epochs", "0")
    assert bad.returncode != 0 and "--epochs" in bad.stderr
    assert run("nope").returncode != 0


@pytest.mark.parametrize(
    ("argv", "option"),
    [
        (["--epochs", "-1"], "--epochs"),
        (["--epochs", "two"], "--epochs"),
        (["--seeds", "0"], "--seeds"),
        (["--batch-size", "1"], "--batch-size"),
        (["--batch-size", "6", "--virtual-batch-size", "4"], "--virtual-batch-size"),
        (["--lr", "0"], "--lr"),
        (["--lr", "0.1,-1"], "--lr"),
        (["--lr", "0.1,fast"], "--lr"),
        (["--lr", "nan"], "--lr"),
        (["--out", "curves.jpg"], "--out"),
    ],
)
def test_demo_argument_errors_name_the_option(argv, option, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["demo", *argv])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert option in err.splitlines()[-1] and "error:" in err.splitlines()[-1]


def test_demo_settings():
    assert _demo.default_virtual_batch_size(64) == 16
    assert _demo.default_virtual_batch_size(4) == 2
    assert _demo.default_virtual_batch_size(7) == 7
    config = _demo.make_config()
    assert (config.epochs, config.batch_size, config.virtual_batch_size) == (5, 64, 16)
    assert (config.lrs, config.seeds, config.baseline) == ((0.02, 0.1, 0.5), (0, 1, 2), "none")
    assert config.renorm_clipping == _demo.DEFAULT_RENORM_CLIPPING and config.steps == 21
    config = _demo.make_config(small_batch=True, seed=5, seeds=2)
    assert (config.epochs, config.batch_size, config.virtual_batch_size) == (5, 4, 2)
    assert (config.lrs, config.seeds, config.baseline) == ((0.01,), (5, 6), "batchnorm")
    assert (config.momentum, config.steps) == (0.99, 336)
    assert config.renorm_clipping == _demo.SMALL_BATCH_RENORM_CLIPPING
    config = _demo.make_config(batch_size=30, lr=0.2)
    assert (config.virtual_batch_size, config.lrs) == (10, (0.2,))
    assert _demo.parse_lrs("0.1,1e-2") == (0.1, 0.01)


def test_plot_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert _demo.resolve_plot_path(None) == tmp_path / _demo.DEFAULT_PLOT_NAME
    assert _demo.resolve_plot_path(tmp_path) == tmp_path / _demo.DEFAULT_PLOT_NAME
    assert _demo.resolve_plot_path(tmp_path / "new") == tmp_path / "new" / _demo.DEFAULT_PLOT_NAME
    assert _demo.resolve_plot_path(tmp_path / "a.PNG") == tmp_path / "a.PNG"
    assert _demo.resolve_plot_path("x/../b.png") == tmp_path / "b.png"  # absolute, normalized


def test_variants_share_initial_weights():
    weights = []
    for variant in _demo.demo_variants(_demo.make_config()):
        torch.manual_seed(0)
        model = _demo.make_mlp(variant.norm)
        assert len(model) == 10 and isinstance(model[1], type(variant.norm(8)))
        weights.append([p for n, p in model.named_parameters() if n in ("0.weight", "9.bias")])
    for other in weights[1:]:
        assert len(other) == 2
        assert all(torch.equal(a, b) for a, b in zip(weights[0], other, strict=True))


def history(name: str, lr: float, seed: int, accuracy: float) -> _demo.History:
    return _demo.History(name, f"{name}()", lr, seed, [1.0], [accuracy], [0.5])


def test_table_gives_mean_std_and_wins_over_the_same_rate_and_seed():
    runs = [
        history("bn", 0.1, 0, 0.9), history("bn", 0.1, 1, 0.8), history("bn", 0.5, 0, 0.4),
        history("bn", 0.5, 1, 0.2), history("none", 0.1, 0, 0.85), history("none", 0.1, 1, 0.85),
        history("none", 0.5, 0, 0.1), history("none", 0.5, 1, 0.3),
    ]  # fmt: skip
    assert _demo_report.wins(runs[:4], runs[4:]) == (2, 4)
    lines = _demo.format_table(runs, baseline="none").splitlines()
    assert lines[0].split() == ["variant", "lr", "0.1", "lr", "0.5", "beats", "none", "s/epoch",
                                "layer"]  # fmt: skip
    bn = lines[1].split()
    assert bn[:7] == ["bn", "0.850", "±", "0.071", "0.300", "±", "0.141"]  # sample std (n − 1)
    assert bn[7:] == ["2/4", "0.500", "bn()"]
    assert lines[2].split()[7] == "—"
    one_seed = _demo.format_table([history("bn", 0.1, 0, 0.9)], baseline="none")
    assert one_seed.splitlines()[1].split()[:3] == ["bn", "0.900", "—"]
