"""The documentation site: ``mkdocs build --strict`` passes, the API pages document the
public names, and every relative link in the Markdown sources resolves."""

from __future__ import annotations

import importlib
import inspect
import re
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest

import batchnorm

pytest.importorskip("mkdocs")
pytest.importorskip("mkdocstrings")

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"

# module -> its API page (relative to the site root)
MODULE_PAGES = {
    "functional": "api/functional",
    "initializers": "api/initializers",
    "regularizers": "api/regularizers",
    "constraints": "api/constraints",
    "partitioners": "api/partitioners",
    "interop": "api/interop",
}


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{proc.stdout}\n{proc.stderr}"
    assert "WARNING" not in proc.stderr, proc.stderr
    return out


def _page(site: Path, page: str) -> str:
    return (site / page / "index.html").read_text(encoding="utf-8")


def _ids(html: str) -> set[str]:
    return set(re.findall(r'id="([^"]+)"', html))


def test_site_builds_with_every_page(site: Path) -> None:
    for page in ["", "features", "porting", "distributed", *MODULE_PAGES.values()]:
        assert (site / page / "index.html").is_file(), page
    for page in ["batchnormalization", "layer", "symbolic", "distributed"]:
        assert (site / "api" / page / "index.html").is_file(), page


def test_batchnormalization_page_shows_every_argument(site: Path) -> None:
    html = _page(site, "api/batchnormalization")
    for name in [
        "renorm_clipping",
        "renorm_momentum",
        "virtual_batch_size",
        "adjustment",
        "unbiased_moving_variance",
        "ghost_grouping",
        "synchronized",
    ]:
        assert name in html, name
    assert 'id="batchnorm.BatchNormalization"' in html


def test_layer_and_symbolic_pages(site: Path) -> None:
    layer = _ids(_page(site, "api/layer"))
    for member in ["get_weights", "set_weights", "count_params", "losses", "get_updates_for"]:
        assert f"batchnorm.Layer.{member}" in layer, member
    symbolic = _ids(_page(site, "api/symbolic"))
    for name in [
        "Input",
        "Graph",
        "Function",
        "Wrap",
        "Lambda",
        "SymbolicTensor",
        "get_default_graph",
        "clear_session",
    ]:
        assert f"batchnorm.{name}" in symbolic, name
    assert "batchnorm.convert_sync_batchnorm" in _ids(_page(site, "api/distributed"))


@pytest.mark.parametrize("module", sorted(MODULE_PAGES))
def test_module_page_documents_its_public_names(site: Path, module: str) -> None:
    mod = importlib.import_module(f"batchnorm.{module}")
    ids = _ids(_page(site, MODULE_PAGES[module]))
    missing = [name for name in mod.__all__ if f"batchnorm.{module}.{name}" not in ids]
    assert not missing, f"batchnorm.{module}: not documented (no docstring?): {missing}"


def test_every_top_level_name_is_documented(site: Path) -> None:
    ids: set[str] = set()
    for page in (site / "api").glob("*/index.html"):
        ids |= _ids(page.read_text(encoding="utf-8"))
    names = [
        n
        for n in batchnorm.__all__
        if not n.startswith("_") and not inspect.ismodule(getattr(batchnorm, n))
    ]
    missing = [
        n
        for n in names
        if f"batchnorm.{n}" not in ids
        and not any(f"batchnorm.{module}.{n}" in ids for module in MODULE_PAGES)
    ]
    assert not missing, f"public names without an API entry: {missing}"


_FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)
_INLINE_CODE = re.compile(r"`[^`\n]*`")
_LINK = re.compile(r"\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_REF_DEF = re.compile(r"^\s*\[[^\]]+\]:\s*(\S+)", re.M)


def _relative_links(md: Path) -> list[str]:
    text = _INLINE_CODE.sub("", _FENCE.sub("", md.read_text(encoding="utf-8")))
    links = _LINK.findall(text) + _REF_DEF.findall(text)
    return [
        link
        for link in links
        if not re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", link) and not link.startswith("#")
    ]


def _heading_anchors(md: Path) -> set[str]:
    """Anchors Python-Markdown's ``toc`` gives the headings of ``md``."""
    anchors = set()
    text = _FENCE.sub("", md.read_text(encoding="utf-8"))
    for heading in re.findall(r"^#{1,6}\s+(.*?)\s*#*\s*$", text, re.M):
        ascii_text = unicodedata.normalize("NFKD", heading.replace("`", ""))
        ascii_text = ascii_text.encode("ascii", "ignore").decode("ascii")
        slug = re.sub(r"[^\w\s-]", "", ascii_text).strip().lower()
        anchors.add(re.sub(r"[-\s]+", "-", slug))
    return anchors


MARKDOWN = sorted(DOCS.rglob("*.md"))


@pytest.mark.parametrize("md", MARKDOWN, ids=[str(p.relative_to(ROOT)) for p in MARKDOWN])
def test_relative_links_resolve(md: Path) -> None:
    assert MARKDOWN, "no Markdown files under docs/"
    broken = []
    for link in _relative_links(md):
        path, _, anchor = link.partition("#")
        target = (md.parent / path).resolve()
        if not target.exists() or (
            anchor
            and target.suffix == ".md"
            and not anchor.startswith("batchnorm.")
            and anchor not in _heading_anchors(target)
        ):
            broken.append(link)
    assert not broken, f"{md.relative_to(ROOT)}: broken links {broken}"


def test_every_test_named_in_the_docs_exists() -> None:
    """docs/reliability.md maps guarantees to tests: each named test must exist."""
    named = set()
    for md in MARKDOWN:
        named |= set(re.findall(r"`(test_\w+\.py)::(test_\w+)`", md.read_text(encoding="utf-8")))
    assert len(named) >= 30
    missing = [
        f"{module}::{name}"
        for module, name in sorted(named)
        if not re.search(
            rf"^def {name}\(", (ROOT / "tests" / module).read_text(encoding="utf-8"), re.M
        )
    ]
    assert not missing, f"tests named in docs/ but not defined: {missing}"
