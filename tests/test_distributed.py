"""Synchronized statistics across processes (gloo on localhost, 2 and 3 processes),
against single-process layers that hold the concatenated global batch."""

from __future__ import annotations

import socket
import time
import warnings

import pytest
import torch
import torch.multiprocessing as mp

import batchnorm
import dist_worker

TOL = 1e-5


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(
    world: int,
    tasks: list,
    timeout: float = 20.0,
    wait: float = 120.0,
    exits: dict[int, int] | None = None,
) -> dict:
    """Run ``tasks`` on ``world`` processes; return {rank: {task: result}}. ``exits``
    maps the ranks that exit abruptly (without reporting) to their exit codes."""
    exits = exits or {}
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = free_port()
    procs = [
        ctx.Process(target=dist_worker.run, args=(r, world, port, tasks, timeout, queue))
        for r in range(world)
    ]
    for p in procs:
        p.start()
    results = {}
    deadline = time.monotonic() + wait
    try:
        while not set(range(world)) - set(exits) <= set(results):
            rank, res = queue.get(timeout=max(deadline - time.monotonic(), 0.1))
            results[rank] = res
    finally:
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
    for rank, res in results.items():
        for key, value in res.items():
            assert "error" not in value, f"rank {rank}, {key}:\n{value['error']}"
    assert {r: procs[r].exitcode for r in exits} == exits
    return results


SCENARIOS = list(dist_worker.SCENARIOS)


@pytest.fixture(scope="module")
def two_processes():
    tasks = [("scenario", name) for name in SCENARIOS]
    tasks += [("per_example_adjustment", None), ("ddp_training", None), ("faults", None)]
    tasks += [("compiled", None)]
    tasks += [("scenario_triton", name) for name in dist_worker.TRITON_SCENARIOS]
    return launch(2, tasks)


@pytest.fixture(scope="module")
def three_processes():
    tasks = [("scenario", name) for name in SCENARIOS] + [("per_example_adjustment", None)]
    return launch(3, tasks)


@pytest.mark.parametrize("name", SCENARIOS)
def test_two_processes_match_one_process_with_the_global_batch(two_processes, name):
    for rank, res in two_processes.items():
        errors = res[f"scenario:{name}"]
        assert max(errors.values()) <= TOL, (rank, errors)


@pytest.mark.parametrize("name", SCENARIOS)
def test_three_processes_match_one_process_with_the_global_batch(three_processes, name):
    for rank, res in three_processes.items():
        errors = res[f"scenario:{name}"]
        assert max(errors.values()) <= TOL, (rank, errors)


@pytest.mark.parametrize("name", dist_worker.TRITON_SCENARIOS)
def test_two_processes_on_the_triton_backend_match_the_global_batch(two_processes, name):
    """The Triton backend's pieces (moments, normalize, grad sums, input grad) under the
    shared synchronization code, forced in each of two gloo processes (Triton's
    interpreter on CPU tensors without a GPU)."""
    for rank, res in two_processes.items():
        errors = res[f"scenario_triton:{name}"]
        assert max(errors.values()) <= TOL, (rank, errors)


def test_per_example_adjustment(two_processes, three_processes):
    for results in (two_processes, three_processes):
        for rank, res in results.items():
            assert max(res["per_example_adjustment"].values()) <= TOL, (rank, res)


def test_ddp_training_keeps_every_rank_identical(two_processes):
    for res in two_processes.values():
        assert res["ddp_training"]["spread"] == 0.0


def test_compiled_fullgraph_matches_the_global_batch(two_processes):
    for rank, res in two_processes.items():
        errors = res["compiled"]
        assert max(errors.values()) <= 5e-5, (rank, errors)


def test_global_errors_are_raised_by_every_rank_and_change_nothing(two_processes):
    for res in two_processes.values():
        assert res["faults"] == {
            "nan": True,
            "empty": True,
            "ghost": True,
            "unchanged": True,
            "local": True,
        }


def test_a_collective_that_cannot_complete_raises_naming_the_layer():
    results = launch(2, [("timeout_fault", None)], timeout=3.0)
    outcome = results[0]["timeout_fault"]
    assert outcome["named"] is True and outcome["unchanged"] is True, outcome
    assert 2.5 <= outcome["seconds"] <= 5.5, outcome  # the group's 3 s timeout, not a hang
    message = outcome["message"]
    assert "did not reach this exchange within the process group's timeout" in message
    assert "same channels" not in message


PEER_FAILED = "a peer process of the group failed or exited"


def test_a_peer_that_exits_is_named_and_nothing_changes():
    """Rank 1 exits after a forward; rank 0's backward and two training calls fail at
    once (well within the group's 10 s timeout) saying a peer failed, not blaming the
    channels, and leave the layers' variables as they were."""
    results = launch(2, [("peer_exit", None)], timeout=10.0, wait=60.0, exits={1: 3})
    outcome = results[0]["peer_exit"]
    expected = {
        "backward": "summing gradient statistics",
        "trained": "exchanging batch statistics",
        "fresh": "exchanging batch statistics",
    }
    for call, what in expected.items():
        failure = outcome[call]
        message = failure["message"]
        assert what in message and PEER_FAILED in message, (call, message)
        assert "same channels" not in message and "timeout" not in message, (call, message)
        assert failure["named"] is True and failure["unchanged"] is True, (call, failure)
        assert failure["seconds"] < 5.0, (call, failure)
    assert "no gradient was computed" in outcome["backward"]["message"]
    assert outcome["backward"]["no_grad"] is True
    assert "no variable was changed" in outcome["fresh"]["message"]


