"""Worker processes for the multi-process tests (gloo on localhost).

Each scenario builds the same global batch on every rank from a seed, gives
each rank its slice, runs a synchronized layer on the slice and compares with
a single-process layer run on the whole batch: outputs and dx (this rank's
slice), dγ and dβ (summed over ranks), and every moving statistic.
"""

from __future__ import annotations

import contextlib
import os
import traceback
import zlib
from datetime import timedelta

import torch
import torch.distributed as dist

import batchnorm
from dist_faults import channel_mismatch, faults, peer_exit, timeout_fault

SCENARIOS = {
    # name: (layer config, input shape of one example, local batch sizes per world size)
    "plain-2d": ({"momentum": 0.5}, (5,), {2: [6, 10], 3: [4, 7, 5]}),
    "plain-nhwc": ({"momentum": 0.5}, (3, 4, 5), {2: [4, 3], 3: [2, 3, 4]}),
    "nchw-bessel": (
        {"axis": 1, "momentum": 0.7, "unbiased_moving_variance": True},
        (3, 4, 2),
        {2: [5, 3], 3: [2, 2, 3]},
    ),
    "multi-axis": ({"axis": [1, 3], "momentum": 0.5}, (3, 2, 4), {2: [4, 6], 3: [3, 3, 2]}),
    "renorm": (
        {
            "renorm": True,
            "renorm_clipping": {"rmax": 1.5, "rmin": 0.5, "dmax": 0.5},
            "momentum": 0.6,
            "renorm_momentum": 0.7,
        },
        (4,),
        {2: [8, 5], 3: [4, 6, 3]},
    ),
    "adjustment": ({"adjustment": "per-channel", "momentum": 0.5}, (6,), {2: [5, 7], 3: [4, 4, 4]}),
    "mask": ({"mask": True, "momentum": 0.5}, (5, 3), {2: [4, 6], 3: [3, 4, 2]}),
    "empty-rank": ({"momentum": 0.5}, (4,), {2: [0, 9], 3: [5, 0, 6]}),
    "float32-nchw": (
        {"axis": 1, "momentum": 0.5, "dtype": torch.float32},
        (4, 5, 6),
        {2: [6, 3], 3: [3, 2, 4]},
    ),
    "float32-fused-rule": (
        {
            "axis": 1,
            "momentum": 0.5,
            "unbiased_moving_variance": True,
            "dtype": torch.float32,
            "reference_fused": True,
        },
        (4, 5, 6),
        {2: [6, 3], 3: [3, 2, 4]},
    ),
    "float32-renorm-multi-axis": (
        {"axis": [1, 2], "renorm": True, "renorm_momentum": 0.5, "dtype": torch.float32},
        (3, 2, 5),
        {2: [5, 4], 3: [2, 4, 3]},
    ),
    "ghost-strided": ({"virtual_batch_size": 2, "momentum": 0.5}, (3,), {2: [6, 6], 3: [4, 4, 4]}),
    "ghost-contiguous": (
        {"virtual_batch_size": 3, "ghost_grouping": "contiguous", "momentum": 0.5},
        (2, 3),
        {2: [6, 6], 3: [3, 3, 3]},
    ),
    "ghost-renorm": (
        {"virtual_batch_size": 2, "renorm": True, "axis": 1},
        (3, 4),
        {2: [4, 4], 3: [2, 2, 2]},
    ),
}


def _adjustment(shape):
    g = torch.Generator().manual_seed(7)
    c = shape[-1]
    return (
        0.9 + 0.2 * torch.rand(c, generator=g, dtype=torch.float64),
        0.1 * torch.randn(c, generator=g, dtype=torch.float64),
    )


def _reference_order(sizes, vbs, contiguous):
    """Permutation of the concatenated batch that makes the single-process layer's
    ghost batches the unions of the ranks' local ghost batches."""
    starts = [sum(sizes[:r]) for r in range(len(sizes))]
    if vbs is None or not contiguous:
        return list(range(sum(sizes)))  # strided grouping composes across ranks as it is
    groups = sizes[0] // vbs
    return [
        starts[r] + g * vbs + i
        for g in range(groups)
        for r in range(len(sizes))
        for i in range(vbs)
    ]


TRITON_SCENARIOS = ["float32-nchw", "float32-renorm-multi-axis"]  # (it takes no float64)


def scenario_triton(name, rank, world):
    """A float32 scenario with the synchronized layer forced onto the Triton backend (its
    interpreter on CPU tensors without a GPU): the shared synchronization code over its
    pieces; the reference layer runs the default backend."""
    return scenario(name, rank, world, backend="triton")


