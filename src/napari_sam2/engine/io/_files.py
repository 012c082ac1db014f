"""Small file helpers the label writers share: the label dtype, and writing under a temporary
sibling name that replaces the final path only once complete (:func:`_atomic`)."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np


def _label_dtype(arr: np.ndarray) -> np.dtype:
    vmax = int(arr.max()) if arr.size else 0
    return np.dtype(np.uint16 if vmax <= np.iinfo(np.uint16).max else np.uint32)


def _temporary_sibling(path: Path, suffix: str) -> Path:
    return path.with_name(f".{path.name}.part-{uuid.uuid4().hex[:8]}{suffix}")


def _publish(tmp: Path, path: Path, overwrite: bool) -> None:
    """Move a finished ``tmp`` (file or folder) to ``path``; the old output goes only once the new is there."""
    if not path.exists():
        os.replace(tmp, path)
        return
    if not overwrite:
        _remove(tmp)
        raise FileExistsError(f"{path} exists; pass overwrite=True (--overwrite) to replace it")
    if path.is_dir() and not tmp.is_dir():
        _remove(tmp)
        raise FileExistsError(f"{path} is a folder; refusing to replace it with a file")
    backup = _temporary_sibling(path, ".old")
    os.replace(path, backup)
    try:
        os.replace(tmp, path)
    except BaseException:
        os.replace(backup, path)
        raise
    _remove(backup)


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    elif p.exists() or p.is_symlink():
        p.unlink()


def _atomic(path: Path, overwrite: bool, suffix: str, write: Callable[[Path], None]) -> Path:
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True (--overwrite) to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary_sibling(path, suffix)
    try:
        write(tmp)
    except BaseException:
        _remove(tmp)
        raise
    _publish(tmp, path, overwrite)
    return path
