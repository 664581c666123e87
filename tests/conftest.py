"""Shared test configuration: a deterministic hypothesis profile and quiet TensorFlow."""

from __future__ import annotations

import contextlib
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import pytest
import torch
from hypothesis import HealthCheck, settings

if not torch.cuda.is_available():  # Triton's interpreter runs the GPU kernels on CPU tensors
    os.environ.setdefault("TRITON_INTERPRET", "1")  # (read when the kernels are defined)
# Triton before any test module imports TensorFlow: both bundle LLVM, and loading
# Triton's after TensorFlow's aborts the process (a duplicate LLVM option).
with contextlib.suppress(ImportError):
    import triton  # noqa: F401

settings.register_profile(
    "ci",
    deadline=None,
    derandomize=True,
    max_examples=40,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,  # the backend fixture is fixed per test
    ],
    print_blob=True,
)
settings.register_profile("dev", deadline=None, max_examples=200)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


def capped(backend: str, examples: int) -> settings:
    """Hypothesis settings of a property test on ``backend``: ``examples``, or fewer when
    the backend caps them (``Backend.max_examples``: an interpreted backend's)."""
    from batchnorm import backends

    cap = backends.get(backend).max_examples
    return settings(max_examples=examples if cap is None else min(examples, cap))


def _backend_names() -> list[str]:
    """The backends that take float64 CPU tensors, which the suites using the ``backend``
    fixture compare with the float64 reference at 1e-10; the conformance suite
    (``test_conformance.py``) runs every registered backend, the GPU ones included."""
    from batchnorm import backends
    from batchnorm._layout import Geometry

    probe = torch.zeros(2, 3, dtype=torch.float64)
    geo = Geometry.of(probe, [1])
    return [n for n in backends.names() if backends.get(n).supports(probe, geo) is None]


@pytest.fixture(params=_backend_names())
def backend(request):
    """Run a test on every registered backend, forced with ``backends.use``. A backend
    that should be available here and is not fails the test, never skips it (the C
    backend only skips when ``BATCHNORM_NATIVE=0`` switches it off on purpose)."""
    from batchnorm import backends

    chosen = backends.get(request.param)
    reason = chosen.unavailable()
    if reason is not None:
        if request.param == "c" and os.environ.get("BATCHNORM_NATIVE", "1") == "0":
            pytest.skip("C kernels disabled by BATCHNORM_NATIVE=0")
        pytest.fail(f"the {request.param} backend is not available here: {reason}")
    with backends.use(request.param):
        yield request.param


@pytest.fixture(scope="session", autouse=True)
def _built_once():
    """Build (or load) the C kernels and the C++ autograd node before the first test, so
    that every test runs on what a user gets once both are built; the C++ build runs in
    the background while the C one runs."""
    from batchnorm.backends.c import build as _native
    from batchnorm.backends.c import cxx as _cxx

    _cxx.module()
    _native.library()
    _cxx.wait(timeout=600)


@pytest.fixture(params=["cpp", "python"])
def node(request, monkeypatch):
    """Run a test with the C++ autograd nodes of the C passes and again with the
    Python ones (``torch.autograd.Function``)."""
    from batchnorm.backends.c import cxx as _cxx

    if request.param == "cpp":
        if os.environ.get("BATCHNORM_CPP", "1") == "0":
            pytest.skip("C++ node disabled by BATCHNORM_CPP=0")
        if _cxx.wait() is None:  # a missing compiler must not pass silently
            pytest.fail(f"the C++ autograd node did not build here: {_cxx.status()}")
    else:
        from batchnorm.backends import SHORT

        monkeypatch.setattr(_cxx, "_module", None)
        monkeypatch.setattr(SHORT, "infer", None)  # the C++ module's short call too
    return request.param


@pytest.fixture(autouse=True)
def _small_inputs_on_all_threads(request, monkeypatch):
    """The kernels run inputs below ``_native.GRAIN`` elements on one thread; most tests
    use small inputs, so the grain is lowered to keep the multi-threaded splits under
    test. Tests marked ``default_grain`` keep the library's rule."""
    if request.node.get_closest_marker("default_grain") is None:
        from batchnorm.backends.c import build as _native

        monkeypatch.setattr(_native, "GRAIN", 0)


@pytest.fixture(autouse=True)
def _fresh_state():
    """Every test starts with fresh default layer names and a fixed torch seed."""
    import batchnorm

    batchnorm.clear_session()
    torch.manual_seed(0)
    yield


@pytest.fixture
def triton_forced():
    """The Triton backend forced for one test (it fails, never skips, when unavailable)."""
    from batchnorm import backends

    reason = backends.get("triton").unavailable()
    if reason is not None:
        pytest.fail(f"the triton backend is not available here: {reason}")
    with backends.use("triton"):
        yield


@pytest.fixture
def triton_tiles(request):
    """Force the Triton kernels' tile sizes and splits (``launch.FORCE``) for one test."""
    from batchnorm.backends.triton import launch

    launch.FORCE.update(request.param)
    yield request.param
    launch.FORCE.clear()
