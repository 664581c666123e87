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
from batchnorm import _demo, cli

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


def demo_table(stdout: str) -> dict[str, tuple[float, float, int, float]]:
    """variant → (final accuracy, best accuracy, epoch of the best, seconds per epoch)."""
    rows = re.findall(
        r"^(\w+)\s+([\d.]+)\s+([\d.]+) \((\d+)\)\s+([\d.]+)\s+\S", stdout, re.MULTILINE
    )
    return {r[0]: (float(r[1]), float(r[2]), int(r[3]), float(r[4])) for r in rows}


def check_png(path: Path) -> None:
    from matplotlib import image

    assert path.read_bytes()[:8] == PNG_SIGNATURE
    pixels = image.imread(path)
    assert pixels.ndim == 3 and pixels.shape[0] > 0 and pixels.shape[1] > 0


def check_table(stdout: str, epochs: int) -> dict[str, tuple[float, float, int, float]]:
    table = demo_table(stdout)
    assert list(table) == VARIANTS, stdout
    for final, best, best_epoch, seconds in table.values():
        assert 0.0 <= final <= best <= 1.0
        assert 1 <= best_epoch <= epochs
        assert seconds > 0
    return table


def test_demo_compares_four_variants_and_writes_png(tmp_path):
    out = tmp_path / "curves.png"
    result = run("demo", "--epochs", "1", "--out", str(out))
    assert result.returncode == 0, result.stderr
    table = check_table(result.stdout, epochs=1)
    assert table["batchnorm"][0] > 0.8  # digits is easy: one epoch of a BN MLP gets there
    assert "batches of 64" in result.stdout and "ghost batches of 16" in result.stdout
    assert f"plot: {out}" in result.stdout
    check_png(out)
    assert "epoch" in result.stderr  # the progress bars go to stderr
    assert "it/s" not in result.stdout and "epoch/s" not in result.stdout


def test_demo_small_batch_explains_and_writes_default_plot(tmp_path):
    result = run("demo", "--small-batch", "--epochs", "1", "--no-progress", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    check_table(result.stdout, epochs=1)
    assert "batches of 4" in result.stdout and "ghost batches of 2" in result.stdout
    notes = [line for line in result.stdout.splitlines() if line.startswith("--small-batch:")]
    assert len(notes) == 1 and "renormalization" in notes[0]
    check_png(tmp_path / _demo.DEFAULT_PLOT_NAME)
    assert "epoch" not in result.stderr  # --no-progress


def test_demo_needs_the_extra():
    code = (
        "import sys; sys.modules['tqdm'] = None\n"
        "from batchnorm.cli import main\n"
        "sys.exit(main(['demo', '--epochs', '1', '--out', 'unused.png']))"
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
    assert lines["C++ autograd nodes"].split(" ", 1)[0] in ("yes", "no")
    assert lines["CUDA"].startswith("yes" if torch.cuda.is_available() else "no")
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
        (["--batch-size", "1"], "--batch-size"),
        (["--batch-size", "6", "--virtual-batch-size", "4"], "--virtual-batch-size"),
        (["--lr", "0"], "--lr"),
        (["--out", "curves.jpg"], "--out"),
    ],
)
def test_demo_argument_errors_name_the_option(argv, option, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["demo", *argv])
    assert exc.value.code == 2
    assert option in capsys.readouterr().err


def test_demo_settings():
    assert _demo.default_virtual_batch_size(64) == 16
    assert _demo.default_virtual_batch_size(4) == 2
    assert _demo.default_virtual_batch_size(7) == 7
    config = _demo.make_config(small_batch=True)
    assert (config.epochs, config.batch_size, config.virtual_batch_size) == (5, 4, 2)
    config = _demo.make_config(batch_size=30)
    assert (config.epochs, config.virtual_batch_size) == (10, 10)


def test_plot_path(tmp_path):
    assert _demo.resolve_plot_path(None) == Path.cwd() / _demo.DEFAULT_PLOT_NAME
    assert _demo.resolve_plot_path(tmp_path) == tmp_path / _demo.DEFAULT_PLOT_NAME
    assert _demo.resolve_plot_path(tmp_path / "new") == tmp_path / "new" / _demo.DEFAULT_PLOT_NAME
    assert _demo.resolve_plot_path(tmp_path / "a.PNG") == tmp_path / "a.PNG"


def test_variants_share_initial_weights():
    weights = []
    for variant in _demo.demo_variants(_demo.make_config()):
        torch.manual_seed(0)
        model = _demo.make_mlp(variant.norm)
        weights.append([p for n, p in model.named_parameters() if n in ("0.weight", "6.bias")])
    for other in weights[1:]:
        assert all(torch.equal(a, b) for a, b in zip(weights[0], other, strict=True))


def table_rows(text: str) -> list[list[str]]:
    return [
        [c.strip() for c in line.strip("|").split("|")]
        for line in text.splitlines()
        if line.startswith("| ") and "×" in line
    ]