def scenario(name, rank, world, backend=None):
    config, example, batches = SCENARIOS[name]
    config = dict(config)
    dtype = config.pop("dtype", torch.float64)
    reference_fused = config.pop("reference_fused", False)
    sizes = batches[world]
    total = sum(sizes)
    g = torch.Generator().manual_seed(zlib.crc32(name.encode()))
    x_all = (torch.randn((total, *example), generator=g, dtype=torch.float64) * 2 + 1).to(dtype)
    dy_all = torch.randn((total, *example), generator=g, dtype=torch.float64).to(dtype)
    mask_all = None
    if config.pop("mask", False):
        mask_all = torch.rand((total, *example[:-1]), generator=g) < 0.7
    adjust = config.pop("adjustment", None)
    vbs = config.get("virtual_batch_size")
    contiguous = config.get("ghost_grouping") == "contiguous"
    start = sum(sizes[:rank])
    local = slice(start, start + sizes[rank])

    def make(sync, x_shape):
        cfg = dict(config)
        if not sync and reference_fused:  # TF's fused rule: Bessel-corrected moving variance
            cfg.pop("unbiased_moving_variance")
            cfg["fused"] = True
        elif not sync:  # a synchronized layer follows TF's non-fused rules
            cfg["fused"] = False
        if vbs is not None and not sync:
            cfg["virtual_batch_size"] = vbs * world
        if adjust == "per-channel":
            a = _adjustment(x_shape)
            cfg["adjustment"] = lambda s: a
        layer = batchnorm.BatchNormalization(synchronized=sync, **cfg)
        layer(
            torch.zeros((2 * (vbs or 1) * (world if not sync else 1), *example), dtype=dtype),
            training=False,
        )
        gen = torch.Generator().manual_seed(3)
        layer.set_weights(
            [0.5 + torch.rand(w.shape, generator=gen, dtype=torch.float64) for w in layer.weights]
        )
        return layer

    errors = {}
    sync_layer = make(True, x_all.shape)
    ref_layer = make(False, x_all.shape)
    order = _reference_order(sizes, vbs, contiguous)
    inverse = torch.argsort(torch.tensor(order))
    xr = x_all[order].clone().requires_grad_()
    kwargs = {"mask": mask_all[order]} if mask_all is not None else {}
    y_ref = ref_layer(xr, training=True, **kwargs)
    (y_ref * dy_all[order]).sum().backward()
    xl = x_all[local].clone().requires_grad_()
    kwargs = {"mask": mask_all[local]} if mask_all is not None else {}
    with contextlib.nullcontext() if backend is None else batchnorm.backends.use(backend):
        y = sync_layer(xl, training=True, **kwargs)
    (y * dy_all[local]).sum().backward()
    errors["output"] = relative(y.detach(), y_ref.detach()[inverse][local])
    errors["dx"] = relative(xl.grad, xr.grad[inverse][local])
    for pname in ("gamma", "beta"):
        grad = getattr(sync_layer, pname).grad.clone()
        dist.all_reduce(grad)
        errors[f"d{pname}"] = relative(grad, getattr(ref_layer, pname).grad)
    names = ["moving_mean", "moving_variance"]
    if config.get("renorm"):
        names += ["moving_stddev", "renorm_mean", "renorm_stddev"]
    errors["weights"] = max(relative(getattr(sync_layer, n), getattr(ref_layer, n)) for n in names)
    return errors


def relative(value, reference):
    """max |value − reference| / max(1, max |reference|) (DESIGN.md's error metric)."""
    if reference.numel() == 0:
        return 0.0
    scale = max(1.0, float(reference.abs().max()))
    return float((value.double() - reference.double()).abs().max()) / scale


def per_example_adjustment(rank, world):
    """Equal shards: the per-example jitter depends on the local row index, so compare
    with a reference that applies each rank's jitter to its own rows."""
    torch.manual_seed(0)
    sizes = [4] * world
    x_all = torch.randn(sum(sizes), 3, dtype=torch.float64)
    dy_all = torch.randn(sum(sizes), 3, dtype=torch.float64)
    s_local = 1 + 0.1 * torch.arange(4, dtype=torch.float64).reshape(-1, 1)
    b_local = torch.full((4, 3), 0.05, dtype=torch.float64)
    sync = batchnorm.BatchNormalization(synchronized=True, adjustment=lambda s: (s_local, b_local))
    ref = batchnorm.BatchNormalization(
        adjustment=lambda s: (s_local.repeat(world, 1), b_local.repeat(world, 1))
    )
    for layer in (sync, ref):
        layer(torch.zeros(4, 3, dtype=torch.float64), training=False)
    local = slice(4 * rank, 4 * rank + 4)
    xr = x_all.clone().requires_grad_()
    (ref(xr, training=True) * dy_all).sum().backward()
    xl = x_all[local].clone().requires_grad_()
    y = sync(xl, training=True)
    (y * dy_all[local]).sum().backward()
    dgamma = sync.gamma.grad.clone()
    dist.all_reduce(dgamma)
    with torch.no_grad():
        y_ref = ref(x_all, training=False)  # moving statistics now equal: compare inference
    return {
        "dx": float((xl.grad - xr.grad[local]).abs().max()),
        "dgamma": float((dgamma - ref.gamma.grad).abs().max()),
        "weights": float((sync.moving_variance - ref.moving_variance).abs().max()),
        "inference": float((sync(x_all, training=False) - y_ref).detach().abs().max()),
    }


