"""The one rule for every file the package writes, and the small helpers the writers share.

- An existing output is replaced only when asked (``overwrite=True`` / ``--overwrite``):
  otherwise :class:`OutputExistsError` (a ``FileExistsError``) naming the path and how to allow it.
- A path that cannot be written (a folder that cannot be created, a read-only folder, a path
  under a regular file) gets :class:`OutputPathError` (an ``OSError``) naming the path and what
  to do, never bare errno text; :func:`check_output_path` finds these before any work is done.
- Files appear under their final name only once complete (:func:`_atomic`: written under a
  temporary sibling name, then moved in place); files and folders get the user's umask.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from napari_sam2.errors import NapariSam2Error

__all__ = ["OutputError", "OutputExistsError", "OutputPathError", "check_output_path", "write_text"]


class OutputError(NapariSam2Error, OSError):
    """An output that cannot be written as asked; ``path`` is the output concerned."""

    def __init__(self, message: str, path: str | Path) -> None:
        super().__init__(message)
        self.path = Path(path)


class OutputExistsError(OutputError, FileExistsError):
    """An output exists and replacing it was not asked for (``overwrite=True`` / ``--overwrite``)."""

    def __init__(self, path: str | Path, what: str = "exists", instead: str = "choose another path") -> None:
        super().__init__(
            f"{path} {what}; pass overwrite=True (--overwrite) to replace it, or {instead}",
            path,
        )


class OutputPathError(OutputError):
    """An output path that cannot be written (not creatable, read-only, under a regular file)."""


def _label_dtype(arr: np.ndarray) -> np.dtype:
    vmax = int(arr.max()) if arr.size else 0
    return np.dtype(np.uint16 if vmax <= np.iinfo(np.uint16).max else np.uint32)


def _temporary_sibling(path: Path, suffix: str) -> Path:
    return path.with_name(f".{path.name}.part-{uuid.uuid4().hex[:8]}{suffix}")


def _nearest_existing(path: Path) -> Path:
    p = path
    while not p.exists() and not p.is_symlink() and p != p.parent:
        p = p.parent
    return p


def check_output_path(path: str | Path) -> None:
    """Raise :class:`OutputPathError` now if ``path`` could not be written later: its folder
    lies under a regular file, or the nearest existing folder above it is not writable.

    Nothing is created. Whether ``path`` itself exists is the caller's rule (see
    :class:`OutputExistsError`).
    """
    path = Path(path).expanduser()
    base = _nearest_existing(path.parent)
    if not base.is_dir():
        raise OutputPathError(
            f"cannot write {path}: {base} is a file, not a folder; choose an output path that is not under a file",
            path,
        )
    if not os.access(base, os.W_OK | os.X_OK):
        raise OutputPathError(
            f"cannot write {path}: the folder {base} is read-only for you; choose a folder you can write to "
            "(or change its permissions)",
            path,
        )


def describe_os_error(path: Path, exc: OSError) -> OutputPathError:
    """An :class:`OutputPathError` for a failed write, saying what to do instead of errno text."""
    code = exc.errno
    where = f"cannot write {path}"
    if code in (errno.EACCES, errno.EPERM, errno.EROFS):
        what = "no permission to write there (a read-only folder or disk); choose a folder you can write to"
    elif code == errno.ENOTDIR:
        what = "a part of the path is a file, not a folder; choose an output path that is not under a file"
    elif code == errno.ENOSPC or code == getattr(errno, "EDQUOT", None):
        what = "the disk is full (or your quota is used up); free some space or choose another disk"
    elif code == errno.ENAMETOOLONG:
        what = "the name is too long; choose a shorter path"
    elif code == errno.EEXIST:
        what = "a file of that name is in the way; choose another path"
    else:
        what = f"{exc.strerror or exc}; choose another path"
    return OutputPathError(f"{where}: {what}", path)


def make_folder(folder: Path) -> Path:
    """``mkdir -p`` with a message naming the folder when it cannot be made (umask permissions)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError as exc:  # a file where the folder (or a folder above it) should be
        raise OutputPathError(
            f"cannot create the folder {folder}: a file is in the way; choose another output folder",
            folder,
        ) from exc
    except OSError as exc:
        raise describe_os_error(folder, exc) from exc
    return folder


def _publish(tmp: Path, path: Path, overwrite: bool) -> None:
    """Move a finished ``tmp`` (file or folder) to ``path``; the old output goes only once the new is there."""
    if not path.exists():
        os.replace(tmp, path)
        return
    if not overwrite:
        _remove(tmp)
        raise OutputExistsError(path)
    if path.is_dir() and not tmp.is_dir():
        _remove(tmp)
        raise OutputPathError(
            f"{path} is a folder; refusing to replace it with a file: choose another path", path
        )
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


@contextlib.contextmanager
def discard_on_failure(tmp: Path, target: Path) -> Iterator[None]:
    """Build an output in ``tmp``: if the block fails, ``tmp`` is removed (the old output stays),
    and an OS error that is not already one of ours names ``target`` and what to do."""
    try:
        yield
    except BaseException as exc:
        _remove(tmp)
        if isinstance(exc, OSError) and not isinstance(exc, OutputError):
            raise describe_os_error(target, exc) from exc
        raise


def _atomic(path: Path, overwrite: bool, suffix: str, write: Callable[[Path], None]) -> Path:
    """Write ``path`` through ``write(tmp)`` under a temporary sibling, then move it in place.

    Refuses an existing ``path`` unless ``overwrite``; a failed write leaves the old output and
    no temporary, and an OS error names ``path`` and what to do.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputExistsError(path)
    check_output_path(path)
    make_folder(path.parent)
    tmp = _temporary_sibling(path, suffix)
    with discard_on_failure(tmp, path):
        write(tmp)
        _publish(tmp, path, overwrite)
    return path


def write_text(path: str | Path, text: str, *, overwrite: bool = False) -> Path:
    """A small text file (a run's record, a report) under the same rule as every output."""
    return _atomic(Path(path), overwrite, ".txt", lambda tmp: tmp.write_text(text))


def replace_owned_files(tmp: Path, folder: Path, owned: Callable[[str], bool], overwrite: bool) -> None:
    """Move the files of the finished folder ``tmp`` into ``folder``, replacing only files whose
    name ``owned`` accepts (those this package writes there); every other file in ``folder`` stays.

    An old output file is refused unless ``overwrite``; old owned files the new set does not
    have (e.g. masks of frames a shorter run has not) are removed too, so that ``folder`` holds
    one consistent output. On failure ``folder`` is left as it was.
    """
    if not folder.exists():
        os.replace(tmp, folder)
        return
    old = sorted(p for p in folder.iterdir() if owned(p.name))
    if old and not overwrite:
        _remove(tmp)
        raise OutputExistsError(folder, f"already holds {old[0].name} (an earlier output)")
    backup = folder / f".old-{uuid.uuid4().hex[:8]}"
    backup.mkdir()
    moved: list[Path] = []
    try:
        for p in old:
            os.replace(p, backup / p.name)
        for p in sorted(tmp.iterdir()):
            os.replace(p, folder / p.name)
            moved.append(folder / p.name)
    except BaseException:
        for p in moved:
            _remove(p)
        for p in backup.iterdir():
            os.replace(p, folder / p.name)
        _remove(backup)
        _remove(tmp)
        raise
    _remove(backup)
    _remove(tmp)
