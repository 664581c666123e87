"""The code base stays lint-clean and exports only public names."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import batchnorm

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_is_clean():
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "src", "tests"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_public_names():
    assert all(not name.startswith("_") or name == "__version__" for name in batchnorm.__all__)
    for name in batchnorm.__all__:
        assert hasattr(batchnorm, name), name


def _imports(path: Path, module: str) -> set[str]:
    """The library's modules ``module`` imports, at top level or inside functions
    (``from . import x`` names the submodule when there is one)."""
    import ast

    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package.split(".")
            base = base[: len(base) - (node.level - 1)]
            target = ".".join(base + ([node.module] if node.module else []))
            found |= {f"{target}.{alias.name}" for alias in node.names} | {target}
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("batchnorm")}
    return found


def test_no_import_cycles_among_the_librarys_modules():
    src = ROOT / "src"
    modules = {}
    for path in (src / "batchnorm").rglob("*.py"):
        name = ".".join(path.relative_to(src).with_suffix("").parts)
        modules[name.removesuffix(".__init__")] = path
    graph = {}
    for name, path in modules.items():
        targets = _imports(path, name)
        # ``from .pkg import x``: the submodule when it is one, else the package itself
        graph[name] = {t for t in targets if t in modules and t != name} - {
            t.rsplit(".", 1)[0] for t in targets if t in modules and t.rsplit(".", 1)[0] != name
        }
    cycles = []

    def visit(node: str, trail: list[str]) -> None:
        for nxt in sorted(graph[node]):
            if nxt in trail:
                cycles.append([*trail[trail.index(nxt) :], nxt])
            elif nxt not in done:
                visit(nxt, [*trail, nxt])
        done.add(node)

    done: set[str] = set()
    for name in sorted(graph):
        if name not in done:
            visit(name, [name])
    assert not cycles, cycles[:5]


def test_only_the_backends_load_native_code():
    """ctypes, the C library and the C++ module are loaded inside ``backends/`` only."""
    import ast

    package = ROOT / "src" / "batchnorm"
    offenders = []
    for path in package.rglob("*.py"):
        if "backends" in path.relative_to(package).parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            elif isinstance(node, ast.Attribute) and node.attr in ("CDLL", "load_inline"):
                names = [node.attr]
            if any(n.split(".")[0] == "ctypes" or n in ("CDLL", "load_inline") for n in names):
                offenders.append(f"{path.relative_to(package)}:{node.lineno}")
            if any(n.endswith("cpp_extension") for n in names):
                offenders.append(f"{path.relative_to(package)}:{node.lineno}")
    assert offenders == []
    assert any(  # (the check sees what it looks for: the C backend does import ctypes)
        "import ctypes" in p.read_text() for p in (package / "backends" / "c").glob("*.py")
    )


def test_no_c_function_is_defined_inside_a_macro():
    """Every C kernel is an ordinary function (its lines are what the compiler, sanitizers
    and gdb report): no ``#define`` of the C backend's sources holds a function
    definition, and the per-type code is included once per type rather than stamped out
    by a macro."""
    root = Path(__file__).resolve().parent.parent / "src/batchnorm/backends/c"
    sources = [root / "kernels.c", *sorted((root / "kernels").glob("*.h"))]
    function = re.compile(r"\b(?:static|int|void|double|float)\b[\w\s\*#]*\(\s*[^;{)]*\)\s*\{")
    defined = []
    for path in sources:
        lines = path.read_text().split("\n")
        i = 0
        while i < len(lines):
            if lines[i].lstrip().startswith("#define"):
                block = [lines[i]]
                while lines[i].rstrip().endswith("\\"):
                    i += 1
                    block.append(lines[i])
                if function.search(" ".join(b.rstrip("\\") for b in block)):
                    defined.append(f"{path.name}: {block[0][:60]}")
            i += 1
    assert not defined, defined
    typed = (root / "kernels.c").read_text().count('#include "kernels/typed.h"')
    assert typed == 4  # float32, float64, bfloat16, float16
