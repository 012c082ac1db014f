"""A persistent cache of per-frame image features, on disk, shared by sessions and processes.

The image encoder is most of the cost of a tracked frame on a CPU and all of the wait
before a first preview; the in-RAM :class:`~napari_sam2.engine.predict.video_state.FeatureCache`
holds only a dozen frames. This cache keeps each frame's encoder output on disk, so a
re-propagation after a correction, a second session on the same stack, the command line
and a precomputation (``napari-sam2 precompute``) all read instead of encoding again.

**Entries.** One file per frame: a zarr group in a zip file (``<digest>.zarr.zip``) with
the four encoder outputs (``vision_feat``, ``vision_pos``, ``high_res_0``, ``high_res_1``),
each one zstd-compressed chunk in the dtype the model produced (float32; bfloat16 stored as
its raw 16 bits) and read back in the memory layout it had (the encoder gives some maps
channels-last, and the heads' kernels, so the last bits of a mask, depend on it): what is
read back equals what was computed, bit for bit, and so do the masks made from it. Its
attributes record the full key, checked on every read.

**Keys.** An :class:`EmbeddingKey` is three digests: the frame's pixels, the
normalisation and the model (variant, weights, precision, device...); how they are made,
and why a content hash rather than a path, is in :mod:`napari_sam2.engine.cache.frame_embedding`.
The entry's name is the digest of the three; the model's digest also names a sub-folder.

**Ownership.** The cache writes a marker file (:data:`MARKER_NAME`) into a folder it
creates or adopts, and refuses to adopt an existing folder that holds anything else (a
user's data folder given by mistake): it raises :class:`EmbeddingCacheError` naming the folder
and a file in it. Eviction, clean-up and :meth:`EmbeddingCache.clear` only ever touch files
with the names the cache generates (``v<N>/<model>/<64 hex digits>.zarr.zip`` and their
``.<...>.tmp`` siblings), so a user's ``*.zarr.zip`` or ``*.tmp`` put into the folder survives.

**Bound and eviction.** The folder is kept under ``max_bytes`` (default
:data:`DEFAULT_MAX_BYTES`, or ``NAPARI_SAM2_EMBEDDING_CACHE_GB``): after each write, if the
cache's entries (every process's) add up to more, the least recently used entries go
first. The default, 20 GiB, holds about 1,400 frames at 1024 px (an entry is about 14.5 MB):
a long movie and its re-propagations stay cached, while ``min_free_bytes`` (2 GiB) keeps the
cache from ever filling the disk. :func:`cache_info` and ``napari-sam2 cache info`` show the
folder and its size; ``EmbeddingCache.clear()`` and ``napari-sam2 cache clear`` empty it. Use is the file's modification time, set on every hit, so recency is shared by all
sessions and processes. No write happens that would leave less than ``min_free_bytes`` on
the disk: the cache never fills the disk a user saves results to.

**Concurrency and damage.** A writer writes a temporary file (``.*.tmp``, never read) and
renames it into place, atomically; two writers of one entry write the same bytes. A reader
sees a whole entry or none. An entry that cannot be read (truncated, corrupt, another key)
is logged, removed and recomputed, never an error; a folder that cannot be written turns
writing off with one warning. Tracking never fails because of the cache.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import os
import secrets
import shutil
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from napari_sam2.engine.cache.cache_folder import (
    ENV_CACHE_DIR,
    ENV_CACHE_GB,
    ENV_CACHE_SWITCH,
    MARKER_NAME,
    EmbeddingCacheError,
    check_adoptable,
    default_cache_dir,
    default_cache_folder,
    is_entry_name,
    is_tmp_name,
    is_version_dir,
    listdir,
    write_marker,
)
from napari_sam2.engine.cache.cache_folder import env_max_bytes as _env_max_bytes
from napari_sam2.errors import InputError, InputTypeError
from napari_sam2.model import FrameFeatures

__all__ = [
    "DEFAULT_MAX_BYTES",
    "MARKER_NAME",
    "CacheInfo",
    "EmbeddingCacheError",
    "cache_info",
    "default_cache_folder",
    "EMBEDDING_CODE_VERSION",
    "ENV_CACHE_DIR",
    "ENV_CACHE_GB",
    "ENV_CACHE_SWITCH",
    "CacheUsage",
    "EmbeddingCache",
    "EmbeddingKey",
    "default_cache_dir",
    "resolve_embedding_cache",
]

log = logging.getLogger(__name__)

#: Bump when preprocessing, the image encoder or the entry layout change what an entry holds.
EMBEDDING_CODE_VERSION = 1
#: 20 GiB: about 1,400 frames (an entry is about 14.5 MB for every variant at 1024 px).
DEFAULT_MAX_BYTES = 20 * 2**30
DEFAULT_MIN_FREE_BYTES = 2 * 2**30
ENTRY_SUFFIX = ".zarr.zip"
_TMP_SUFFIX = ".tmp"
_STALE_TMP_SECONDS = 3600.0
_ARRAYS = ("vision_feat", "vision_pos", "high_res_0", "high_res_1")
_ATTR = "napari_sam2_embedding"
_OFF = ("0", "off", "false", "no")
_SWITCH_ON = ("on", "true", "yes", "1")
_SWITCH_OFF = ("off", "false", "no", "0", "none")


def resolve_embedding_cache(option: Any) -> EmbeddingCache | None:
    """The cache an ``embedding_cache=`` option names.

    - None, False, ``"off"`` (also ``"false"``, ``"no"``, ``"0"``, ``"none"``): no cache;
    - True, ``"on"`` (also ``"true"``, ``"yes"``, ``"1"``): the default folder;
    - ``"auto"``: the default folder unless ``NAPARI_SAM2_EMBEDDING_CACHE=0`` (the command
      line's and the plugin's default);
    - a folder (``str`` or ``Path``; a folder named like one of the words above: ``Path("on")``
      or ``"./on"``), or an :class:`EmbeddingCache`.

    Anything else (a number, an empty string, a file) is refused with a message.
    """
    if option is None or option is False:
        return None
    if isinstance(option, EmbeddingCache):
        return option
    if option is True:
        return EmbeddingCache()
    if isinstance(option, str):
        word = option.strip().lower()
        if word == "auto":
            if os.environ.get(ENV_CACHE_SWITCH, "").strip().lower() in _OFF:
                return None
            return EmbeddingCache()
        if word in _SWITCH_ON:
            return EmbeddingCache()
        if word in _SWITCH_OFF:
            return None
        if not word:
            raise EmbeddingCacheError(
                "embedding_cache is an empty string; give 'on', 'off', 'auto', True, False, None or a folder"
            )
    if isinstance(option, (str, os.PathLike)):
        if Path(option).expanduser().is_file():
            raise EmbeddingCacheError(
                f"embedding_cache={str(option)!r} is a file, not a folder; give a folder for the cache "
                "(a new or empty one), or 'on' for the default folder"
            )
        return EmbeddingCache(option)
    raise InputTypeError(
        f"embedding_cache must be 'on', 'off', 'auto', True, False, None, a folder or an EmbeddingCache; "
        f"got {option!r} ({type(option).__name__})"
    )


def _sha256(*parts: bytes | str) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode() if isinstance(p, str) else p)
    return h.hexdigest()


@dataclass(frozen=True)
class EmbeddingKey:
    """The three digests that find an entry (see the module doc)."""

    model: str
    frame: str
    normalizer: str

    @property
    def digest(self) -> str:
        return _sha256(f"{self.model}/{self.frame}/{self.normalizer}")


# --------------------------------------------------------------------------------------------- storage


@dataclass(frozen=True)
class CacheUsage:
    entries: int
    bytes: int


@dataclass(frozen=True)
class CacheInfo:
    """What :func:`cache_info` reports: the folder, its entries and bytes, and the bound."""

    folder: Path
    entries: int
    bytes: int
    max_bytes: int

    def summary(self) -> str:
        """One line for a CLI summary or the widget: folder, size, bound."""
        return (
            f"embedding cache {self.folder}: {self.entries} entries, {self.bytes / 2**30:.2f} GiB "
            f"(at most {self.max_bytes / 2**30:.3g} GiB)"
        )


def cache_info(folder: str | os.PathLike | None = None) -> CacheInfo:
    """The cache's folder (default :func:`default_cache_folder`), entry count, size and bound."""
    cache = EmbeddingCache(folder)
    usage = cache.usage()
    return CacheInfo(cache.folder, usage.entries, usage.bytes, cache.max_bytes)


