"""Per-object storage of tracked frames with memory bounded independently of the stack length.

Tracking a frame needs the memories of only the last few frames (``num_maskmem``) and the
object pointers of the last 16, but a correction may later ask for any frame's. So the
newest outputs stay in RAM, and older ones go to fixed-size records in a scratch file,
written and read with plain file I/O (not mmap, so resident pages do not count against the
process). Records are bit-exact (float32 logits, bfloat16 memories as their raw bits), so
spilling never changes a result. Pointers and object scores (1 KB a frame) stay in RAM.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import weakref
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from napari_sam2.errors import FileError, InputError, UnknownKeyError
from napari_sam2.model import MemoryEntry


@dataclass
class FrameOutput(MemoryEntry):
    """One object's result on one frame (the reference's compact per-frame output)."""

    pred_masks: torch.Tensor = None  # (1, 1, 256, 256) float32 low-resolution logits
    object_score_logits: torch.Tensor = None  # (1, 1)

    def nbytes(self) -> int:
        ts = [self.pred_masks, self.obj_ptr, self.object_score_logits, self.maskmem_features]
        return sum(t.numel() * t.element_size() for t in ts if t is not None)


class SpillDir:
    """A scratch folder removed when its owner is garbage-collected or closed."""

    def __init__(self, parent: str | None = None) -> None:
        self.path = tempfile.mkdtemp(prefix="napari-sam2-", dir=parent)
        self._finalizer = weakref.finalize(self, shutil.rmtree, self.path, True)

    def close(self) -> None:
        self._finalizer()


class _RecordFile:
    """Fixed-size binary records addressed by frame index (a sparse file)."""

    def __init__(self, path: str, record_bytes: int) -> None:
        self.path = path
        self.record_bytes = record_bytes
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        self._finalizer = weakref.finalize(self, os.close, self._fd)

    def write(self, index: int, data: bytes) -> None:
        if len(data) != self.record_bytes:
            raise InputError("record size mismatch")
        os.pwrite(self._fd, data, index * self.record_bytes)

    def read(self, index: int) -> bytes:
        data = os.pread(self._fd, self.record_bytes, index * self.record_bytes)
        if len(data) != self.record_bytes:
            raise FileError(f"short read from {self.path}")
        return data

    def close(self) -> None:
        self._finalizer()


def _copy_done_event(device: torch.device):
    """An event recorded after the copies just queued on ``device`` (``query()`` is True once they
    are done), or None where copies to the host are done when they return (the CPU, other devices)."""
    if device.type != "cuda":
        return None
    event = torch.cuda.Event()
    event.record(torch.cuda.current_stream(device))
    return event


class FrameOutputStore:
    """Mapping frame index -> :class:`FrameOutput`, keeping at most ``hot_frames`` whole in RAM."""

    def __init__(self, spill_dir: SpillDir | None, name: str, hot_frames: int = 16) -> None:
        self._hot: OrderedDict[int, FrameOutput] = OrderedDict()
        self._small: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # spilled: (obj_ptr, score)
        self._spill_dir = spill_dir
        self._name = name
        self._hot_frames = max(1, hot_frames)
        self._masks: _RecordFile | None = None
        self._mems: _RecordFile | None = None
        self._shapes: tuple | None = None
        self._has_mem: dict[int, bool] = {}
        # Spilled records on their way to the host: (t, masks, memory bits, event, the output).
        # On a GPU the copies run behind the device's queue and are written to the file once
        # done, so the host never waits for them while tracking; until then a read of the frame
        # takes the output itself, still on the device.
        self._pending: list[tuple[int, torch.Tensor, torch.Tensor | None, object, FrameOutput]] = []

    # -- mapping interface used by the tracker
    def __contains__(self, t: object) -> bool:
        return t in self._hot or t in self._small

    def __len__(self) -> int:
        return len(self._hot) + len(self._small)

    def __iter__(self) -> Iterator[int]:
        yield from list(self._hot)
        yield from list(self._small)

    def keys(self) -> list[int]:
        return list(iter(self))

    def items(self):
        for t in self.keys():
            yield t, self[t]

    def get(self, t: int, default=None):
        if t in self._hot:
            self._hot.move_to_end(t)
            return self._hot[t]
        if t in self._small:
            return self._load(t)
        return default

    def __getitem__(self, t: int) -> FrameOutput:
        out = self.get(t)
        if out is None:
            raise UnknownKeyError(t)
        return out

    def __setitem__(self, t: int, out: FrameOutput) -> None:
        self._small.pop(t, None)
        self._has_mem.pop(t, None)
        self._hot[t] = out
        self._hot.move_to_end(t)
        self._evict()

    def pop(self, t: int, default=None):
        if t in self._hot:
            return self._hot.pop(t)
        if t in self._small:
            out = self._load(t, keep=False)
            del self._small[t]
            self._has_mem.pop(t, None)
            return out
        return default

    def clear(self) -> None:
        self._hot.clear()
        self._small.clear()
        self._has_mem.clear()
        self._pending.clear()

    def close(self) -> None:
        self.clear()
        for f in (self._masks, self._mems):
            if f is not None:
                f.close()

    def resident_bytes(self) -> int:
        return sum(o.nbytes() for o in self._hot.values()) + sum(
            p.numel() * p.element_size() + s.numel() * s.element_size() for p, s in self._small.values()
        )

    # -- spilling
    def _evict(self) -> None:
        if self._spill_dir is None:
            return  # unbounded (spilling disabled)
        while len(self._hot) > self._hot_frames:
            t, out = self._hot.popitem(last=False)
            self._spill(t, out)
        self._write_pending()

    def _write_pending(self) -> None:
        """Write the spilled records whose copies to the host are done, oldest first (a frame
        spilled twice ends with its newest record)."""
        while self._pending:
            t, masks, mem, event, _ = self._pending[0]
            if event is not None and not event.query():
                return
            self._pending.pop(0)
            self._masks.write(t, masks.numpy().tobytes())
            if mem is not None:
                self._mems.write(t, mem.numpy().tobytes())

    def _files(self, out: FrameOutput) -> None:
        if self._masks is not None:
            return
        mask_shape = tuple(out.pred_masks.shape)
        mem_shape = tuple(out.maskmem_features.shape) if out.maskmem_features is not None else None
        self._shapes = (mask_shape, mem_shape)
        base = os.path.join(self._spill_dir.path, self._name)
        self._masks = _RecordFile(base + ".masks", int(np.prod(mask_shape)) * 4)
        if mem_shape is not None:
            self._mems = _RecordFile(base + ".mem", int(np.prod(mem_shape)) * 2)

    def _spill(self, t: int, out: FrameOutput) -> None:
        self._files(out)
        mask_shape, mem_shape = self._shapes
        if tuple(out.pred_masks.shape) != mask_shape:
            raise InputError("frame outputs of one object must share their shapes")
        has_mem = out.maskmem_features is not None
        if has_mem and (self._mems is None or tuple(out.maskmem_features.shape) != mem_shape):
            raise InputError("memory features of one object must share their shapes")
        # Copies to the host that do not block: on CUDA into pinned memory, behind the queued work
        # (a blocking copy would make the host wait for the device each frame), written to the
        # file once an event says they are done; on the CPU no copy at all. Other devices block.
        device = out.pred_masks.device
        non_blocking = device.type in ("cuda", "cpu")
        masks = out.pred_masks.detach().float().to("cpu", non_blocking=non_blocking)
        mem = None
        if has_mem:
            bits = out.maskmem_features.detach().to(torch.bfloat16).view(torch.int16)
            mem = bits.to("cpu", non_blocking=non_blocking)
        event = _copy_done_event(device)
        self._pending.append((t, masks, mem, event, out))
        self._has_mem[t] = has_mem
        self._small[t] = (out.obj_ptr, out.object_score_logits)

    def _load(self, t: int, keep: bool = True) -> FrameOutput:
        ptr, score = self._small[t]
        on_its_way = [p[4] for p in self._pending if p[0] == t]
        if on_its_way:  # not in the file yet: the output itself, as the file would give it back
            src = on_its_way[-1]
            mem = None if src.maskmem_features is None else src.maskmem_features.detach().to(torch.bfloat16)
            out = FrameOutput(
                maskmem_features=mem,
                obj_ptr=ptr,
                pred_masks=src.pred_masks.detach().float(),
                object_score_logits=score,
            )
            return self._loaded(t, out, keep)
        mask_shape, mem_shape = self._shapes
        masks = torch.from_numpy(
            np.frombuffer(self._masks.read(t), dtype=np.float32).reshape(mask_shape).copy()
        )
        mem = None
        if self._has_mem.get(t):
            raw = np.frombuffer(self._mems.read(t), dtype=np.int16).reshape(mem_shape).copy()
            mem = torch.from_numpy(raw).view(torch.bfloat16)
        dev = ptr.device

        def to_device(x: torch.Tensor) -> torch.Tensor:
            # through pinned memory without blocking on CUDA: the host does not wait for the GPU
            if dev.type == "cuda":
                return x.pin_memory().to(dev, non_blocking=True)
            return x.to(dev)

        out = FrameOutput(
            maskmem_features=None if mem is None else to_device(mem),
            obj_ptr=ptr,
            pred_masks=to_device(masks),
            object_score_logits=score,
        )
        return self._loaded(t, out, keep)

    def _loaded(self, t: int, out: FrameOutput, keep: bool) -> FrameOutput:
        if keep:
            # Back into the hot set (most recently used); something older may spill.
            del self._small[t]
            self._has_mem.pop(t, None)
            self._hot[t] = out
            self._evict()
        return out
