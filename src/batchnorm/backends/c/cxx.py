"""The optional C++ autograd nodes of the C passes (``autograd.cpp``).

A pass that autograd records needs a node, and a ``torch.autograd.Function`` costs
Python time on every call: about 6 µs to apply, and a Python backward that the engine
calls under the GIL. ``autograd.cpp`` makes the same nodes in C++ (training and
inference with gradients; the forward and backward still run the C kernels, through
the addresses of the library ``build`` loaded), which matters on small tensors,
where that time is a good part of a step.

It is compiled against the installed PyTorch's headers with the system C++ compiler,
once per machine and PyTorch version, into the kernels' cache directory. The build
takes 10–20 s, so it runs in the background: calls made before it finishes use the
Python nodes (same kernels, same numbers) and later calls the C++ ones; a program that
ends first leaves the build to finish for the next one. No C++ compiler, a PyTorch
without headers, ``BATCHNORM_CPP=0``, or any failure leave the Python nodes in use;
``status()`` says which happened.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import os
import platform
import shlex
import subprocess
import sys
import sysconfig
import threading
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from . import toolchain

_SOURCE = Path(__file__).with_name("autograd.cpp")
_HEADERS = (Path(__file__).with_name("short_call.h"),)  # included by the source
_NAME = "_batchnorm_autograd"
_ABI_VERSION = 6

_lock = threading.Lock()
_module: ModuleType | None = None
_thread: threading.Thread | None = None
_status = "not loaded yet"
_ON_LOAD: list[Callable[[ModuleType], None]] = []


def _disabled() -> bool:
    return os.environ.get("BATCHNORM_CPP", "1").lower() in ("0", "false", "no", "off")


def _target(compiler: str) -> Path:
    versions = [torch.__version__, str(torch.version.git_version), sys.version]
    settings = " ".join([compiler, *toolchain.CXX_FLAGS, *versions, platform.machine()])
    source = b"".join(path.read_bytes() for path in (_SOURCE, *_HEADERS))  # any edit rebuilds
    key = hashlib.sha256(source + settings.encode()).hexdigest()[:16]
    return toolchain.cache_dir() / f"autograd-{key}.so"


def _spawn(compiler: str, target: Path) -> subprocess.Popen[bytes]:
    """Start compiling into a temporary file that the same shell renames onto
    ``target`` (an atomic rename: concurrent processes never see half a file). The
    shell runs in its own session and writes to a log file, so a program that exits
    before the build ends leaves it to finish, and the next program loads the result."""
    root = Path(torch.__file__).parent
    includes = [root / "include", root / "include/torch/csrc/api/include"]
    includes.append(Path(sysconfig.get_paths()["include"]))
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f"{target.stem}.{os.getpid()}.tmp")
    command = [
        compiler,
        *toolchain.CXX_FLAGS,
        f"-DTORCH_EXTENSION_NAME={_NAME}",
        "-DTORCH_API_INCLUDE_EXTENSION_H",
        *(f"-I{path}" for path in includes),
        str(_SOURCE),
        "-o",
        str(tmp),
        f"-L{root / 'lib'}",
        "-lc10",
        "-ltorch_cpu",
        "-ltorch",
        "-ltorch_python",
    ]
    tmp_, target_, log_ = (shlex.quote(str(p)) for p in (tmp, target, _log(target)))
    script = f"{shlex.join(command)} && mv -f {tmp_} {target_} && rm -f {log_}"
    script += f" || {{ rm -f {tmp_}; exit 1; }}"
    with open(_log(target), "wb") as out:
        return subprocess.Popen(
            ["/bin/sh", "-c", script],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _log(target: Path) -> Path:
    """This process's build log (per process: concurrent builds do not share one)."""
    return target.with_name(f"{target.stem}.{os.getpid()}.log")


def _import(target: Path) -> ModuleType:
    loader = importlib.machinery.ExtensionFileLoader(_NAME, str(target))
    spec = importlib.util.spec_from_file_location(_NAME, target, loader=loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    if module.abi_version() != _ABI_VERSION:
        raise ImportError("stale autograd module")
    for configure in _ON_LOAD:  # (the passes' double backward, the short call's setup)
        configure(module)
    return module


def on_load(configure: Callable[[ModuleType], None]) -> None:
    """Run ``configure(module)`` when the C++ module loads (before any pass uses it)."""
    _ON_LOAD.append(configure)


def _load(target: Path, build: subprocess.Popen[bytes] | None = None) -> None:
    """Wait for ``build`` if there is one, then import."""
    global _module, _status
    try:
        if build is not None:
            code = build.wait(timeout=600)
            if code != 0:
                log = _log(target)
                detail = log.read_text(errors="replace")[-300:]
                toolchain.record_failure(target, f"the compiler exited with {code}: {detail}")
                log.unlink(missing_ok=True)
                raise OSError(f"the compiler exited with {code}: {detail}")
        module = _import(target)
    except (OSError, ImportError, subprocess.SubprocessError) as exc:
        _status = f"build or load failed ({exc}); using the Python node"
        return
    _module = module
    _status = f"C++ autograd nodes loaded from {target}"


def _start() -> None:
    global _thread, _status
    if _disabled():
        _status = "disabled by BATCHNORM_CPP=0; using the Python node"
        return
    if sys.platform.startswith("win"):
        _status = "not built on Windows; using the Python node"
        return
    compiler = toolchain.cxx_compiler()
    if compiler is None:
        _status = "no C++ compiler found; using the Python node"
        return
    try:
        target = _target(compiler)
    except OSError as exc:
        _status = f"source not readable ({exc}); using the Python node"
        return
    if target.exists():  # built before: load now
        _load(target)
        return
    failure = toolchain.previous_failure(target)
    if failure is not None:
        _status = f"build failed before ({failure}); using the Python node"
        return
    try:
        build = _spawn(compiler, target)
    except OSError as exc:
        _status = f"build failed to start ({exc}); using the Python node"
        return
    _status = "building in the background; using the Python node until it is ready"
    _thread = threading.Thread(
        target=_load, args=(target, build), name="batchnorm-cpp-build", daemon=True
    )
    _thread.start()


def module() -> Any:
    """The C++ module when it is ready, else None; the first call starts loading it."""
    if _module is not None:
        return _module
    if _status == "not loaded yet":
        with _lock:
            if _status == "not loaded yet":
                _start()
    return _module


def wait(timeout: float | None = None) -> Any:
    """The C++ module, waiting up to ``timeout`` seconds for a background build; None
    when it is unavailable (``status()`` says why)."""
    module()
    with _lock:  # _start runs under it: the thread, if any, is started
        thread = _thread
    if thread is not None:
        thread.join(timeout)
    return _module


def _after_fork_in_child() -> None:
    """A child forked during a build has no build thread: it starts over on its next
    call (and finds the parent's result once that is written)."""
    global _lock, _thread, _status
    _lock = threading.Lock()
    if _module is None:
        _thread = None
        _status = "not loaded yet"


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def status() -> str:
    """Whether the C++ autograd nodes are in use, and why not if they are not."""
    module()
    return _status
