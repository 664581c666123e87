"""What one training step (forward + backward) of a layer costs on small tensors before any
batch-norm arithmetic: ``python benchmarks/floor.py [--cases A,D,B] [--rounds 15]``.

In one interleaved run per case (``batchnorm.bench``'s timing: median ratios over rounds),
each to a ``y.copy_(x)`` of the same tensor:

- ``autograd no-op``: ``x.view_as(x).backward(dy)``, the autograd engine's round trip
  with no kernel at all (dy becomes x's gradient as it is);
- ``torch x·w``: ``(x * w).backward(dy)`` with a per-channel weight w, PyTorch's simplest
  per-channel layer: one elementwise pass forward, dx = dy·w and dw = Σ dy·x backward,
  and no statistics;
- ``torch F.batch_norm`` and ``ours plain``: the training step of ``bench``.

A forward + backward of batch norm moves 2.5 copies' worth of memory when every revisit of
a row hits the cache (x read and y written; dy and x read and dx written) and 4 when none
does; the rest of its ratio to a copy is the no-op's, what a layer call costs in Python,
and each kernel pass's fork and join of threads. On 1 MiB tensors the no-op alone is about
one copy; see ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable
from typing import Any

import torch

from batchnorm import bench


def _steps(case: bench.Case) -> dict[str, Callable[[], Any]]:
    x = bench._input(case)
    out = torch.empty_like(x)
    xg = x.detach().requires_grad_(True)
    dy = torch.randn_like(x)
    w = torch.ones(bench._channels(case), requires_grad=True)
    if case.axis not in (-1, x.dim() - 1):
        raise ValueError(f"case {case.name}: expected a channels-last case (axis -1)")

    def no_op() -> None:
        xg.grad = None
        xg.view_as(xg).backward(dy)

    def scale() -> None:
        xg.grad = None
        w.grad = None
        (xg * w).backward(dy)

    return {
        "copy": lambda: out.copy_(x),
        "autograd no-op": no_op,
        "torch x·w": scale,
        "torch F.batch_norm": bench._torch_functional(case, "train_fwd_bwd", x),
        "ours plain": bench._ours(case, bench.VARIANTS["plain"], "train_fwd_bwd", x),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", default="A,D,B", help="comma-separated, among A, B, D")
    parser.add_argument("--rounds", type=int, default=15, help="interleaved timing rounds")
    parser.add_argument("--min-time", type=float, default=1.0, help="seconds per step")
    args = parser.parse_args()
    print("| case | step | µs | ÷ copy |\n|---|---|---|---|")
    for name in args.cases.split(","):
        case = bench.CASES[name]
        fns = _steps(case)
        times = bench._measure(fns, args.rounds, args.min_time * len(fns) / 4)
        copy = times["copy"]
        for step, ts in times.items():
            ratio = bench._ratio(ts, copy)
            print(f"| {name} | {step} | {statistics.median(ts) * 1e3:.1f} | {ratio:.2f}× |")


if __name__ == "__main__":
    main()