def test_bench_prints_times_and_ratios():
    result = run(
        "bench",
        "--cases",
        "D",
        "--variants",
        "plain,renorm",
        "--modes",
        "inference",
        "--rounds",
        "1",
        "--min-time",
        "0.01",
        "--no-tf",
        "--memory",
    )
    assert result.returncode == 0, result.stderr
    rows = table_rows(result.stdout)
    impls = {r[2] for r in rows if len(r) == 7}
    assert {"ours plain", "ours renorm", "torch F.batch_norm", "torch nn.BatchNorm"} <= impls, rows
    for r in rows:
        if len(r) == 7:
            assert float(r[3]) > 0 and float(r[4].rstrip("×")) > 0
    memory = [r for r in rows if len(r) == 4]
    assert {r[1] for r in memory} == {"plain", "renorm", "vbs=8"}


def test_bench_rounds_alternate_the_order_and_pair_the_ratios():
    """Every other round runs the implementations in reverse order; a ratio is the
    median over rounds of the two times of one round."""
    from batchnorm import bench

    log: list[str] = []
    fns = {name: (lambda name=name: log.append(name)) for name in ("a", "b", "c")}
    times = bench._measure(fns, rounds=4, min_time=1e-9)
    assert all(len(t) == 4 for t in times.values())
    # one warm-up and one sizing call each, then one call per round
    assert log[6:] == ["a", "b", "c", "c", "b", "a", "a", "b", "c", "c", "b", "a"]
    assert bench._ratio([2.0, 9.0, 3.0], [1.0, 10.0, 1.0]) == 2.0  # not 14 / 12


def test_bench_paired_gives_a_median_ratio_inside_its_interval():
    result = run(
        "bench",
        "--paired",
        "--cases",
        "D",
        "--modes",
        "inference",
        "--variants",
        "plain,float16",
        "--rounds",
        "5",
        "--min-time",
        "0.05",
    )
    assert result.returncode == 0, result.stderr
    rows = [r for r in table_rows(result.stdout) if r[0] == "D"]
    assert [r[2] for r in rows] == ["float32", "float16"]
    for r in rows:
        median = float(r[3].rstrip("×"))
        low, high = (float(v) for v in r[4].split("–"))
        assert 0 < low <= median <= high
        faster, total = (int(v) for v in r[5].split("/"))
        assert total == 5 and 0 <= faster <= 5
    bad = run("bench", "--paired", "--variants", "renorm", "--rounds", "1")
    assert bad.returncode == 2 and "--paired takes --variants" in bad.stderr


def test_bench_device_is_checked():
    """A device the benchmark cannot use is refused with an error naming ``--device``."""
    for device in ("cuda", "mps", "nonsense"):
        if device == "cuda" and torch.cuda.is_available():
            continue
        result = run("bench", "--cases", "D", "--device", device, "--no-tf")
        assert result.returncode == 2, (device, result.stdout, result.stderr)
        assert "--device" in result.stderr and device in result.stderr, result.stderr


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_bench_runs_on_cuda():
    result = run(
        "bench", "--cases", "C", "--variants", "plain,renorm,float16", "--rounds", "1",
        "--min-time", "0.01", "--device", "cuda", "--memory",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    rows = table_rows(result.stdout)
    impls = {r[2] for r in rows if len(r) == 7}
    assert {"ours plain", "ours renorm", "ours float16", "torch F.batch_norm"} <= impls, rows
    assert "device" in result.stdout.splitlines()[0]


def test_bench_sync_runs_two_gloo_processes():
    result = run("bench", "--sync", "2", "--cases", "C", "--rounds", "1", "--min-time", "0.01")
    assert result.returncode == 0, result.stderr
    rows = table_rows(result.stdout)
    assert [r[:2] for r in rows] == [["C", "train_fwd"], ["C", "train_fwd_bwd"]]
    assert all(float(r[2]) > 0 and float(r[3]) > 0 for r in rows)


def test_bench_help_lists_the_valid_values(capsys):
    from batchnorm import bench

    with pytest.raises(SystemExit) as exc:
        cli.main(["bench", "--help"])
    assert exc.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # undo argparse's line wrapping
    for name, case in bench.CASES.items():
        assert f"{name} = {case.notes}" in text
    assert ", ".join(bench.VARIANTS) in text
    assert ", ".join(bench.MODES) in text


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--cases", "Z"], "--cases: unknown value 'Z'; choose among A, B, C, D"),
        (["--cases", "A,Q,X"], "--cases: unknown values 'Q', 'X'; choose among A, B, C, D"),
        (["--variants", "plain,fast"], "--variants: unknown value 'fast'; choose among plain,"),
        (["--modes", "train"], "--modes: unknown value 'train'; choose among train_fwd,"),
        (["--sync", "2", "--modes", "inference"], "choose among train_fwd, train_fwd_bwd"),
        (["--sync", "2", "--variants", "renorm"], "--variants does not apply"),
        (["--sync", "-1"], "--sync must be >= 1"),
        (["--rounds", "0"], "--rounds must be >= 1"),
        (["--paired", "--variants", "renorm"], "--paired takes --variants among plain,"),
    ],
)
def test_bench_refuses_bad_values_with_one_error_line(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["bench", *argv])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.splitlines()[-1].startswith("batchnorm bench: error: ")
    assert message in err.splitlines()[-1]
