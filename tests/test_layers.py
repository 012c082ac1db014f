"""The three layers: imports run only downward (plugin -> engine -> model), and importing the
package loads no torch (napari's manifest discovery and ``--version`` stay cheap)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "napari_sam2"


def _imported_modules(path: Path) -> set[str]:
    """Absolute names of every module imported anywhere in a file (top level or inside functions)."""
    tree = ast.parse(path.read_text())
    package = ".".join(("napari_sam2", *path.relative_to(PACKAGE).parent.parts))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            names.add(mod)
            names.update(f"{mod}.{alias.name}" for alias in node.names)
    return names


def _files(layer: str) -> list[Path]:
    return sorted((PACKAGE / layer).rglob("*.py"))


@pytest.mark.parametrize("layer", ["model", "engine"])
def test_model_and_engine_import_neither_napari_nor_qt(layer):
    forbidden = ("napari", "qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "magicgui", "superqt", "vispy")
    bad = {
        f"{p.relative_to(PACKAGE)}: {m}"
        for p in _files(layer)
        for m in _imported_modules(p)
        if m.split(".")[0] in forbidden
    }
    assert not bad, f"{layer}/ must stay headless: {sorted(bad)}"


@pytest.mark.parametrize(("layer", "above"), [("model", ("engine", "plugin")), ("engine", ("plugin",))])
def test_imports_run_only_downward(layer, above):
    bad = {
        f"{p.relative_to(PACKAGE)}: {m}"
        for p in _files(layer)
        for m in _imported_modules(p)
        if any(m == f"napari_sam2.{a}" or m.startswith(f"napari_sam2.{a}.") for a in above)
    }
    assert not bad, f"{layer}/ imports from a layer above it: {sorted(bad)}"


def test_importing_the_package_loads_no_torch():
    code = (
        "import sys, napari_sam2, napari_sam2.plugin, napari_sam2.engine, napari_sam2.cli; "
        "print(sorted(m for m in ('torch', 'napari', 'qtpy') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", f"import napari_sam2 loaded {out.strip()}"


def test_public_names_resolve_lazily():
    import napari_sam2

    for name in napari_sam2.__all__:
        assert getattr(napari_sam2, name) is not None
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        napari_sam2.nope  # noqa: B018
