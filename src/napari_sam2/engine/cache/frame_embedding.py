"""A frame's image features through the embedding cache: the keys, and the one place the
predictors and the precomputation compute or read them (:class:`FrameEmbedder`).

An entry of :class:`~napari_sam2.engine.cache.embedding_cache.EmbeddingCache` is keyed by:

- the *frame*: SHA-256 of the pixels of the channels the model sees (dtype and shape
  included). A content hash, not a path and modification time: the same pixels reach the
  engine through different readers (the widget's napari layer, ``track``'s lazy TIFF, a
  path given to ``precompute``, a held axis of a larger array), and all of them must find
  the same entry; an in-place edit can never be missed, whatever the file system's time
  resolution. It costs one frame read and a hash on a hit (about 2 ms for 2 MB of pixels)
  against seconds of encoding on a CPU. Every byte is hashed (a sample could miss a small
  edit); SHA-256 makes an accidental collision impossible in practice, and the full key is
  compared on every read anyway. The frame index is no part of the key (the features depend
  on the pixels alone); it is recorded in the entry;
- the *normalisation*: every field of the :class:`~napari_sam2.engine.frames.normalization.Normalizer`
  that maps a pixel to RGB (mode, low, high, to the last bit), not its provenance (which
  frames were sampled, a preset's name), so the same mapping fitted twice finds its entries;
- the *model*: variant and a digest of its whole configuration, a SHA-256 of the weights
  :meth:`SAM2Model.forward_image` uses (two checkpoints of one variant never share entries;
  one file copied elsewhere still does), the precision (autocast dtype), the device type and
  instruction set or GPU model, the torch version, whether the encoder is compiled, the
  package version and :data:`~napari_sam2.engine.cache.embedding_cache.EMBEDDING_CODE_VERSION`:
  whatever changes the numbers gives other entries, so a read is what this machine would
  compute.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from napari_sam2.engine.cache.embedding_cache import (
    EMBEDDING_CODE_VERSION,
    EmbeddingCache,
    EmbeddingKey,
    _sha256,
)
from napari_sam2.engine.frames.normalization import Normalizer
from napari_sam2.errors import InputError
from napari_sam2.model import FrameFeatures, SAM2Model

__all__ = [
    "FrameEmbedder",
    "frame_digest",
    "model_identity",
    "normalizer_digest",
]

# Normaliser fields that say where a mapping came from, not what it does to a pixel
# (channels: the hashed pixels are the selected channels already; center_width: low and high
# say it exactly).
_NORMALIZER_PROVENANCE = {
    "channels",
    "num_channels",
    "percentiles",
    "sampled_frames",
    "num_frames",
    "preset",
    "center_width",
}


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def _tensor_bytes(t: torch.Tensor) -> memoryview:
    t = t.detach().to("cpu").contiguous()
    if t.dtype == torch.bfloat16:
        t = t.view(torch.int16)
    return memoryview(t.numpy()).cast("B")


def frame_digest(frame: np.ndarray, normalizer: Normalizer) -> str | None:
    """SHA-256 of the pixels the model sees (the normaliser's channels), or None for a frame
    the normaliser would refuse (left to the computation, which says why)."""
    x = np.asarray(frame)
    if x.dtype == np.bool_:
        x = x.astype(np.uint8)
    if x.ndim == 2:
        x = x[..., None]
    if x.ndim != 3 or x.shape[-1] != normalizer.num_channels or x.dtype.kind not in "uif":
        return None
    if normalizer.channels != tuple(range(x.shape[-1])):
        x = x[..., list(normalizer.channels)]
    if not x.dtype.isnative:  # the same values in either byte order are the same frame
        x = x.astype(x.dtype.newbyteorder("="))
    x = np.ascontiguousarray(x)
    return _sha256(f"{x.dtype.str}{x.shape};", memoryview(x).cast("B"))


def normalizer_digest(normalizer: Normalizer) -> str:
    fields = {
        f.name: getattr(normalizer, f.name)
        for f in dataclasses.fields(normalizer)
        if f.name not in _NORMALIZER_PROVENANCE
    }
    # floats by their exact bits: two ranges that differ in the last digit map pixels differently
    exact = {k: [float(v).hex() for v in val] if k in ("low", "high") else val for k, val in fields.items()}
    return _sha256(_canonical(exact))


def _weights_digest(model: SAM2Model) -> str:
    """SHA-256 of every tensor :meth:`SAM2Model.forward_image` uses (encoder and the two
    high-resolution projections): about 0.15 s for tiny, once per predictor."""
    h = hashlib.sha256()
    parts = (
        ("image_encoder", model.image_encoder),
        ("conv_s0", model.sam_mask_decoder.conv_s0),
        ("conv_s1", model.sam_mask_decoder.conv_s1),
    )
    for prefix, module in parts:
        for name, t in module.state_dict().items():
            h.update(f"{prefix}.{name}:{t.dtype}:{tuple(t.shape)};".encode())
            h.update(_tensor_bytes(t))
    return h.hexdigest()


def _compute_platform(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}:{torch.version.cuda}"
    if device.type == "cpu":
        return f"cpu:{torch.backends.cpu.get_cpu_capability()}"
    return device.type


def model_identity(model: SAM2Model, autocast_dtype: torch.dtype | None) -> dict[str, Any]:
    """Everything about the model and how it runs that changes its image features."""
    from importlib.metadata import PackageNotFoundError, version

    try:  # the installed distribution's version (the engine imports nothing above it)
        package_version = version("napari-sam2")
    except PackageNotFoundError:
        package_version = "unknown"

    device = model.device
    return {
        "code": EMBEDDING_CODE_VERSION,
        "package": package_version,
        "variant": model.config.name,
        "config": _sha256(repr(model.config)),
        "weights": _weights_digest(model),
        "precision": "fp32" if autocast_dtype is None else str(autocast_dtype).removeprefix("torch."),
        "device": device.type,
        "platform": _compute_platform(device),
        "torch": torch.__version__,
        "compiled": getattr(model.image_encoder, "_compiled_call_impl", None) is not None,
    }


class FrameEmbedder:
    """A frame's image features, read from the cache or computed and stored (the one place
    the predictors and the precomputation go through).

    ``compute()`` (given per call) makes the features as the caller always has; with no
    cache, :meth:`embed` is exactly ``compute()``. The model's identity (weights digest) is
    taken once, on first use of the cache.
    """

    def __init__(
        self, model: SAM2Model, autocast_dtype: torch.dtype | None, cache: EmbeddingCache | None
    ) -> None:
        self.model = model
        self.autocast_dtype = autocast_dtype
        self.cache = cache
        self._identity: dict[str, Any] | None = None
        self._model_digest: str | None = None
        self._lock = threading.Lock()

    def matches(
        self, model: SAM2Model, autocast_dtype: torch.dtype | None, cache: EmbeddingCache | None
    ) -> bool:
        return self.model is model and self.autocast_dtype == autocast_dtype and self.cache is cache

    @property
    def identity(self) -> dict[str, Any]:
        with self._lock:
            if self._identity is None:
                self._identity = model_identity(self.model, self.autocast_dtype)
                self._model_digest = _sha256(_canonical(self._identity))
            return self._identity

    def key(self, frame: np.ndarray, normalizer: Normalizer) -> EmbeddingKey | None:
        digest = frame_digest(frame, normalizer)
        if digest is None:
            return None
        _ = self.identity
        return EmbeddingKey(self._model_digest, digest, normalizer_digest(normalizer))

    def embed(
        self,
        frame: np.ndarray,
        normalizer: Normalizer,
        compute: Callable[[], FrameFeatures],
        frame_index: int | None = None,
    ) -> FrameFeatures:
        """The features of ``frame`` as the model made them (dtype included)."""
        if self.cache is None:
            return compute()
        key = self.key(frame, normalizer)
        if key is None:
            return compute()
        feats = self.cache.get(key, self.model.device)
        if feats is None:
            feats = compute()
            self.cache.put(key, feats, self._info(frame, normalizer, frame_index))
        return feats

    def ensure(
        self,
        frame: np.ndarray,
        normalizer: Normalizer,
        compute: Callable[[], FrameFeatures],
        frame_index: int | None = None,
    ) -> bool:
        """Compute and store the frame's features unless an entry exists; True if one did."""
        if self.cache is None:
            raise InputError("no embedding cache to fill")
        key = self.key(frame, normalizer)
        if key is None:
            compute()  # raises the computation's own message about the frame
            return False
        if self.cache.contains(key):
            with contextlib.suppress(OSError):
                os.utime(self.cache.entry_path(key))
            return True
        self.cache.put(key, compute(), self._info(frame, normalizer, frame_index))
        return False

    def _info(self, frame: np.ndarray, normalizer: Normalizer, frame_index: int | None) -> dict[str, Any]:
        frame = np.asarray(frame)
        ident = self.identity
        return {
            "frame_index": frame_index,
            "frame_shape": list(frame.shape),
            "frame_dtype": str(frame.dtype),
            "normalization": normalizer.describe(),
            "model": {
                k: ident[k] for k in ("variant", "precision", "device", "platform", "torch", "package")
            },
        }
