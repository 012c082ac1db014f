"""Where the files that ship beside the code are: ``configs/`` and ``napari.yaml``.

They live at the top of the repository and are copied into the package by the wheel
build, so an installed package has them next to its modules and a checkout (editable
install, or ``src/`` on the path) has them two folders up. This is the one place that
knows both.
"""

from __future__ import annotations

from pathlib import Path

from napari_sam2.errors import MissingFileError

PACKAGE_DIR = Path(__file__).resolve().parent


def resource_path(name: str) -> Path:
    """Path of the shipped file or folder ``name`` (``"configs"``, ``"napari.yaml"``)."""
    for candidate in (PACKAGE_DIR / name, PACKAGE_DIR.parents[1] / name):
        if candidate.exists():
            return candidate
    raise MissingFileError(
        f"{name} is neither inside the installed package ({PACKAGE_DIR}) nor at the top of a checkout "
        f"({PACKAGE_DIR.parents[1]}); reinstall napari-sam2"
    )
