"""Packaging: the npe2 manifest, pyproject, the installed distribution and the CLI.

These tests expect the package to be *installed* (``python3 -m pip install ".[testing]"``,
as in the README and ``.ci/run``), not just importable from ``src/``: napari finds the
plugin through the installed distribution's entry point.
"""

from __future__ import annotations

import importlib
import importlib.metadata as md
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
MANIFEST_FILE = REPO_ROOT / "napari.yaml"
SRC = REPO_ROOT / "src"
DIST_NAME = "napari-sam2"
FORBIDDEN_DEPS = {
    "sam2",
    "hydra-core",
    "hydra",
    "iopath",
    "torchvision",
    "pyqt5",
    "pyqt6",
    "pyside2",
    "pyside6",
}

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")


@pytest.fixture(scope="module")
def manifest():
    from npe2 import PluginManifest

    return PluginManifest.from_file(MANIFEST_FILE)


@pytest.fixture(scope="module")
def pyproject() -> dict:
    return tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())


def _dist():
    try:
        return md.distribution(DIST_NAME)
    except md.PackageNotFoundError:
        pytest.fail(f"{DIST_NAME} is not installed: run `python3 -m pip install '.[testing]'` first")


# --------------------------------------------------------------------------- manifest


def test_manifest_loads_and_validates(manifest):
    from npe2 import PluginManifest

    assert manifest.name == DIST_NAME
    assert manifest.display_name == "SAM 2"
    # round trip through npe2's own schema validation
    PluginManifest.model_validate(manifest.model_dump())


def test_manifest_contributions(manifest):
    c = manifest.contributions
    command_ids = {cmd.id for cmd in c.commands}
    print("commands:", sorted(command_ids))
    assert all(cid.startswith("napari-sam2.") for cid in command_ids)

    widget_cmd = next(cmd for cmd in c.commands if cmd.id == "napari-sam2.make_widget")
    assert widget_cmd.python_name == "napari_sam2.plugin._qt.widget:SAM2Widget"
    assert [(w.command, w.display_name) for w in c.widgets] == [
        ("napari-sam2.make_widget", "SAM 2 Segment & Track")
    ]

    assert {s.key for s in c.sample_data} == {"timelapse", "volume", "lineage"}
    for s in c.sample_data:
        assert s.command in command_ids

    segment = c.menus["napari/layers/segment"]
    assert [item.command for item in segment] == ["napari-sam2.make_widget"]

    referenced = {w.command for w in c.widgets} | {s.command for s in c.sample_data}
    referenced |= {item.command for items in c.menus.values() for item in items}
    referenced |= {r.command for r in (c.readers or [])} | {w.command for w in (c.writers or [])}
    assert referenced <= command_ids


def test_python_names_resolve(manifest):
    """Every command's python_name points at a module file in src/ that defines the
    callable. Modules other engineers have not written yet are reported as xfail."""
    missing = []
    for cmd in manifest.contributions.commands:
        module, _, attr = cmd.python_name.partition(":")
        rel = Path(*module.split("."))
        if not ((SRC / rel).with_suffix(".py").is_file() or (SRC / rel / "__init__.py").is_file()):
            missing.append(f"{cmd.id} -> {module} (no such file in src/)")
            continue
        obj = getattr(importlib.import_module(module), attr)
        assert callable(obj), cmd.python_name
    # the sample data is ours and must always resolve
    assert not [m for m in missing if "sample" in m], missing
    if missing:
        pytest.xfail("not written yet: " + "; ".join(missing))


@pytest.mark.parametrize("key", ["timelapse", "volume"])
def test_sample_data_commands_return_layer_data(manifest, key):
    contrib = next(s for s in manifest.contributions.sample_data if s.key == key)
    cmd = next(c for c in manifest.contributions.commands if c.id == contrib.command)
    module, _, attr = cmd.python_name.partition(":")
    layers = getattr(importlib.import_module(module), attr)()
    assert [t for *_, t in layers] == ["image", "labels"]
    assert layers[1][1]["name"] == "ground truth"


# --------------------------------------------------------------------------- pyproject


def test_pyproject_metadata(pyproject):
    project = pyproject["project"]
    assert project["name"] == DIST_NAME
    assert project["requires-python"] == ">=3.10"
    assert "version" in project["dynamic"]
    assert pyproject["tool"]["hatch"]["version"]["path"] == "src/napari_sam2/__init__.py"
    assert "Framework :: napari" in project["classifiers"]
    assert project["entry-points"]["napari.manifest"] == {DIST_NAME: "napari_sam2:napari.yaml"}
    assert project["scripts"] == {DIST_NAME: "napari_sam2.cli:main"}
    assert set(project["optional-dependencies"]) >= {"qt", "testing"}
    assert pyproject["tool"]["pytest"]["ini_options"]["testpaths"] == ["tests"]


