"""Command line: ``python -m batchnorm demo|info|bench`` (also the ``batchnorm`` script).

``demo`` (``batchnorm._demo``) trains one small MLP on scikit-learn's bundled digits
with plain batch normalization, batch renormalization, ghost batches and no
normalization, at several learning rates and seeds, prints the final test accuracy
(mean ± std over seeds) and writes a plot of the training curves. ``info`` prints
versions and what this machine offers. ``bench`` runs the benchmarks of
:mod:`batchnorm.bench` (its command line is :mod:`batchnorm.bench_cli`).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import importlib.util
import platform
import sys
from collections.abc import Sequence

import torch

from . import __version__, backends
from ._demo import DEFAULT_PLOT_NAME, demo, make_config, parse_lrs, resolve_plot_path
from .backends.c import build, cxx


def _distribution_version(*names: str) -> str | None:
    for name in names:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def optional_package(module: str, *distributions: str) -> str:
    """``'<version>'`` when ``module`` is importable, ``'not installed'`` otherwise.

    Looks the module up with ``importlib.util.find_spec`` and the version in the
    installed distribution's metadata (``distributions``, else the module name):
    nothing is imported, so asking about TensorFlow costs milliseconds.
    """
    try:
        found = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        return "not installed"
    version = _distribution_version(*(distributions or (module,)))
    return version or "installed (version unknown)"


def info_lines() -> list[str]:
    """The lines ``info`` prints: versions, every registered backend (available here, or
    why not), the C kernels and C++ nodes, CUDA, torch.distributed backends, and the
    optional packages (found without importing them)."""
    lines = [
        f"batchnorm {__version__}",
        f"python {platform.python_version()} ({platform.platform()})",
        f"torch {torch.__version__} ({torch.get_num_threads()} threads)",
    ]
    for name, ok, reason in backends.status():
        chosen = " (forced: BATCHNORM_BACKEND / backends.use)" if backends.forced() == name else ""
        lines.append(f"backend {name}: {'available' if ok else 'unavailable: ' + reason}{chosen}")
        lines.append(f"  takes {backends.describe(name)}")
    lib = build.library()
    lines.append(f"C kernels: {'yes' if lib is not None else 'no'} ({build.status()})")
    if lib is not None:
        mib = lib.bn_stream_bytes(-1) / 2**20
        lines.append(f"  streaming stores for outputs of {mib:g} MiB or more")
    available = "yes" if cxx.module() is not None else "no"
    lines.append(f"C++ autograd nodes: {available} ({cxx.status()})")
    if torch.cuda.is_available():
        names = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
        lines.append(f"CUDA: yes, CUDA {torch.version.cuda}, devices: {names}")
    else:
        lines.append("CUDA: no")
    dist = torch.distributed
    if dist.is_available():
        collectives = ", ".join(
            f"{name} {'yes' if getattr(dist, f'is_{name}_available')() else 'no'}"
            for name in ("gloo", "nccl", "mpi")
        )
        lines.append(f"torch.distributed: yes (backends: {collectives})")
    else:
        lines.append("torch.distributed: no")
    for module, distributions in (
        ("tensorflow", ("tensorflow", "tensorflow-cpu", "tensorflow-macos", "tf-nightly")),
        ("tf_keras", ("tf_keras", "tf-keras")),
        ("onnx", ("onnx",)),
        ("onnxruntime", ("onnxruntime", "onnxruntime-gpu")),
        ("h5py", ("h5py",)),
    ):
        lines.append(f"{module}: {optional_package(module, *distributions)}")
    return lines


def info() -> None:
    """Print versions and what this machine offers (see ``info_lines``)."""
    print("\n".join(info_lines()))


def _build_parser() -> tuple[argparse.ArgumentParser, argparse.ArgumentParser]:
    parser = argparse.ArgumentParser(
        prog="batchnorm",
        description="batchnorm: TensorFlow's BatchNormalization for PyTorch. Commands: demo "
        "(what batch norm is for, on digits), info (versions and backends), bench (benchmarks).",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p_demo = sub.add_parser(
        "demo",
        help="what batch norm is for: an MLP on digits with and without it, over rates and seeds",
        description=(
            "Train the same MLP on scikit-learn's digits with plain BatchNormalization, "
            "batch renormalization, ghost batches and no normalization, at several SGD "
            "learning rates and seeds; print the final test accuracy (mean ± std over "
            "seeds) and write the training curves to a PNG."
        ),
    )
    p_demo.add_argument("--epochs", type=int, default=None, help="epochs per run (default 5)")
    p_demo.add_argument(
        "--batch-size", type=int, default=None, help="default 64, or 4 with --small-batch"
    )
    p_demo.add_argument(
        "--virtual-batch-size",
        type=int,
        default=None,
        help="ghost batch size, a divisor of the batch size (default 16, or 2 with --small-batch)",
    )
    p_demo.add_argument(
        "--lr",
        default=None,
        metavar="LR[,LR...]",
        help="SGD learning rates, one table column each (default 0.02,0.1,0.5, or 0.01 "
        "with --small-batch)",
    )
    p_demo.add_argument(
        "--seed", type=int, default=0, help="first seed: data split, weights and batch order"
    )
    p_demo.add_argument(
        "--seeds", type=int, default=3, help="how many seeds, from --seed on (default 3)"
    )
    p_demo.add_argument(
        "--out",
        default=None,
        help=f"directory or .png path for the plot (default ./{DEFAULT_PLOT_NAME})",
    )
    p_demo.add_argument(
        "--small-batch",
        action="store_true",
        help="batches of 4 and ghost batches of 2, where batch renormalization helps",
    )
    p_demo.add_argument("--no-progress", action="store_true", help="no progress bars")
    sub.add_parser("info", help="versions, C kernels, CUDA, distributed backends, extras")
    sub.add_parser(
        "bench", help="benchmarks against PyTorch, a plain copy and tf_keras", add_help=False
    )
    return parser, p_demo


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line on ``argv`` (default ``sys.argv[1:]``); returns the exit
    status. Argument errors exit with status 2 and a message naming the option."""
    parser, demo_parser = _build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:
        from .bench_cli import main as bench_main

        return bench_main(argv[1:])
    args = parser.parse_args(argv)
    if args.command == "demo":
        try:
            lrs = None if args.lr is None else parse_lrs(args.lr)
            make_config(
                args.epochs,
                args.batch_size,
                args.virtual_batch_size,
                lrs,
                args.seed,
                args.small_batch,
                args.seeds,
            )
            resolve_plot_path(args.out)
        except ValueError as exc:
            demo_parser.error(str(exc))
        demo(
            args.epochs,
            args.batch_size,
            args.seed,
            args.out,
            args.small_batch,
            args.virtual_batch_size,
            lrs,
            progress=not args.no_progress,
            seeds=args.seeds,
        )
    elif args.command == "info":
        info()
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
