"""Synchronized statistics across processes (gloo on localhost, 2 and 3 processes),
against single-process layers that hold the concatenated global batch."""

from __future__ import annotations

import socket
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


def launch(world: int, tasks: list, timeout: float = 20.0, wait: float = 120.0) -> dict:
    """Run ``tasks`` on ``world`` processes; return {rank: {task: result}}."""
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
    try:
        for _ in range(world):
            rank, res = queue.get(timeout=wait)
            results[rank] = res
    finally:
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
    for rank, res in results.items():
        for key, value in res.items():
            assert "error" not in value, f"rank {rank}, {key}:\n{value['error']}"
    return results


SCENARIOS = list(dist_worker.SCENARIOS)


@pytest.fixture(scope="module")
def two_processes():
    tasks = [("scenario", name) for name in SCENARIOS]
    tasks += [("per_example_adjustment", None), ("ddp_training", None), ("faults", None)]
    tasks += [("compiled", None)]
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
    assert outcome["timeout"] is True and outcome["unchanged"] is True, outcome
    assert 2.5 <= outcome["seconds"] <= 5.5, outcome  # the group's 3 s timeout, not a hang


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
