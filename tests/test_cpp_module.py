"""The C++ module (``backends/c/autograd.cpp`` with ``short_call.h``): its status, how it
is built (in the background on first use; training works without it, disabled or
unbuildable), and the layer's short inference call it makes, which takes exactly the
calls ``shortcut.call`` would."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import reference
from batchnorm.backends.c import build as _native
from batchnorm.backends.c import cxx as _cxx
from helpers import CPP_NAME, weighted_layer


def test_cpp_node_status_is_reported():
    assert isinstance(_cxx.status(), str) and _cxx.status()


def _run(code: str, env: dict[str, str], tmp_path: Path) -> str:
    """``code`` in a fresh interpreter with its own cache directory holding this
    machine's C kernels (so only the C++ node is built there)."""
    cache = tmp_path / "cache"
    cache.mkdir()
    kernels = Path(_native._status.removeprefix("C kernels loaded from "))
    if kernels.exists():
        shutil.copy(kernels, cache / kernels.name)
    full = {**os.environ, "BATCHNORM_CACHE_DIR": str(cache), "OMP_NUM_THREADS": "1", **env}
    result = subprocess.run(
        [sys.executable, "-c", code], env=full, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


STEP = """
import torch, batchnorm
from batchnorm.backends.c import cxx as _cxx
layer = batchnorm.BatchNormalization()
x = torch.randn(8, 3, requires_grad=True)
y = layer(x, training=True)
y.square().sum().backward()
ok = bool(torch.isfinite(x.grad).all()) and float(x.grad.abs().sum()) > 0
print(y.grad_fn.name(), ok, _cxx.status().split(";")[0], sep="|")
"""


@pytest.mark.parametrize("case", ["disabled", "no-compiler"])
def test_training_works_without_the_cpp_node(case, tmp_path):
    """``BATCHNORM_CPP=0`` or a compiler that fails: the Python node trains, and the
    status says why."""
    env = {"BATCHNORM_CPP": "0"} if case == "disabled" else {"CXX": "false"}
    if case == "no-compiler" and shutil.which("false") is None:
        pytest.skip("no `false` command to stand in for a failing compiler")
    code = STEP.replace("print(", "_cxx.wait()\nprint(")  # the build's outcome
    name, ok, status = _run(code, env, tmp_path).strip().split("|", 2)
    assert name == "NativeTrainNormBackward" and ok == "True"
    expected = "disabled by BATCHNORM_CPP=0" if case == "disabled" else "build or load failed"
    assert status.startswith(expected), status


@pytest.mark.skipif(os.environ.get("BATCHNORM_CPP", "1") == "0", reason="C++ node disabled")
def test_first_build_runs_in_the_background(tmp_path):
    """The first training call does not wait for the C++ build: it takes the Python node
    while the build runs; once ``wait()`` returns, calls take the C++ node."""
    if _cxx.wait() is None:
        pytest.fail(f"the C++ autograd node did not build here: {_cxx.status()}")
    code = STEP + "_cxx.wait(); " + STEP.split("import cxx as _cxx")[1]
    first, second = (line.split("|", 2) for line in _run(code, {}, tmp_path).splitlines())
    assert first[:2] == ["NativeTrainNormBackward", "True"]
    assert first[2].startswith("building in the background")
    assert second[:2] == [CPP_NAME, "True"]
    assert second[2].startswith("C++ autograd nodes loaded")


def _eligibility_cases():
    """(name, change to a built float32 layer and input, whether the C++ short call takes
    the call): every reason `shortcut.call` has to leave a call to the general path."""

    def hook(layer, x):
        layer.register_forward_hook(lambda *a: None)
        return x, {"training": False}

    def global_hook(layer, x):
        handle = torch.nn.modules.module.register_module_forward_pre_hook(lambda *a: None)
        return x, {"training": False}, handle

    def mask(layer, x):
        x._keras_mask = torch.ones(x.shape[0], dtype=torch.bool)
        return x, {"training": False}

    def float64_variables(layer, x):
        layer.double()
        return x, {"training": False}

    def strided(layer, x):
        return x.t().contiguous().t(), {"training": False}

    def needs_grad(layer, x):  # γ and β require a gradient: autograd records the call
        torch.set_grad_enabled(True)
        return x, {"training": False}

    def frozen_training(layer, x):
        layer.trainable = False
        return x, {"training": True}

    def eval_mode(layer, x):
        layer.eval()
        return x, {}

    def losses(layer, x):
        layer._call_losses.append(torch.zeros(()))
        return x, {"training": False}

    return [
        ("inference", lambda layer, x: (x, {"training": False}), True),
        ("eval-mode", eval_mode, True),
        ("frozen-training", frozen_training, True),
        ("training", lambda layer, x: (x, {"training": True}), False),
        ("train-mode", lambda layer, x: (x, {}), False),
        ("training-not-bool", lambda layer, x: (x, {"training": 1}), False),
        ("other-kwarg", lambda layer, x: (x, {"training": False, "mask": None}), False),
        ("layer-hook", hook, False),
        ("global-hook", global_hook, False),
        ("mask", mask, False),
        ("float64-variables", float64_variables, False),
        ("layout-without-entry", strided, False),
        ("needs-grad", needs_grad, False),
        ("losses", losses, False),
    ]


@pytest.mark.parametrize("case", _eligibility_cases(), ids=lambda c: c[0])
def test_cpp_short_call_takes_exactly_the_eligible_inference_calls(case):
    """``short_infer`` (the C++ module's inference short call, tried first by
    ``__call__``) returns y exactly for the calls it may take and None for every other
    one; what it returns, and what the layer returns either way, matches float64."""
    if os.environ.get("BATCHNORM_CPP", "1") == "0":
        pytest.skip("C++ node disabled by BATCHNORM_CPP=0")
    module = _cxx.wait()
    if module is None:
        pytest.fail(f"the C++ autograd node did not build here: {_cxx.status()}")
    name, change, taken = case
    rng = np.random.default_rng(8)
    layer = weighted_layer((48, 20), rng)
    x = torch.tensor(rng.normal(2.0, 3.0, (48, 20)), dtype=torch.float32)
    with torch.no_grad():
        for _ in range(2):  # the layout's entry and its C++ kernels now exist
            layer(x, training=False)
    grad = torch.is_grad_enabled()
    torch.set_grad_enabled(False)  # inference as usually run; "needs-grad" turns it on
    out = change(layer, x)
    x, kwargs = out[0], out[1]
    state = reference.state_of(layer)
    ref = reference.inference(x.detach().double().numpy(), [1], state, layer.epsilon)
    try:
        y = module.short_infer(layer, x, kwargs)
        assert (y is not None) == taken
        if y is not None:
            assert y.grad_fn is None
            np.testing.assert_allclose(y.double().numpy(), ref, rtol=1e-5, atol=1e-5)
        if name not in ("training", "train-mode", "other-kwarg", "training-not-bool"):
            y = layer(x, **kwargs)
            assert (y.grad_fn is not None) == (name == "needs-grad")
            np.testing.assert_allclose(y.detach().double().numpy(), ref, rtol=1e-5, atol=1e-5)
    finally:
        torch.set_grad_enabled(grad)
        if len(out) > 2:
            out[2].remove()
