"""The ``bench`` command line: ``python -m batchnorm bench [options]``.

Parses and checks the options (every case, variant and mode is checked against the
tables of :mod:`batchnorm.bench` before anything runs; a bad one exits with status 2
and a one-line ``error:`` naming the option and the valid values), then runs the main
table (:func:`batchnorm.bench.run`), ``--paired`` (:mod:`batchnorm.bench_paired`),
``--memory`` (:mod:`batchnorm.bench_memory`) or ``--sync`` (:mod:`batchnorm.bench_sync`).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

import torch

from . import bench
from .backends.c import build, cxx
from .bench import CASES, DEFAULT_CASES, MODES, VARIANTS, run
from .bench_paired import PAIRED_VARIANTS

SYNC_DEFAULT_CASES = ("B", "C")  # the 4-D cases: what --sync measures unless told
MEMORY_VARIANTS = ("plain", "renorm", "vbs=8")  # the variants --memory measures


def header(device: str = "cpu") -> str:
    """The lines above the main table: device, torch version and threads, allocator,
    which kernels and autograd node run, and the table's column titles."""
    threads = torch.get_num_threads()
    preload = os.environ.get("LD_PRELOAD", "") or "none (glibc malloc)"
    rate = os.environ.get("TCMALLOC_RELEASE_RATE")
    if rate is not None:
        preload += f", TCMALLOC_RELEASE_RATE={rate}"
    on = ""
    if torch.device(device).type == "cuda":
        on = f"device {torch.cuda.get_device_name(device)} (PyTorch's CUDA kernels, cuDNN), "
        on += f"ours on {_cuda_backend(device)}, "
    return (
        f"{on}torch {torch.__version__}, {threads} threads, LD_PRELOAD={preload}\n"
        f"kernels: {build.status()}\n"
        f"autograd node: {cxx.status()}\n\n"
        "| case | mode | implementation | ms | ÷ copy | ÷ torch same dtype | ÷ ours plain |\n"
        "|---|---|---|---|---|---|---|"
    )


def _cuda_backend(device: str) -> str:
    """Which backend runs our layer's plain calls on ``device`` (and triton's version)."""
    from . import backends
    from ._layout import Geometry

    x = torch.empty(8, 4, device=device)
    name = backends.select(x, Geometry.of(x, [1])).name
    if name == "triton":
        import triton

        name += f" {triton.__version__}"
    return f"the {name} backend"


def _case_list() -> str:
    return "; ".join(f"{name} = {case.notes}" for name, case in CASES.items())


def build_parser() -> argparse.ArgumentParser:
    """The ``bench`` parser; its ``--help`` lists every valid case, variant and mode."""
    parser = argparse.ArgumentParser(
        prog="batchnorm bench",
        description=bench.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--cases",
        default=None,
        metavar="LIST",
        help=f"comma-separated, among: {_case_list()}. Default: "
        f"{', '.join(DEFAULT_CASES['cpu'])} on the CPU, {', '.join(DEFAULT_CASES['cuda'])} on a "
        f"CUDA device ({', '.join(SYNC_DEFAULT_CASES)} with --sync)",
    )
    parser.add_argument(
        "--variants",
        default=None,
        metavar="LIST",
        help=f"comma-separated, among: {', '.join(VARIANTS)}. Default: all (plain with "
        f"--paired, which takes {', '.join(PAIRED_VARIANTS)})",
    )
    parser.add_argument(
        "--modes",
        default=None,
        metavar="LIST",
        help=f"comma-separated, among: {', '.join(MODES)}. Default: all (the two training "
        "modes with --sync)",
    )
    parser.add_argument("--rounds", type=int, default=7, help="interleaved timing rounds")
    parser.add_argument("--min-time", type=float, default=1.0, help="seconds per implementation")
    parser.add_argument("--no-tf", action="store_true", help="skip tf_keras even if installed")
    parser.add_argument(
        "--memory",
        action="store_true",
        help=f"also report peak extra memory ({', '.join(MEMORY_VARIANTS)})",
    )
    parser.add_argument("--device", default="cpu", help="cpu, or a CUDA device such as cuda")
    instead = parser.add_mutually_exclusive_group()
    instead.add_argument(
        "--paired",
        action="store_true",
        help="instead: ours against F.batch_norm alone, median ratio with a 95%% interval",
    )
    instead.add_argument(
        "--model",
        action="store_true",
        help="instead: a training step of a ResNet-18-shaped CNN (batch 128, 224², "
        "channels_last, float32 and bfloat16 autocast, eager and torch.compile) with "
        "nn.BatchNorm2d and after batchnorm.from_torch",
    )
    instead.add_argument(
        "--sync",
        type=int,
        metavar="WORLD",
        default=0,
        help="instead: the cost of synchronized statistics with WORLD gloo processes (CPU)",
    )
    return parser


