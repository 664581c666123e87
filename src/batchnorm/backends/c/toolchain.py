"""How the native code is built, in one place: compilers, flags, the cache directory and
what a failed build leaves.

- **Cache**: ``$BATCHNORM_CACHE_DIR``, else ``$XDG_CACHE_HOME/batchnorm``, else
  ``~/.cache/batchnorm``. Each library's file name carries a hash of everything that
  shapes it (sources, compiler, flags, machine; the C kernels also the CPU's feature
  flags, the C++ nodes PyTorch's and Python's versions), so a change builds a new file
  and an old one is never loaded by mistake.
- **C kernels** (``kernels.c`` with ``kernels/*.h``): ``$CC``, else ``cc``, ``gcc``,
  ``clang``; flags ``C_FLAGS`` plus, on x86-64, ``-march=native
  -mprefer-vector-width=512`` (built on the machine that runs them), plus the
  sanitizers' when ``BATCHNORM_SANITIZE`` asks for them; linked with ``-lm``; file
  ``kernels-<hash>.so``.
- **C++ autograd nodes** (``autograd.cpp``): ``$CXX``, else ``c++``, ``g++``,
  ``clang++``; flags ``CXX_FLAGS``, PyTorch's and Python's headers, PyTorch's libraries;
  file ``autograd-<hash>.so``, built in the background.
- **A build writes a temporary file** in the cache directory and renames it onto the
  library (atomic: a concurrent process never loads half a file); it never leaves the
  temporary file behind.
- **A failed build** leaves ``<library>.failed`` next to where the library would be,
  holding the compiler's message; later processes do not run the same doomed build, say
  why in ``status()`` (and ``python -m batchnorm info``) and use PyTorch operations (the C
  kernels) or the Python nodes (the C++ ones). Deleting the file retries.
"""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
from pathlib import Path

__all__ = [
    "CXX_FLAGS",
    "C_FLAGS",
    "c_compiler",
    "c_flags",
    "cache_dir",
    "cxx_compiler",
    "failed_marker",
    "previous_failure",
    "record_failure",
    "sanitizer_flags",
]

C_FLAGS = (
    "-O3",
    "-fPIC",
    "-shared",
    "-fopenmp",
    "-fassociative-math",  # lets reductions vectorize; NaN and Inf still propagate
    "-fno-signed-zeros",
    "-fno-trapping-math",
    "-fno-math-errno",
    "-std=c99",
)
CXX_FLAGS = ("-O2", "-shared", "-fPIC", "-std=c++17", "-w")


def cache_dir() -> Path:
    """Where the libraries (and failed builds' messages) are kept."""
    configured = os.environ.get("BATCHNORM_CACHE_DIR")
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "batchnorm"


def _first(*names: str | None) -> str | None:
    for name in names:
        if name and shutil.which(name):
            return name
    return None


def c_compiler() -> str | None:
    """The C compiler: ``$CC``, else the first of cc, gcc, clang found."""
    return _first(os.environ.get("CC"), "cc", "gcc", "clang")


def cxx_compiler() -> str | None:
    """The C++ compiler: ``$CXX``, else the first of c++, g++, clang++ found."""
    return _first(os.environ.get("CXX"), "c++", "g++", "clang++")


def c_flags() -> list[str]:
    """The C kernels' flags on this machine (with ``sanitizer_flags()`` when asked)."""
    flags = list(C_FLAGS)
    if platform.machine() in ("x86_64", "AMD64"):  # compiled on the machine that runs it
        flags += ["-march=native", "-mprefer-vector-width=512"]
    return flags + sanitizer_flags()


def sanitizer_flags() -> list[str]:
    """``BATCHNORM_SANITIZE=address,undefined`` (any of GCC's and Clang's ``-fsanitize``
    lists) builds the C kernels instrumented, in their own file (the flags are in its
    hash): every finding aborts with the source line (``-g``, no recovery). The process
    must load the sanitizers' runtimes first, e.g. ``LD_PRELOAD="$(cc
    -print-file-name=libasan.so) $(cc -print-file-name=libubsan.so)"`` and
    ``ASAN_OPTIONS=detect_leaks=0`` (Python's own allocations are not leaks to
    report); ``tests/test_sanitizers.py`` runs the conformance suite that way."""
    wanted = os.environ.get("BATCHNORM_SANITIZE", "").strip()
    if not wanted:
        return []
    return [f"-fsanitize={wanted}", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer", "-g"]


def failed_marker(target: Path) -> Path:
    """Where a failed build of ``target`` leaves the compiler's message."""
    return target.with_suffix(".failed")


def record_failure(target: Path, message: str) -> None:
    """Leave ``message`` for later processes (best effort: a read-only cache keeps
    nothing, and the next process tries again)."""
    with contextlib.suppress(OSError):
        failed_marker(target).write_text(message)


def previous_failure(target: Path) -> str | None:
    """Why an earlier build of ``target`` failed, with how to retry, or None."""
    marker = failed_marker(target)
    try:
        detail = marker.read_text(errors="replace")
    except OSError:
        return None
    return f"{detail.strip()}; delete {marker} to retry"
