"""The multi-process tests' fault scenarios (run by ``dist_worker``): errors every rank
raises together, a collective that cannot complete, a peer that exits, mismatched
channels; each names the layer and leaves its variables unchanged."""

from __future__ import annotations

import os
import time

import torch

import batchnorm


def faults(rank, world):
    """Errors every rank must raise together; variables unchanged."""
    out = {}
    layer = batchnorm.BatchNormalization(synchronized=True, check_numerics=True)
    layer(torch.zeros(2, 3), training=False)
    before = [w.clone() for w in layer.weights]
    x = torch.randn(4, 3)
    if rank == 1:
        x[0, 0] = float("nan")
    try:
        layer(x, training=True)
        out["nan"] = "no error"
    except ValueError as exc:
        out["nan"] = "NaN or Inf" in str(exc)
    try:
        layer(torch.empty(0, 3), training=True)
        out["empty"] = "no error"
    except ValueError as exc:
        out["empty"] = "empty" in str(exc)
    ghost = batchnorm.BatchNormalization(synchronized=True, virtual_batch_size=2)
    ghost(torch.zeros(2, 3), training=False)
    try:
        ghost(torch.randn(4 if rank == 0 else 6, 3), training=True)
        out["ghost"] = "no error"
    except ValueError as exc:
        out["ghost"] = "same local batch size" in str(exc)
    out["unchanged"] = all(torch.equal(a, b) for a, b in zip(before, layer.weights, strict=True))
    # inference and unsynchronized layers never touch the process group: only rank 0 calls
    if rank == 0:
        layer(torch.randn(4, 3), training=False)
        batchnorm.BatchNormalization()(torch.randn(4, 3), training=True)
    out["local"] = True
    return out


def _failure(layer, call):
    """Run ``call`` (expected to raise RuntimeError): its message, whether it names
    ``layer``, how long it took, and whether every variable of ``layer`` kept its value."""
    before = [w.detach().clone() for w in layer.weights]
    start = time.monotonic()
    try:
        call()
    except RuntimeError as exc:
        return {
            "message": str(exc),
            "named": layer.name in str(exc),
            "seconds": time.monotonic() - start,
            "unchanged": all(torch.equal(a, b) for a, b in zip(before, layer.weights, strict=True)),
        }
    return {"message": "no error"}


def timeout_fault(rank, world):
    """A collective that cannot complete: rank 0 trains, rank 1 does not."""
    layer = batchnorm.BatchNormalization(synchronized=True)
    layer(torch.zeros(2, 3), training=False)
    if rank != 0:
        time.sleep(6.0)  # alive, but never joins the collective (the group's timeout is 3 s)
        return {"skipped": True}
    return _failure(layer, lambda: layer(torch.randn(4, 3), training=True))


def peer_exit(rank, world):
    """Rank 1 exits abruptly (as a crashed process does) right after the forward of a
    synchronized step; rank 0 then runs that step's backward, another training call of
    the same layer (the statistics exchange) and the first training call of a second
    layer (the 32-byte check), each of which must fail."""
    trained = batchnorm.BatchNormalization(synchronized=True, momentum=0.5, renorm=True)
    fresh = batchnorm.BatchNormalization(synchronized=True, momentum=0.5)
    for layer in (trained, fresh):
        layer(torch.zeros(2, 3), training=False)
    gen = torch.Generator().manual_seed(rank)
    x = torch.randn(4, 3, generator=gen).requires_grad_()
    y = trained(x, training=True)  # both ranks: this exchange succeeds
    if rank != 0:
        os._exit(3)  # no cleanup, no report
    out = {"backward": _failure(trained, lambda: y.sum().backward())}
    out["backward"]["no_grad"] = x.grad is None and trained.gamma.grad is None
    out["trained"] = _failure(trained, lambda: trained(torch.randn(4, 3), training=True))
    out["fresh"] = _failure(fresh, lambda: fresh(torch.randn(4, 3), training=True))
    return out


def channel_mismatch(rank, world):
    layer = batchnorm.BatchNormalization(synchronized=True)
    c = 3 if rank == 0 else 4
    layer(torch.zeros(2, c), training=False)
    try:
        layer(torch.randn(4, c), training=True)
        return {"mismatch": "no error"}
    except (RuntimeError, ValueError) as exc:
        return {"mismatch": layer.name in str(exc)}
