"""Precomputation: fill the embedding cache with a stack's image features ahead of the runs
(``napari-sam2 precompute``, the widget's background fill). It drives a video predictor, so it
sits above it; :mod:`napari_sam2.engine.cache.frame_embedding` below computes or reads one frame.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

from napari_sam2.engine.cache.embedding_cache import EmbeddingCache
from napari_sam2.engine.cache.frame_embedding import FrameEmbedder
from napari_sam2.engine.frames.normalization import Normalizer
from napari_sam2.engine.frames.open import open_frames
from napari_sam2.engine.predict.video_predictor import SAM2VideoPredictor
from napari_sam2.errors import InputError, OutOfRangeError
from napari_sam2.model import SAM2Model

__all__ = ["FrameEmbedded", "precompute_frames"]


@dataclass(frozen=True)
class FrameEmbedded:
    """Progress of :func:`precompute_frames`: ``frame`` is in the cache now (``computed``:
    by this call; else it already was); ``done`` of ``total`` frames."""

    frame: int
    done: int
    total: int
    computed: bool


def precompute_frames(
    predictor: Any,
    frames: Any,
    normalizer: Normalizer | None = None,
    cache: EmbeddingCache | None = None,
    frame_indices: Iterable[int] | None = None,
    cancel: threading.Event | None = None,
    pause: Callable[[], bool] | None = None,
    *,
    channels: Any = None,
    poll_seconds: float = 0.05,
) -> Iterator[FrameEmbedded]:
    """Fill the cache with the features of ``frames``, yielding one event per frame.

    ``predictor`` is a :class:`~napari_sam2.engine.predict.video_predictor.SAM2VideoPredictor` (its
    model, precision and cache; ``cache`` overrides the cache) or a bare ``SAM2Model``
    (float32). ``frames`` is anything ``init_state`` takes; ``normalizer`` defaults to the fit
    ``init_state`` makes (``channels`` as there), so a later session finds the entries.
    Frames already cached are skipped. Stops after the frame in progress when ``cancel`` is
    set; while ``pause()`` is true it waits between frames (a background fill that gives
    way to the user's own runs).
    """
    if isinstance(predictor, SAM2Model):
        predictor = SAM2VideoPredictor(predictor, embedding_cache=cache)
    cache = cache if cache is not None else getattr(predictor, "embedding_cache", None)
    if cache is None:
        raise InputError(
            "no embedding cache to fill: pass cache=EmbeddingCache(...) or a predictor that has one"
        )
    source = open_frames(frames)
    if normalizer is None:
        normalizer = Normalizer.fit(source, channels=channels)
    n = len(source)
    indices = list(range(n)) if frame_indices is None else [int(i) for i in frame_indices]
    bad = [i for i in indices if not 0 <= i < n]
    if bad:
        raise OutOfRangeError(f"frame(s) {bad[:5]} out of range: the stack has {n} frames (0..{n - 1})")
    if cache is predictor.embedding_cache:
        embedder = predictor._frame_embedder()  # its model digest is taken once per predictor
    else:
        embedder = FrameEmbedder(predictor.model, predictor.autocast_dtype, cache)
    for done, i in enumerate(indices, 1):
        while pause is not None and pause():
            if cancel is not None and cancel.is_set():
                return
            time.sleep(poll_seconds)
        if cancel is not None and cancel.is_set():
            return
        with torch.inference_mode():
            frame = source[i]
            existed = embedder.ensure(
                frame, normalizer, lambda f=frame, i=i: predictor._compute_features(f, normalizer, i), i
            )
        yield FrameEmbedded(i, done, len(indices), not existed)
