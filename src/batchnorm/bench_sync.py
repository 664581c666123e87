"""The cost of synchronized statistics: gloo on localhost, one thread per process.

Every process holds a whole case tensor (so the global batch is ``world`` times
the case's batch) and runs the same layer with ``synchronized=False`` and
``synchronized=True`` in interleaved rounds; every process runs the same number
of calls (calibrated on rank 0 and broadcast), so the collectives line up. The
reported time is rank 0's median per call. On a machine with fewer cores than
``world`` processes the processes also compete for the CPU: the ratio then
includes that contention, not only the collective.
"""

from __future__ import annotations

import os
import socket
import statistics
import time
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from . import bench

MODES = ("train_fwd", "train_fwd_bwd")


def _closures(case: bench.Case, mode: str, x: torch.Tensor) -> dict[str, Any]:
    fns = {}
    for label, sync in (("unsynchronized", False), ("synchronized", True)):
        layer = bench.BatchNormalization(axis=case.axis, synchronized=sync)
        layer(x[:8], training=False)
        params = [layer.gamma, layer.beta]
        fns[label] = bench._step(
            lambda t, training, m=layer: m(t, training=training), x, mode, params
        )
    return fns


def _worker(
    rank: int,
    world: int,
    port: int,
    cases: list[str],
    modes: list[str],
    rounds: int,
    min_time: float,
    queue: Any,
) -> None:
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=world,
        timeout=timedelta(seconds=120),
    )
    rows = []
    for name in cases:
        case = bench.CASES[name]
        x = bench._input(case)
        for mode in modes:
            fns = _closures(case, mode, x)
            calls = torch.zeros(len(fns), dtype=torch.int64)
            for i, fn in enumerate(fns.values()):
                fn()
                t0 = time.perf_counter()
                fn()
                once = max(time.perf_counter() - t0, 1e-6)
                calls[i] = max(1, int(min_time / rounds / once))
            dist.broadcast(calls, 0)
            times: dict[str, list[float]] = {label: [] for label in fns}
            for _ in range(rounds):
                for (label, fn), k in zip(fns.items(), calls.tolist(), strict=True):
                    dist.barrier()
                    t0 = time.perf_counter()
                    for _ in range(k):
                        fn()
                    times[label].append((time.perf_counter() - t0) / k)
            med = {label: statistics.median(v) * 1e3 for label, v in times.items()}
            rows.append((name, mode, med["unsynchronized"], med["synchronized"]))
    if rank == 0:
        queue.put(rows)
    dist.barrier()
    dist.destroy_process_group()


def run(
    cases: list[str],
    world: int = 2,
    rounds: int = 5,
    min_time: float = 1.0,
    modes: list[str] | None = None,
) -> list[str]:
    """Spawn ``world`` gloo processes timing every case of ``bench.CASES`` named in
    ``cases`` in each of ``modes`` (default ``MODES``, the training modes); return the
    table's lines."""
    modes = list(MODES if modes is None else modes)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [
        ctx.Process(target=_worker, args=(r, world, port, cases, modes, rounds, min_time, queue))
        for r in range(world)
    ]
    for p in procs:
        p.start()
    rows = queue.get(timeout=1800)
    for p in procs:
        p.join(timeout=60)
    lines = [
        f"gloo, {world} processes × 1 thread on {os.cpu_count()} cores, local batch = the "
        "case's batch on every process",
        "",
        "| case | mode | unsynchronized ms | synchronized ms | synchronized ÷ unsynchronized |",
        "|---|---|---|---|---|",
    ]
    for name, mode, plain, sync in rows:
        lines.append(f"| {name} | {mode} | {plain:.3f} | {sync:.3f} | {sync / plain:.2f}× |")
    return lines