def _to_numpy(t: torch.Tensor) -> tuple[np.ndarray, str]:
    t = t.detach().to("cpu").contiguous()
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy(), "bfloat16"
    return t.numpy(), str(t.dtype).removeprefix("torch.")


def _to_tensor(a: np.ndarray, dtype: str, stride: list[int], device: torch.device) -> torch.Tensor:
    """The stored array as the tensor it was: dtype and memory layout (the encoder gives some
    maps channels-last; the heads' kernels, and so the last bits, depend on the layout)."""
    t = torch.from_numpy(np.ascontiguousarray(a))
    if dtype == "bfloat16":
        if a.dtype != np.int16:
            raise InputError(f"a bfloat16 array is stored as int16, not {a.dtype}")
        t = t.view(torch.bfloat16)
    elif str(t.dtype).removeprefix("torch.") != dtype:
        raise InputError(f"array of dtype {a.dtype} where {dtype} was recorded")
    stride = tuple(int(s) for s in stride)
    if stride != t.stride():
        if not _dense_layout(tuple(t.shape), stride):
            raise InputError(f"strides {stride} are no layout of shape {tuple(t.shape)}")
        t = torch.empty_strided(t.shape, stride, dtype=t.dtype).copy_(t)
    return t.to(device)


def _dense_layout(shape: tuple[int, ...], stride: tuple[int, ...]) -> bool:
    """Whether ``stride`` lays ``shape`` out densely, without overlap (a permutation of axes)."""
    if len(shape) != len(stride):
        return False
    expected = 1
    for size, st in sorted(((sz, st) for sz, st in zip(shape, stride) if sz != 1), key=lambda p: p[1]):
        if st != expected:
            return False
        expected *= size
    return True


