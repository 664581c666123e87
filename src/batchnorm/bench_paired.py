"""Paired timing (``python -m batchnorm bench --paired``): ours against
``F.batch_norm`` alone, to tell parity from a difference."""

from __future__ import annotations

import gc
import random
import statistics

import torch

from .bench import CASES, VARIANTS, _input, _measure, _ours, _sync, _torch_functional

PAIRED_VARIANTS = ("plain", "float16", "bfloat16")  # the variants --paired compares


def paired(
    cases: list[str],
    modes: list[str],
    variants: list[str],
    rounds: int = 41,
    min_time: float = 10.0,
    device: str = "cpu",
) -> list[str]:
    """Ours against ``F.batch_norm`` alone, to tell parity from a difference: for each
    case, mode and dtype (``plain`` is float32) the two run in ``rounds`` interleaved
    rounds (``min_time`` seconds each in all); the row gives the median over rounds of
    ours ÷ torch within a round, a bootstrap 95 % confidence interval of that median
    (2,000 resamples of the rounds) and how many rounds ours was faster. Returns the
    table's lines (also printed)."""
    sync = _sync(device)
    resample = random.Random(0)
    lines = [
        "| case | mode | dtype | ours ÷ torch, median | 95 % interval | rounds ours faster |",
        "|---|---|---|---|---|---|",
    ]
    print("\n".join(lines), flush=True)
    for case_name in cases:
        case = CASES[case_name]
        for mode in modes:
            for name in variants:
                variant = VARIANTS[name]
                dtype = variant.get("dtype", torch.float32)
                x = _input(case, dtype, device)
                fns = {
                    "ours": _ours(case, variant, mode, x),
                    "torch": _torch_functional(case, mode, x),
                }
                times = _measure(fns, rounds, min_time, sync)
                ratios = [a / b for a, b in zip(times["ours"], times["torch"], strict=True)]
                medians = sorted(
                    statistics.median(resample.choices(ratios, k=len(ratios))) for _ in range(2000)
                )
                faster = sum(r < 1 for r in ratios)
                lines.append(
                    f"| {case_name} | {mode} | {str(dtype).removeprefix('torch.')} | "
                    f"{statistics.median(ratios):.3f}× | {medians[50]:.3f}–{medians[1949]:.3f} | "
                    f"{faster}/{len(ratios)} |"
                )
                print(lines[-1], flush=True)
                gc.collect()
    return lines