def ddp_training(rank, world):
    """A small model in DistributedDataParallel: identical parameters and statistics."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(6, 8),
        batchnorm.BatchNormalization(momentum=0.5),
        torch.nn.ReLU(),
        torch.nn.Linear(8, 2),
    )
    model(torch.zeros(2, 6))
    batchnorm.convert_sync_batchnorm(model)
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.1)
    g = torch.Generator().manual_seed(100 + rank)
    for _ in range(4):
        x = torch.randn(5 + rank, 6, generator=g)
        loss = ddp(x).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    state = torch.cat(
        [t.detach().reshape(-1) for t in model.state_dict().values() if isinstance(t, torch.Tensor)]
    )
    gathered = [torch.empty_like(state) for _ in range(world)]
    dist.all_gather(gathered, state)
    return {"spread": max(float((s - gathered[0]).abs().max()) for s in gathered)}


def compiled(rank, world):
    """torch.compile(fullgraph=True) of a synchronized renorm layer: one graph (the
    collective is a traceable functional collective), numbers of the global batch."""
    sizes = [5, 3, 4][:world]
    g = torch.Generator().manual_seed(11)
    x_all = torch.randn(sum(sizes), 3, 4, 2, generator=g) * 3 + 2
    dy_all = torch.randn(sum(sizes), 3, 4, 2, generator=g)
    cfg = {"axis": 1, "renorm": True, "renorm_clipping": {"rmax": 2.0}, "momentum": 0.5}
    sync = batchnorm.BatchNormalization(synchronized=True, **cfg)
    ref = batchnorm.BatchNormalization(fused=False, **cfg)
    for layer in (sync, ref):
        layer(torch.zeros(2, 3, 4, 2), training=False)
    start = sum(sizes[:rank])
    local = slice(start, start + sizes[rank])
    step = torch.compile(lambda t: sync(t, training=True), fullgraph=True)
    errors = {}
    for i in range(2):
        xl = x_all[local].clone().requires_grad_()
        y = step(xl)
        (y * dy_all[local]).sum().backward()
        xr = x_all.clone().requires_grad_()
        y_ref = ref(xr, training=True)
        (y_ref * dy_all).sum().backward()
        errors[f"output{i}"] = relative(y.detach(), y_ref.detach()[local])
        errors[f"dx{i}"] = relative(xl.grad, xr.grad[local])
    names = ["moving_mean", "moving_variance", "renorm_mean", "renorm_stddev"]
    errors["weights"] = max(relative(getattr(sync, n), getattr(ref, n)) for n in names)
    return errors


TASKS = {
    "scenario": scenario,
    "scenario_triton": scenario_triton,
    "per_example_adjustment": per_example_adjustment,
    "ddp_training": ddp_training,
    "compiled": compiled,
    "faults": faults,
    "timeout_fault": timeout_fault,
    "peer_exit": peer_exit,
    "channel_mismatch": channel_mismatch,
}


def run(rank, world, port, tasks, timeout, queue):
    """Entry point of one process: run ``tasks`` [(task, arg or None)], report results."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    results = {}
    try:
        dist.init_process_group(
            "gloo",
            init_method=f"tcp://127.0.0.1:{port}",
            rank=rank,
            world_size=world,
            timeout=timedelta(seconds=timeout),
        )
        for task, arg in tasks:
            key = f"{task}:{arg}" if arg else task
            try:
                results[key] = TASKS[task](arg, rank, world) if arg else TASKS[task](rank, world)
            except Exception:
                results[key] = {"error": traceback.format_exc()}
    except Exception:
        results["init"] = {"error": traceback.format_exc()}
    finally:
        queue.put((rank, results))
        if dist.is_initialized():
            with contextlib.suppress(Exception):  # best effort at exit
                dist.destroy_process_group()