def test_pyproject_dependencies(pyproject):
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    deps = {
        canonicalize_name(Requirement(r).name): Requirement(r) for r in pyproject["project"]["dependencies"]
    }
    assert not set(deps) & FORBIDDEN_DEPS, set(deps) & FORBIDDEN_DEPS
    for name in ["torch", "numpy", "napari", "magicgui", "npe2", "scikit-image", "tifffile", "pyyaml",
                 "platformdirs", "dask", "zarr", "tqdm"]:  # fmt: skip
        assert name in deps, name
    assert not any(r.extras for r in deps.values()), "no napari[qt] etc. in the base install"
    assert deps["torch"].specifier.contains("2.13.0")


def test_force_include_sources_exist(pyproject):
    force = pyproject["tool"]["hatch"]["build"]["targets"]["wheel"]["force-include"]
    assert force == {"napari.yaml": "napari_sam2/napari.yaml", "configs": "napari_sam2/configs"}
    assert (REPO_ROOT / "napari.yaml").is_file()
    assert sorted((REPO_ROOT / "configs").glob("*.yaml")), "configs/ holds no *.yaml model configs"


# --------------------------------------------------------------------------- installed distribution


def test_installed_distribution_ships_manifest_and_configs():
    dist = _dist()
    files = {str(f).replace("\\", "/") for f in dist.files or []}
    assert "napari_sam2/napari.yaml" in files, "napari.yaml missing from the installed package"
    shipped = {Path(f).name for f in files if f.startswith("napari_sam2/configs/") and f.endswith(".yaml")}
    in_repo = {p.name for p in (REPO_ROOT / "configs").glob("*.yaml")}
    assert in_repo and in_repo <= shipped, f"configs not shipped: {sorted(in_repo - shipped)}"
    assert dist.version == importlib.import_module("napari_sam2").__version__


def test_npe2_discovers_installed_plugin():
    """napari finds the manifest through the entry point, for regular and editable
    installs alike (src/napari_sam2/napari.yaml links to the top-level file)."""
    from npe2 import PluginManifest

    pm = PluginManifest.from_distribution(DIST_NAME)
    assert pm.name == DIST_NAME
    assert pm.package_metadata.version == importlib.import_module("napari_sam2").__version__


# --------------------------------------------------------------------------- command line


def test_cli_help_and_version(capsys):
    from napari_sam2 import __version__
    from napari_sam2.cli import build_parser, main

    assert main([]) == 2  # no command: help on stderr, usage error
    assert "demo" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert __version__ in capsys.readouterr().out
    args = build_parser().parse_args(["demo", "--screenshot", "x.png", "--frames", "7"])
    assert args.command == "demo" and args.frames == 7 and args.screenshot == "x.png"


def test_console_script_and_python_m():
    exe = shutil.which("napari-sam2")
    assert exe, "the napari-sam2 console script is not on PATH"
    for cmd in ([exe, "--version"], [sys.executable, "-m", "napari_sam2", "--version"]):
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True).stdout
        assert out.startswith("napari-sam2 "), out


_no_display = pytest.mark.skipif(
    sys.platform.startswith("linux")
    and not os.environ.get("DISPLAY")
    and not os.environ.get("WAYLAND_DISPLAY"),
    reason="no display (run under xvfb-run)",
)


def needs_display(test):
    return pytest.mark.gui(_no_display(test))


def _demo(tmp_path, *extra) -> subprocess.CompletedProcess:
    shot = tmp_path / "demo.png"
    proc = subprocess.run(
        [sys.executable, "-m", "napari_sam2", "demo", "--frames", "6", "--screenshot", str(shot), *extra],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    return proc


def _assert_png(path: Path, min_size=(400, 300)):
    from skimage.io import imread

    img = imread(path)
    assert img.shape[0] >= min_size[1] and img.shape[1] >= min_size[0], img.shape
    assert img.std() > 5  # not a blank window


@needs_display
def test_demo_screenshot_without_widget(tmp_path):
    proc = _demo(tmp_path, "--no-widget")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    _assert_png(tmp_path / "demo.png")


@needs_display
def test_demo_screenshot_with_widget(tmp_path):
    if importlib.util.find_spec("napari_sam2.plugin._qt.widget") is None:
        pytest.xfail("napari_sam2.plugin._qt.widget (the SAM 2 widget) is not written yet")
    proc = _demo(tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    _assert_png(tmp_path / "demo.png", min_size=(600, 300))
