"""The state of a tracking session (Meta's ``inference_state``), as explicit objects: the
frames, their cached image features, and per object its prompts and per-frame outputs."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import torch

from napari_sam2.engine.frames.normalization import Normalizer
from napari_sam2.engine.frames.open import FrameSource
from napari_sam2.engine.predict.output_store import FrameOutput, FrameOutputStore, SpillDir
from napari_sam2.errors import UnknownKeyError
from napari_sam2.model import FrameFeatures

__all__ = ["FeatureCache", "ObjectTrack", "VideoSession"]


class FeatureCache:
    """LRU cache of per-frame image features, bounded in bytes (always keeps the newest one)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[int, FrameFeatures] = OrderedDict()
        self._bytes = 0

    def get(self, t: int) -> FrameFeatures | None:
        feats = self._items.get(t)
        if feats is not None:
            self._items.move_to_end(t)
        return feats

    def put(self, t: int, feats: FrameFeatures) -> None:
        if t in self._items:
            self._bytes -= self._items.pop(t).nbytes()
        self._items[t] = feats
        self._bytes += feats.nbytes()
        while self._bytes > self.max_bytes and len(self._items) > 1:
            _, old = self._items.popitem(last=False)
            self._bytes -= old.nbytes()

    def clear(self) -> None:
        self._items.clear()
        self._bytes = 0

    @property
    def nbytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._items)


@dataclass
class ObjectTrack:
    """Everything the predictor knows about one object."""

    obj_id: Any
    point_inputs: dict[int, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)
    mask_inputs: dict[int, torch.Tensor] = field(default_factory=dict)
    cond: dict[int, FrameOutput] = field(default_factory=dict)
    non_cond: FrameOutputStore = None
    temp_cond: dict[int, FrameOutput] = field(default_factory=dict)
    temp_non_cond: dict[int, FrameOutput] = field(default_factory=dict)
    frames_tracked: dict[int, bool] = field(default_factory=dict)  # frame -> tracked in reverse

    def temp(self, is_cond: bool) -> dict[int, FrameOutput]:
        return self.temp_cond if is_cond else self.temp_non_cond

    def output_on(self, frame_idx: int, is_cond: bool | None = None) -> FrameOutput | None:
        """The output the predictor holds for this frame: a pending one, else stored."""
        kinds = (is_cond,) if is_cond is not None else (True, False)
        for k in kinds:
            out = self.temp(k).get(frame_idx)
            if out is not None:
                return out
        out = self.cond.get(frame_idx)
        return out if out is not None else self.non_cond.get(frame_idx)


class VideoSession:
    """Tracking state for one stack (Meta's ``inference_state``)."""

    def __init__(
        self,
        frames: FrameSource,
        normalizer: Normalizer,
        image_size: int,
        device: torch.device,
        feature_cache_bytes: int,
        hot_frames: int,
        spill: bool,
        spill_dir: str | None,
    ) -> None:
        self.frames = frames
        self.normalizer = normalizer
        self.image_size = image_size
        self.num_frames = len(frames)
        self.video_height = frames.height
        self.video_width = frames.width
        self.device = device
        self.features = FeatureCache(feature_cache_bytes)
        self.hot_frames = hot_frames
        self._spill = SpillDir(spill_dir) if spill else None
        self.objects: dict[Any, ObjectTrack] = {}  # insertion order = object index order
        self.constants: dict[str, torch.Tensor] = {}

    @property
    def obj_ids(self) -> list:
        return list(self.objects)

    def new_store(self, obj_id: Any) -> FrameOutputStore:
        self._store_count = getattr(self, "_store_count", 0) + 1
        return FrameOutputStore(self._spill, f"obj{self._store_count}", self.hot_frames)

    def resident_bytes(self) -> int:
        """Bytes of tracking state held in RAM (features cache + per-object outputs)."""
        total = self.features.nbytes
        for obj in self.objects.values():
            total += obj.non_cond.resident_bytes()
            total += sum(o.nbytes() for d in (obj.cond, obj.temp_cond, obj.temp_non_cond) for o in d.values())
        return total

    def close(self) -> None:
        for obj in self.objects.values():
            obj.non_cond.close()
        self.objects.clear()
        self.features.clear()
        if self._spill is not None:
            self._spill.close()

    # Meta's dict-style access for scripts written against the reference.
    def __getitem__(self, key: str) -> Any:
        if key in ("num_frames", "video_height", "video_width", "device", "obj_ids"):
            return getattr(self, key)
        raise UnknownKeyError(key)
