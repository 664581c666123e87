"""Build and load the optional C kernels (``kernels.c`` with ``kernels/*.h``) on first use.

The library is compiled once per machine with the system C compiler into the cache
directory and loaded with ctypes; it shares the OpenMP runtime PyTorch already loaded.
Compilers, flags, the cache and what a failed build leaves are ``toolchain``'s. If no
compiler is available, or ``BATCHNORM_NATIVE=0`` is set, or anything fails,
``library()`` returns None and every path runs on PyTorch operations instead (same
numbers, slower on CPU). ``status()`` says which happened.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import torch

from . import toolchain

_SOURCE = Path(__file__).with_name("kernels.c")
_HEADERS = sorted(Path(__file__).with_name("kernels").glob("*.h"))  # included by kernels.c
_ABI_VERSION = 10
_lock = threading.Lock()
_library: ctypes.CDLL | None = None
_tried = False
_status = "not loaded yet"


def _cpu_signature() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return hashlib.sha256(line.encode()).hexdigest()[:12]
    except OSError:
        pass
    return platform.processor() or "unknown"


def _build(compiler: str, flags: list[str], target: Path) -> None:
    """Compile into a temporary file renamed onto ``target``; a compiler that fails
    leaves its message for later processes (``toolchain.record_failure``)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(fd)
    try:
        subprocess.run(
            [compiler, *flags, "-o", tmp, str(_SOURCE), "-lm"],
            check=True,
            capture_output=True,
            timeout=600,  # (an instrumented build, BATCHNORM_SANITIZE, takes a minute or more)
        )
        os.replace(tmp, target)  # atomic: concurrent processes never see half a file
    except subprocess.CalledProcessError as exc:
        detail = (exc.stderr or b"").decode(errors="replace")[-300:]
        toolchain.record_failure(target, f"the compiler exited with {exc.returncode}: {detail}")
        raise
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


# Argument types of the exported passes, one letter per argument: p pointer (passed as
# an integer), n int64, d double, i int.
SIGNATURES = {
    "train_forward": "ppppnppdppdddppppppddiii",
    "train_backward": "pppppnppppi",
    "infer_forward": "ppppnppppdi",
    "infer_backward": "pppppnpppdppi",
    "stats": "pppppi",
    "affine": "pppppppi",
    "reduce": "pppppppi",
    "dx": "pppppppppi",
}
_CTYPE = {"p": ctypes.c_void_p, "n": ctypes.c_int64, "d": ctypes.c_double, "i": ctypes.c_int}


def _declare(lib: ctypes.CDLL) -> None:
    lib.bn_stream_bytes.argtypes = [ctypes.c_int64]
    lib.bn_stream_bytes.restype = ctypes.c_int64
    for sfx in ("f32", "f64", "bf16", "f16"):
        for name, letters in SIGNATURES.items():
            fn = getattr(lib, f"bn_{name}_{sfx}")
            fn.argtypes = [_CTYPE[c] for c in letters]
            fn.restype = ctypes.c_int


def _load() -> ctypes.CDLL | None:
    global _status
    if os.environ.get("BATCHNORM_NATIVE", "1").lower() in ("0", "false", "no", "off"):
        _status = "disabled by BATCHNORM_NATIVE=0; using PyTorch operations"
        return None
    if sys.platform.startswith("win"):
        _status = "not built on Windows; using PyTorch operations"
        return None
    compiler = toolchain.c_compiler()
    if compiler is None:
        _status = "no C compiler found; using PyTorch operations"
        return None
    source = b"".join(path.read_bytes() for path in (_SOURCE, *_HEADERS))  # any edit rebuilds
    flags = toolchain.c_flags()
    key = hashlib.sha256(
        source + " ".join([compiler, *flags, platform.machine(), _cpu_signature()]).encode()
    ).hexdigest()[:16]
    target = toolchain.cache_dir() / f"kernels-{key}.so"
    failure = None if target.exists() else toolchain.previous_failure(target)
    if failure is not None:
        _status = f"build failed before ({failure}); using PyTorch operations"
        return None
    try:
        if not target.exists():
            _build(compiler, flags, target)
        lib = ctypes.CDLL(str(target))
        if lib.bn_abi_version() != _ABI_VERSION:
            raise OSError("stale kernel library")
        _declare(lib)
        lib.bn_stream_bytes(stream_threshold())
    except (OSError, subprocess.SubprocessError) as exc:
        detail = getattr(exc, "stderr", b"") or b""
        _status = f"build or load failed ({exc}; {detail.decode(errors='replace')[:200]}); "
        _status += "using PyTorch operations"
        return None
    _status = f"C kernels loaded from {target}"
    return lib


def last_level_cache() -> int | None:
    """Bytes of the last-level cache CPU 0 shares with its neighbours, from sysfs (what
    ``lscpu`` reads; glibc's ``sysconf`` may report the whole package's); None if unknown."""
    best = None
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    for index in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*"):
        try:
            kind = (index / "type").read_text().strip()
            size = (index / "size").read_text().strip()
        except OSError:
            continue
        if kind == "Instruction" or not size:
            continue
        value = int(size[:-1]) * units[size[-1]] if size[-1] in units else int(size)
        best = value if best is None else max(best, value)
    return best


def stream_threshold() -> int:
    """Output bytes from which the row passes write with streaming stores
    (``kernels/stream.h``): half the last-level cache (32 MiB assumed when unknown), so a
    pass's input and output no longer both fit in it. ``BATCHNORM_STREAM_BYTES`` sets it."""
    value = os.environ.get("BATCHNORM_STREAM_BYTES")
    if value is not None:
        if not value.strip().isdigit():
            raise ValueError(f"BATCHNORM_STREAM_BYTES must be a number of bytes ≥ 0, got {value!r}")
        return int(value)
    return (last_level_cache() or 32 << 20) // 2


def library() -> ctypes.CDLL | None:
    """The loaded kernel library, building it on first call; None when unavailable."""
    global _library, _tried
    if not _tried:
        with _lock:
            if not _tried:
                _library = _load()
                _tried = True
    return _library


def status() -> str:
    """Whether the C kernels are in use, and why not if they are not."""
    library()
    return _status


GRAIN = 32768  # elements below which a pass runs on one thread (PyTorch's grain size)


def threads(numel: int | None = None) -> int:
    """Threads for a pass over ``numel`` elements: one below ``GRAIN`` (waking a team
    costs more than such a pass, most of all when the host preempts a worker), else
    PyTorch's intra-op setting."""
    if numel is not None and numel < GRAIN:
        return 1
    return torch.get_num_threads()
