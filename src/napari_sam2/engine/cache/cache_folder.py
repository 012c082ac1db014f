"""The embedding cache's folder: where it is, how large it may grow, and which files are its own.

Split from :mod:`napari_sam2.engine.cache.embedding_cache` (the entries and their reading and
writing). The rule kept here: the cache marks a folder it creates or adopts with
:data:`MARKER_NAME`, refuses an existing folder that holds anything else, and recognises its
own files by the names it generates, so nothing a user put into the folder is ever removed.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import time
from pathlib import Path

from napari_sam2.errors import NapariSam2Error

__all__ = [
    "ENV_CACHE_DIR",
    "ENV_CACHE_GB",
    "ENV_CACHE_SWITCH",
    "MARKER_NAME",
    "EmbeddingCacheError",
    "check_adoptable",
    "default_cache_dir",
    "default_cache_folder",
    "is_entry_name",
    "is_tmp_name",
    "is_version_dir",
    "listdir",
    "write_marker",
]

ENV_CACHE_DIR = "NAPARI_SAM2_EMBEDDING_DIR"
#: "0", "off", "false" or "no" turns off the cache the command line and the plugin use by default.
ENV_CACHE_SWITCH = "NAPARI_SAM2_EMBEDDING_CACHE"
ENV_CACHE_GB = "NAPARI_SAM2_EMBEDDING_CACHE_GB"
#: the file that marks a folder as the cache's own
MARKER_NAME = "napari-sam2-embedding-cache.json"
_MARKER_FORMAT = "napari-sam2-embedding-cache"
# the names the cache generates (see entry_path and put): nothing else is ever removed
VERSION_DIR = re.compile(r"^v\d+$")
ENTRY_NAME = re.compile(r"^[0-9a-f]{64}\.zarr\.zip$")
TMP_NAME = re.compile(r"^\.[0-9a-f]{64}\.zarr\.zip\.\d+\.[0-9a-f]+\.tmp$")
_MARKER_TMP = re.compile(r"^\." + re.escape(MARKER_NAME) + r"\.\d+\.[0-9a-f]+\.tmp$")


class EmbeddingCacheError(NapariSam2Error, ValueError):
    """A cache folder or option that cannot be used, with a message naming it and what to do."""


def is_version_dir(path: Path) -> bool:
    return bool(VERSION_DIR.match(path.name)) and path.is_dir()


def is_entry_name(name: str) -> bool:
    return bool(ENTRY_NAME.match(name))


def is_tmp_name(name: str) -> bool:
    return bool(TMP_NAME.match(name))


def default_cache_dir() -> Path:
    """``$NAPARI_SAM2_EMBEDDING_DIR``, else ``platformdirs.user_cache_dir("napari-sam2")/embeddings``."""
    env = os.environ.get(ENV_CACHE_DIR, "").strip()
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("napari-sam2", appauthor=False)) / "embeddings"


def default_cache_folder() -> Path:
    """The folder the plugin's and the command line's cache uses (:func:`default_cache_dir`)."""
    return default_cache_dir()


def env_max_bytes() -> int | None:
    text = os.environ.get(ENV_CACHE_GB, "").strip()
    if not text:
        return None
    try:
        gb = float(text)
    except ValueError:
        raise EmbeddingCacheError(
            f"{ENV_CACHE_GB}={text!r}: give the cache's size bound in GiB, e.g. 20"
        ) from None
    if gb == float("inf"):  # int(inf) would raise CapacityError, naming nothing
        raise EmbeddingCacheError(
            f"{ENV_CACHE_GB}={text!r}: give a finite size bound in GiB, e.g. 20 (unset it for the default)"
        )
    if not gb > 0:
        raise EmbeddingCacheError(
            f"{ENV_CACHE_GB}={text!r}: the bound must be > 0 GiB (to turn the cache off set {ENV_CACHE_SWITCH}=0)"
        )
    return int(gb * 2**30)


def check_adoptable(folder: Path) -> None:
    """Refuse a folder the cache did not create that holds other things (see the module doc)."""
    if folder.is_file():
        raise EmbeddingCacheError(
            f"the embedding cache folder {folder} is a file; give a folder (a new or empty one)"
        )
    if not folder.is_dir() or (folder / MARKER_NAME).is_file():
        return
    try:
        foreign = sorted(
            p.name
            for p in folder.iterdir()
            if not ((VERSION_DIR.match(p.name) and p.is_dir()) or _MARKER_TMP.match(p.name))
        )
    except OSError:
        return  # unreadable: writing will fail and say so, without touching anything
    if foreign:
        more = f" and {len(foreign) - 1} more" if len(foreign) > 1 else ""
        raise EmbeddingCacheError(
            f"the embedding cache folder {folder} already holds files the cache did not write "
            f"({foreign[0]!r}{more}); the cache only uses a folder it created or an empty one, so that "
            f"clearing it can never remove your files: choose a new or empty folder (e.g. "
            f"{folder / 'napari-sam2-cache'}), or set {ENV_CACHE_SWITCH}=0 to turn the cache off"
        )


def write_marker(folder: Path, version: int) -> None:
    """Create ``folder`` and its marker file (atomically: concurrent writers agree)."""
    folder.mkdir(parents=True, exist_ok=True)
    marker = folder / MARKER_NAME
    if marker.is_file():
        return
    tmp = folder / f".{MARKER_NAME}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    doc = {
        "format": _MARKER_FORMAT,
        "version": version,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "note": "napari-sam2's embedding cache: `napari-sam2 cache clear` empties it",
    }
    tmp.write_text(json.dumps(doc, indent=1))
    os.replace(tmp, marker)


def listdir(folder: Path) -> list[Path]:
    try:
        return list(folder.iterdir())
    except OSError:
        return []