def parse_list(
    parser: argparse.ArgumentParser,
    option: str,
    text: str | None,
    valid: Sequence[str],
    default: Sequence[str],
) -> list[str]:
    """The comma-separated values of ``option`` (``default`` when it was not given);
    exits through ``parser.error`` (status 2) naming the option, every unknown value
    and the valid ones."""
    if text is None:
        return list(default)
    values = [value.strip() for value in text.split(",")]
    unknown = [value for value in values if value not in valid]
    if unknown:
        parser.error(
            f"{option}: unknown {'value' if len(unknown) == 1 else 'values'} "
            f"{', '.join(repr(v) for v in unknown)}; choose among {', '.join(valid)} "
            "(comma-separated)"
        )
    return list(dict.fromkeys(values))  # in the order given, once each


def _check_device(parser: argparse.ArgumentParser, name: str) -> None:
    try:
        device = torch.device(name)
    except RuntimeError:
        parser.error(f"--device must be cpu or a CUDA device; received {name!r}")
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device {name}: this PyTorch sees no CUDA device")
    if device.type not in ("cpu", "cuda"):
        parser.error(f"--device must be cpu or a CUDA device; received {name!r}")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmarks as ``argv`` (default ``sys.argv[1:]``) asks; returns the exit
    status. Bad options exit with status 2 and an ``error:`` line naming the option."""
    parser = build_parser()
    args = parser.parse_args(None if argv is None else list(argv))
    if args.rounds < 1:
        parser.error(f"--rounds must be >= 1; received {args.rounds}")
    if not args.min_time > 0:
        parser.error(f"--min-time must be > 0; received {args.min_time}")
    if args.sync:
        return _main_sync(parser, args)
    _check_device(parser, args.device)
    default_cases = DEFAULT_CASES[torch.device(args.device).type]
    cases = parse_list(parser, "--cases", args.cases, list(CASES), default_cases)
    modes = parse_list(parser, "--modes", args.modes, MODES, MODES)
    if args.model:
        from .bench_model import model_rows

        if torch.device(args.device).type != "cuda":
            parser.error("--model needs a CUDA --device (a step takes minutes on a CPU)")

        print(header(args.device).split("\n\n")[0] + "\n")
        print("| step | nn.BatchNorm2d ms | ours ms | ours ÷ torch |\n|---|---|---|---|")
        for compiled in (False, True):
            for row in model_rows(args.device, compiled=compiled):
                print(row, flush=True)
        return 0
    if args.paired:
        from .bench_paired import paired

        variants = parse_list(parser, "--variants", args.variants, list(VARIANTS), ["plain"])
        unknown = [v for v in variants if v not in PAIRED_VARIANTS]
        if unknown:
            parser.error(
                f"--paired takes --variants among {', '.join(PAIRED_VARIANTS)}; received "
                f"{', '.join(repr(v) for v in unknown)}"
            )
        cxx.wait()  # time what a user gets once the C++ node is built
        print(header(args.device).split("\n\n")[0] + "\n")
        paired(cases, modes, variants, args.rounds, args.min_time, args.device)
        return 0
    variants = parse_list(parser, "--variants", args.variants, list(VARIANTS), list(VARIANTS))
    cxx.wait()
    print(header(args.device))
    run(cases, variants, modes, args.rounds, args.min_time, not args.no_tf, args.device)
    if args.memory:
        from .bench_memory import peak_extra_memory

        print("\n| case | variant | peak extra memory, ours | torch native |\n|---|---|---|---|")
        for name in cases:
            for variant in MEMORY_VARIANTS:
                ours, native = peak_extra_memory(name, variant, args.device)
                print(f"| {name} | {variant} | {ours:.2f}× input | {native:.2f}× input |")
    return 0


def _main_sync(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """``--sync WORLD``: plain layers on the CPU over gloo, the training modes only."""
    from .bench_sync import MODES as SYNC_MODES
    from .bench_sync import run as run_sync

    if args.sync < 1:
        parser.error(f"--sync must be >= 1 processes; received {args.sync}")
    for option, given in (
        ("--variants", args.variants is not None),
        ("--memory", args.memory),
        ("--device", args.device != "cpu"),
    ):
        if given:
            parser.error(
                f"--sync times plain batch norm on the CPU over gloo; {option} does not apply"
            )
    cases = parse_list(parser, "--cases", args.cases, list(CASES), SYNC_DEFAULT_CASES)
    modes = parse_list(parser, "--modes", args.modes, SYNC_MODES, SYNC_MODES)
    print("\n".join(run_sync(cases, args.sync, args.rounds, args.min_time, modes)))
    return 0