class EmbeddingCache:
    """Image features on disk, one entry per frame (see the module doc).

    Args:
        folder: where entries live (default :func:`default_cache_dir`).
        max_bytes: bound on the files under ``folder``; least recently used entries are
            removed past it (default ``NAPARI_SAM2_EMBEDDING_CACHE_GB`` GiB, else 20 GiB).
        min_free_bytes: an entry is not written when the disk would keep less free space.
    """

    def __init__(
        self,
        folder: str | os.PathLike | None = None,
        max_bytes: int | None = None,
        min_free_bytes: int = DEFAULT_MIN_FREE_BYTES,
    ) -> None:
        self.folder = Path(folder).expanduser() if folder is not None else default_cache_dir()
        check_adoptable(self.folder)
        if max_bytes is None:
            max_bytes = _env_max_bytes() or DEFAULT_MAX_BYTES
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, (int, float)) or not max_bytes > 0:
            raise EmbeddingCacheError(
                f"max_bytes must be a size in bytes > 0 (e.g. 20 * 2**30 for 20 GiB); got {max_bytes!r}"
            )
        self.max_bytes = int(max_bytes)
        self.min_free_bytes = int(min_free_bytes)
        self.hits = self.misses = self.writes = 0
        #: why writing was turned off (a folder or disk problem), or None
        self.write_error: str | None = None
        self._claimed = False

    def __repr__(self) -> str:
        return f"<EmbeddingCache {self.folder} max {self.max_bytes / 2**30:.3g} GiB>"

    # ---- paths
    def entry_path(self, key: EmbeddingKey) -> Path:
        return self.folder / f"v{EMBEDDING_CODE_VERSION}" / key.model[:24] / f"{key.digest}{ENTRY_SUFFIX}"

    def ensure_folder(self) -> Path:
        """Create the folder (or adopt an empty one) and mark it as the cache's; returns it.

        Raises :class:`EmbeddingCacheError` for a folder that holds other files and
        ``OSError`` when it cannot be created or written (the CLI calls it before any work)."""
        if self._claimed:
            return self.folder
        check_adoptable(self.folder)
        write_marker(self.folder, EMBEDDING_CODE_VERSION)
        self._claimed = True
        return self.folder

    def _files(self) -> Iterator[tuple[Path, os.stat_result]]:
        """The cache's entries and temporary files (any version, any model): only the names the
        cache generates, two levels down, so nothing a user put into the folder is listed."""
        if not self.folder.is_dir():
            return
        for version in listdir(self.folder):
            if not is_version_dir(version):
                continue
            for model in listdir(version):
                if not model.is_dir():
                    continue
                for path in listdir(model):
                    if is_entry_name(path.name) or is_tmp_name(path.name):
                        with contextlib.suppress(OSError):
                            yield path, path.stat()

    # ---- reading
    def contains(self, key: EmbeddingKey) -> bool:
        """Whether an entry exists (not whether it is intact: reading checks that)."""
        return self.entry_path(key).is_file()

    def get(self, key: EmbeddingKey, device: torch.device | str = "cpu") -> FrameFeatures | None:
        """The stored features on ``device``, or None (absent or unreadable: then removed)."""
        path = self.entry_path(key)
        if not path.is_file():
            self.misses += 1
            return None
        try:
            feats = self._read(path, key, torch.device(device))
        except FileNotFoundError:  # evicted by another process meanwhile
            self.misses += 1
            return None
        except Exception as exc:  # noqa: BLE001 - a damaged entry is recomputed, never an error
            log.warning(
                "embedding cache: ignoring unreadable entry %s (%s: %s)", path, type(exc).__name__, exc
            )
            with contextlib.suppress(OSError):
                path.unlink()
            self.misses += 1
            return None
        with contextlib.suppress(OSError):
            os.utime(path)  # recency for the eviction, seen by every process
        self.hits += 1
        return feats

    @staticmethod
    def _read(path: Path, key: EmbeddingKey, device: torch.device) -> FrameFeatures:
        import zarr
        from zarr.storage import ZipStore

        store = ZipStore(path, mode="r")
        try:
            group = zarr.open_group(store, mode="r", zarr_format=3)
            meta = group.attrs[_ATTR]
            if meta.get("key") != dataclasses.asdict(key):
                raise InputError("the entry holds another key")
            dtypes, strides = meta["dtypes"], meta["strides"]
            t = {name: _to_tensor(group[name][...], dtypes[name], strides[name], device) for name in _ARRAYS}
        finally:
            store.close()
        return FrameFeatures(t["vision_feat"], t["vision_pos"], [t["high_res_0"], t["high_res_1"]])

    # ---- writing
    def put(self, key: EmbeddingKey, feats: FrameFeatures, info: dict[str, Any] | None = None) -> bool:
        """Store ``feats`` under ``key`` (atomically); False when nothing was written."""
        if self.write_error is not None:
            return False
        path = self.entry_path(key)
        if path.is_file():
            with contextlib.suppress(OSError):
                os.utime(path)
            return True
        tensors = dict(zip(_ARRAYS, (feats.vision_feat, feats.vision_pos, *feats.high_res)))
        arrays = {name: _to_numpy(t) for name, t in tensors.items()}
        size = sum(a.nbytes for a, _ in arrays.values())
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}{_TMP_SUFFIX}")
        try:
            self.ensure_folder()
            path.parent.mkdir(parents=True, exist_ok=True)
            if shutil.disk_usage(path.parent).free - size < self.min_free_bytes:
                log.info("embedding cache: not writing %s, the disk is nearly full", path.name)
                return False
            meta = {
                "key": dataclasses.asdict(key),
                "dtypes": {n: d for n, (_, d) in arrays.items()},
                "strides": {n: list(t.stride()) for n, t in tensors.items()},
            }
            meta["info"] = dict(info or {}, written=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
            self._write(tmp, arrays, meta)
            os.replace(tmp, path)
        except Exception as exc:  # noqa: BLE001 - tracking goes on without the cache
            with contextlib.suppress(OSError):
                tmp.unlink()
            self.write_error = f"{type(exc).__name__}: {exc}"
            warnings.warn(
                f"the embedding cache cannot write to {self.folder} ({self.write_error}); "
                f"going on without storing features (set {ENV_CACHE_DIR} to another folder, "
                f"or {ENV_CACHE_SWITCH}=0 to turn the cache off)",
                RuntimeWarning,
                stacklevel=2,
            )
            return False
        self.writes += 1
        self.evict(keep=path)
        return True

    @staticmethod
    def _write(tmp: Path, arrays: dict[str, tuple[np.ndarray, str]], meta: dict) -> None:
        import zarr
        from zarr.codecs import ZstdCodec
        from zarr.storage import ZipStore

        store = ZipStore(tmp, mode="w")
        try:
            group = zarr.create_group(store, zarr_format=3, attributes={_ATTR: meta})
            for name, (a, _) in arrays.items():
                z = group.create_array(
                    name, shape=a.shape, dtype=a.dtype, chunks=a.shape, compressors=[ZstdCodec(level=3)]
                )
                z[...] = a
        finally:
            store.close()

    # ---- size
    def usage(self) -> CacheUsage:
        entries = total = 0
        for path, st in self._files():
            total += st.st_size
            entries += path.name.endswith(ENTRY_SUFFIX)
        return CacheUsage(entries, total)

    def evict(self, keep: Path | None = None) -> int:
        """Remove least recently used entries until the folder is within ``max_bytes``
        (never ``keep``); temporary files of crashed writers go after an hour. Returns the
        bytes removed."""
        now = time.time()
        entries: list[tuple[float, int, Path]] = []
        total = freed = 0
        for path, st in self._files():
            stale_tmp = path.name.endswith(_TMP_SUFFIX) and now - st.st_mtime > _STALE_TMP_SECONDS
            if stale_tmp and _unlink(path):
                freed += st.st_size
                continue
            total += st.st_size
            if path != keep and path.name.endswith(ENTRY_SUFFIX):
                entries.append((st.st_mtime, st.st_size, path))
        entries.sort()  # oldest use first
        for _mtime, size, path in entries:
            if total <= self.max_bytes:
                break
            if _unlink(path):  # else another process removed it first
                freed += size
            total -= size
        return freed

    def size_bytes(self) -> int:
        """Bytes the cache's entries (and unfinished writes) take on disk."""
        return self.usage().bytes

    def entry_count(self) -> int:
        """How many entries (frames' features) the cache holds."""
        return self.usage().entries

    def clear(self) -> int:
        """Remove every entry the cache wrote (nothing else); returns how many entries."""
        removed = sum(_unlink(path) and path.name.endswith(ENTRY_SUFFIX) for path, _ in list(self._files()))
        # the cache's own emptied sub-folders go too (rmdir refuses a folder that holds anything)
        for version in listdir(self.folder):
            if is_version_dir(version):
                for model in listdir(version):
                    with contextlib.suppress(OSError):
                        model.rmdir()
                with contextlib.suppress(OSError):
                    version.rmdir()
        return removed


def _unlink(path: Path) -> bool:
    try:
        path.unlink()
    except OSError:
        return False
    return True