@pytest.mark.parametrize(
    ("error", "cause"),
    [
        (RuntimeError("[pair.cc:553] Connection closed by peer [127.0.0.1]:34456."), PEER_FAILED),
        (RuntimeError("Read error [127.0.0.1]:47289: Connection reset by peer."), PEER_FAILED),
        (
            RuntimeError("NCCL error: remote process exited or there was a network error"),
            PEER_FAILED,
        ),
        (torch.distributed.DistNetworkError("Broken connection"), PEER_FAILED),
        (RuntimeError("Timed out waiting 3000ms for recv operation to complete"), "timeout"),
        (RuntimeError("Application timeout caused pair closure"), "timeout"),
        (
            RuntimeError("Watchdog caught collective operation timeout: WorkNCCL(ALLGATHER)"),
            "timeout",
        ),
        (RuntimeError("op.preamble.length <= op.nbytes. 8 vs 4. A collective mismatch?"), None),
    ],
)
def test_collective_errors_are_told_apart(error, cause):
    """Wording of torch's gloo and NCCL errors: a failed group is named as such, other
    errors keep the advice on mismatched calls."""
    found = batchnorm.distributed._group_failure(error)
    if cause is None:
        assert found is None
    else:
        assert found is not None and cause in found


def test_mismatched_channels_raise_a_clear_error():
    results = launch(2, [("channel_mismatch", None)], timeout=3.0)
    for res in results.values():
        assert res["channel_mismatch"]["mismatch"] is True


def test_without_a_process_group_it_runs_locally_with_one_warning(monkeypatch):
    monkeypatch.setattr(batchnorm.distributed, "_WARNED", [False])
    layer = batchnorm.BatchNormalization(synchronized=True, momentum=0.5)
    ref = batchnorm.BatchNormalization(momentum=0.5)
    x = torch.randn(8, 3)
    with pytest.warns(RuntimeWarning, match="without an initialized"):
        y = layer(x, training=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        layer(x, training=True)
    assert torch.allclose(y, ref(x, training=True))


def test_convert_sync_batchnorm_keeps_weights_and_converts_torch_modules():
    model = torch.nn.Sequential(
        torch.nn.Linear(4, 3), batchnorm.BatchNormalization(), torch.nn.BatchNorm1d(3)
    )
    model(torch.randn(5, 4))
    before = model[1].moving_mean.clone()
    converted = batchnorm.convert_sync_batchnorm(model, torch_batchnorm=True)
    assert converted[1].synchronized and torch.equal(converted[1].moving_mean, before)
    assert isinstance(converted[2], batchnorm.BatchNormalization) and converted[2].synchronized
    with pytest.raises(ValueError, match="fused=True"):
        batchnorm.BatchNormalization(synchronized=True, fused=True)


@pytest.mark.parametrize("built", [True, False])
def test_converted_layers_follow_the_rules_of_synchronized_construction(built):
    """A 4-D axis=1 layer on TF's rule feeds the Bessel-corrected variance; converted to
    synchronized statistics it feeds the biased one, as ``synchronized=True`` at
    construction does (TF's synchronized layer is non-fused). Against float64."""
    layer = batchnorm.BatchNormalization(axis=1, momentum=0.0)
    if built:
        layer.build((None, 3, 4, 4))
        assert layer._bessel
    batchnorm.convert_sync_batchnorm(layer)
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64) * 2 + 1
    with warnings.catch_warnings():  # (no process group: local statistics, warned once)
        warnings.simplefilter("ignore", RuntimeWarning)
        layer(x.float(), training=True)
    biased = x.var(dim=(0, 2, 3), unbiased=False)
    torch.testing.assert_close(layer.moving_variance.double(), biased, rtol=1e-5, atol=1e-6)
    assert layer.get_config()["fused"] is False
    kept = batchnorm.from_torch(torch.nn.BatchNorm2d(3, momentum=1.0))  # PyTorch's estimator
    batchnorm.convert_sync_batchnorm(kept)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        kept(x.float(), training=True)
    unbiased = x.var(dim=(0, 2, 3), unbiased=True)
    torch.testing.assert_close(kept.moving_variance.double(), unbiased, rtol=1e-5, atol=1e-6)
    fused = torch.nn.Sequential(
        batchnorm.BatchNormalization(axis=1, fused=True, name="f"), batchnorm.BatchNormalization()
    )
    with pytest.raises(ValueError, match=r"\['f'\] have fused=True.*nothing was changed"):
        batchnorm.convert_sync_batchnorm(fused)
    assert not fused[1].synchronized
