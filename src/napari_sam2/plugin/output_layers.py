"""Output Labels layers that never destroy a user's labels (no Qt).

The masks of a frame are written into a Labels layer of the image's shape: the plugin's
own ``SAM2 masks [image]`` layer, one layer per object, or a Labels layer the user chose.
Whatever the layer, the writer keeps a ledger per frame of what it wrote, and follows
three rules:

1. it writes only pixels that are its own (it wrote them and nobody changed them since)
   or background that nobody claimed; a user's other labels are never touched;
2. a pixel a user changed since the plugin's last write to that frame (painted, erased,
   filled) becomes the user's and is kept: later runs do not overwrite it. The objects
   whose pixels were changed are reported (:class:`UserEdit`) so the user can turn the
   edit into a mask-prompt correction (:meth:`OutputWriter.release` gives the pixels back
   to the plugin once the correction is in the engine);
3. each run is one undoable step (napari's Labels history, ``block_history``) where the
   layer's data supports it.

The ledger stores zlib-compressed planes (labels compress to about 1 % of their size), so
it stays small for long stacks.
"""

from __future__ import annotations

import contextlib
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from napari_sam2.engine.frames.stack_view import StackView
from napari_sam2.engine.prompts.prompt_set import masks_to_labels
from napari_sam2.errors import InputError

__all__ = ["FrameLedger", "OutputWriter", "UserEdit", "shared_channel_labels"]

OUTPUT_DTYPE = np.uint16


def shared_channel_labels(shape: tuple[int, ...], channel_axis: int, dtype=OUTPUT_DTYPE) -> np.ndarray:
    """A writable labels array of ``shape`` whose channel axis has stride 0: one plane
    shared by all channels (painting on any channel paints them all)."""
    reduced = list(shape)
    reduced[channel_axis] = 1
    base = np.zeros(reduced, dtype=dtype)
    strides = list(base.strides)
    strides[channel_axis] = 0
    return np.lib.stride_tricks.as_strided(base, shape=shape, strides=strides, writeable=True)


def _pack(a: np.ndarray) -> tuple[bytes, str, tuple[int, ...]]:
    a = np.ascontiguousarray(a)
    return zlib.compress(a.tobytes(), 1), a.dtype.str, a.shape


def _unpack(packed: tuple[bytes, str, tuple[int, ...]]) -> np.ndarray:
    data, dtype, shape = packed
    return np.frombuffer(zlib.decompress(data), dtype=np.dtype(dtype)).reshape(shape).copy()


@dataclass
class FrameLedger:
    """What the writer knows of one frame plane of one layer: the plane right after its last
    write, which pixels it owns (wrote, non-zero) and which the user took over."""

    _plane: tuple
    _ours: tuple
    _users: tuple
    #: tracked objects whose pixels the user changed here and that were not taken over yet
    edited_objects: frozenset = frozenset()

    @classmethod
    def make(
        cls, plane: np.ndarray, ours: np.ndarray, users: np.ndarray, edited_objects=frozenset()
    ) -> FrameLedger:
        return cls(
            _pack(plane), _pack(np.packbits(ours)), _pack(np.packbits(users)), frozenset(edited_objects)
        )

    def plane(self) -> np.ndarray:
        return _unpack(self._plane)

    def _bits(self, packed) -> np.ndarray:
        shape = self._plane[2]
        return np.unpackbits(_unpack(packed), count=int(np.prod(shape))).astype(bool).reshape(shape)

    def ours(self) -> np.ndarray:
        return self._bits(self._ours)

    def users(self) -> np.ndarray:
        return self._bits(self._users)


@dataclass(frozen=True)
class UserEdit:
    """Pixels a user changed on ``frame`` since the plugin's last write there, which touch the
    tracked objects ``obj_ids`` (painted with their label, or erased from them)."""

    layer_name: str
    frame: int
    obj_ids: tuple[int, ...]
    pixels: int


def _touched(
    before: np.ndarray, cur: np.ndarray, edited: np.ndarray, ours: np.ndarray, tracked: set
) -> frozenset:
    """Tracked objects whose pixels changed: the plugin's objects that lost pixels, and tracked
    (or plugin-written) labels that were painted."""
    if not edited.any():
        return frozenset()
    known = set(tracked) | {int(v) for v in np.unique(before[ours]) if v}
    changed = {int(v) for v in np.unique(np.concatenate([before[edited], cur[edited]])) if v}
    return frozenset(changed & known)


def _full_index(view: StackView, frame: int, ys: np.ndarray, xs: np.ndarray) -> tuple[np.ndarray, ...]:
    """napari's fancy index (one array per axis) of plane pixels ``(ys, xs)`` of ``frame``."""
    fixed = dict(view.held)
    if view.channel_axis is not None:
        fixed[view.channel_axis] = 0
    if view.frame_axis is not None:
        fixed[view.frame_axis] = int(frame)
    ay, ax = view.plane
    out = []
    for a in range(view.ndim):
        if a == ay:
            out.append(ys)
        elif a == ax:
            out.append(xs)
        else:
            out.append(np.full(ys.shape, fixed.get(a, 0), dtype=np.intp))
    return tuple(out)


@dataclass
class OutputWriter:
    """Writes engine masks into Labels layers by the rules of the module doc.

    One writer serves every output layer of an annotator; ledgers are kept per layer (by
    its unique id) and per plane index. ``edits`` collects the user edits found so far.
    """

    ledgers: dict[tuple, FrameLedger] = field(default_factory=dict)
    edits: dict[tuple[str, int], UserEdit] = field(default_factory=dict)
    _history: contextlib.ExitStack | None = None
    _in_history: set = field(default_factory=set)

    # ---- undo grouping
    def begin_run(self) -> None:
        """Start grouping the writes of one run into one undo step per layer."""
        self.end_run()
        self._history = contextlib.ExitStack()
        self._in_history = set()

    def end_run(self) -> None:
        """Close the undo groups of the run (an exception inside napari is not fatal here)."""
        stack, self._history = self._history, None
        self._in_history = set()
        if stack is not None:
            with contextlib.suppress(Exception):
                stack.close()

    def _group(self, layer) -> None:
        if self._history is None or layer.unique_id in self._in_history:
            return
        block = getattr(layer, "block_history", None)
        if block is not None:
            self._history.enter_context(block())
            self._in_history.add(layer.unique_id)

    # ---- writing
    @staticmethod
    def _key(layer, view: StackView, frame: int) -> tuple:
        """(layer, the fixed index of every non-plane axis): one plane of the labels array."""
        fixed = dict(view.held)
        if view.channel_axis is not None:
            fixed[view.channel_axis] = 0
        if view.frame_axis is not None:
            fixed[view.frame_axis] = int(frame)
        return (layer.unique_id, tuple(sorted(fixed.items())))

    def write(
        self,
        layer,
        view: StackView,
        frame: int,
        obj_ids: Sequence[int],
        logits: np.ndarray,
        only: int | None = None,
    ) -> UserEdit | None:
        """Write one frame's masks (``logits`` (num_objs, H, W), mask = logits > 0) into
        ``layer``; ``only`` writes one object (one-layer-per-object mode). Returns the user
        edit found on this frame, if any (its pixels were kept)."""
        if only is not None:
            keep = [k for k, o in enumerate(obj_ids) if o == only]
            obj_ids, logits = (
                [only],
                logits[keep] if keep else np.full((1, *logits.shape[1:]), -1.0, np.float32),
            )
        return self.write_plane(layer, view, frame, masks_to_labels(obj_ids, logits, dtype=np.int64), obj_ids)

    def write_plane(
        self, layer, view: StackView, frame: int, new: np.ndarray, obj_ids: Sequence[int] | None = None
    ) -> UserEdit | None:
        """Write a label plane (object ids, 0 background) by the same rules as :meth:`write`;
        ``obj_ids`` are the tracked objects (default: the plane's ids)."""
        new = np.asarray(new)
        if obj_ids is None:
            obj_ids = [int(v) for v in np.unique(new) if v]
        idx = view.output_index(frame)
        cur = np.array(layer.data[idx])
        if cur.shape != new.shape:
            raise InputError(
                f"the output layer '{layer.name}' has planes of {cur.shape}, the masks are {new.shape}"
            )
        dtype = layer.data.dtype
        if dtype.kind in "ui" and new.size and int(new.max()) > np.iinfo(dtype).max:
            raise InputError(
                f"object id {int(new.max())} does not fit the output layer '{layer.name}' ({dtype}); "
                "choose a new output layer"
            )
        key = self._key(layer, view, frame)
        entry = self.ledgers.get(key)
        edit = None
        if entry is None:
            ours = np.zeros(cur.shape, bool)
            users = np.zeros(cur.shape, bool)
            edited_objects: frozenset = frozenset()
        else:
            before = entry.plane()
            edited = cur != before
            ours = entry.ours() & ~edited
            users = entry.users() | edited
            tracked = {int(o) for o in obj_ids}
            edited_objects = entry.edited_objects | _touched(before, cur, edited, entry.ours(), tracked)
            if edited_objects:
                edit = UserEdit(layer.name, int(frame), tuple(sorted(edited_objects)), int(users.sum()))
                self.edits[(layer.name, int(frame))] = edit
        writable = ours | ((cur == 0) & ~users)
        final = np.where(writable, new, cur).astype(dtype, copy=False)
        changed = final != cur
        if changed.any():
            self._group(layer)
            ys, xs = np.nonzero(changed)
            index = _full_index(view, frame, ys, xs)
            setitem = getattr(layer, "data_setitem", None)
            if setitem is not None:
                setitem(index, final[changed])
            else:
                layer.data[idx] = final
                layer.refresh()
        self.ledgers[key] = FrameLedger.make(final, writable & (new != 0), users, edited_objects)
        return edit

    def replace_plane(self, layer, view: StackView, frame: int, new: np.ndarray) -> None:
        """Replace one plane as a whole (e.g. new seeds, once the user agreed), as one undo
        step of the layer: written through its ``data_setitem`` inside the run's history
        group, so that Ctrl+Z brings the old plane back. The new plane becomes the plugin's."""
        new = np.asarray(new)
        idx = view.output_index(frame)
        cur = np.array(layer.data[idx])
        if cur.shape != new.shape:
            raise InputError(
                f"the layer '{layer.name}' has planes of {cur.shape}, the new plane is {new.shape}"
            )
        final = new.astype(layer.data.dtype, copy=False)
        changed = final != cur
        if changed.any():
            ys, xs = np.nonzero(changed)
            setitem = getattr(layer, "data_setitem", None)
            block = getattr(layer, "block_history", None)
            with block() if (block is not None and self._history is None) else contextlib.nullcontext():
                self._group(layer)
                if setitem is not None:
                    setitem(_full_index(view, frame, ys, xs), final[changed])
                else:
                    layer.data[idx] = final
                    layer.refresh()
        self.ledgers[self._key(layer, view, frame)] = FrameLedger.make(
            final, final != 0, np.zeros(final.shape, bool), frozenset()
        )
        self.edits.pop((layer.name, int(frame)), None)

    def plane_edited(self, layer, view: StackView, frame: int) -> bool:
        """Whether anyone but this writer changed the plane: it differs from what the writer
        wrote last, or the writer never wrote it and it is not empty."""
        cur = np.asarray(layer.data[view.output_index(frame)])
        entry = self.ledgers.get(self._key(layer, view, frame))
        if entry is None:
            return bool(cur.any())
        return bool((cur != entry.plane()).any())

    def erase(self, layer, view: StackView, obj_id: int, frames: Iterable[int]) -> None:
        """Remove ``obj_id``'s pixels that are still the plugin's own from ``frames``."""
        for frame in frames:
            key = self._key(layer, view, frame)
            entry = self.ledgers.get(key)
            if entry is None:
                continue
            idx = view.output_index(frame)
            cur = np.array(layer.data[idx])
            before = entry.plane()
            ours = entry.ours() & (cur == before) & (cur == obj_id)
            if ours.any():
                self._group(layer)
                ys, xs = np.nonzero(ours)
                setitem = getattr(layer, "data_setitem", None)
                if setitem is not None:
                    setitem(_full_index(view, frame, ys, xs), 0)
                else:
                    cur[ours] = 0
                    layer.data[idx] = cur
                after = before.copy()
                after[ours] = 0
                self.ledgers[key] = FrameLedger.make(
                    after, entry.ours() & ~ours, entry.users(), entry.edited_objects
                )

    def scan(self, layer, view: StackView) -> list[UserEdit]:
        """User edits on every frame the writer wrote to ``layer`` (e.g. before a run)."""
        found = []
        for (uid, plane), entry in list(self.ledgers.items()):
            frame = self._frame_of(view, plane) if uid == layer.unique_id else None
            if frame is None:
                continue
            cur = np.array(layer.data[view.output_index(frame)])
            before = entry.plane()
            edited = cur != before
            objs = entry.edited_objects | _touched(before, cur, edited, entry.ours(), set())
            if objs:
                edit = UserEdit(layer.name, frame, tuple(sorted(objs)), int((entry.users() | edited).sum()))
                self.edits[(layer.name, frame)] = edit
                found.append(edit)
        return sorted(found, key=lambda e: e.frame)

    @staticmethod
    def _frame_of(view: StackView, plane: tuple) -> int | None:
        """The frame of a ledger's plane key if the plane is on ``view``'s sequence."""
        fixed = dict(plane)
        if any(fixed.get(a) != i for a, i in view.held):
            return None
        return 0 if view.frame_axis is None else fixed.get(view.frame_axis)

    def release(self, layer, view: StackView, frame: int, obj_ids: Iterable[int] | None = None) -> None:
        """Give the pixels a user changed on ``frame`` back to the plugin (all, or those of
        ``obj_ids``), e.g. once they are in the engine as a correction: the next write may
        overwrite them."""
        key = self._key(layer, view, frame)
        entry = self.ledgers.get(key)
        if entry is None:
            return
        cur = np.array(layer.data[view.output_index(frame)])
        before = entry.plane()
        users = entry.users() | (cur != before)
        if obj_ids is None:
            give = users
        else:
            ids = np.asarray(sorted(int(o) for o in obj_ids))
            give = users & (np.isin(cur, ids) | (np.isin(before, ids) & (cur == 0)))
        left = frozenset() if obj_ids is None else frozenset(entry.edited_objects - {int(o) for o in obj_ids})
        # The plane as it is now becomes the reference, with the released pixels as ours.
        ours = (entry.ours() & (cur == before)) | (give & (cur != 0))
        self.ledgers[key] = FrameLedger.make(cur, ours, users & ~give, left)
        if left:
            pixels = int((users & ~give).sum())
            self.edits[(layer.name, int(frame))] = UserEdit(
                layer.name, int(frame), tuple(sorted(left)), pixels
            )
        else:
            self.edits.pop((layer.name, int(frame)), None)

    def forget_plane(self, layer, view: StackView, frame: int) -> None:
        """Drop one plane's ledger (its content was replaced as a whole, e.g. new seeds)."""
        self.ledgers.pop(self._key(layer, view, frame), None)
        self.edits.pop((layer.name, int(frame)), None)

    def forget(self, layer=None) -> None:
        """Drop the ledgers (of one layer, or all): e.g. when a layer is deleted."""
        if layer is None:
            self.ledgers.clear()
            self.edits.clear()
            return
        for key in [k for k in self.ledgers if k[0] == layer.unique_id]:
            del self.ledgers[key]
        for key in [k for k in self.edits if k[0] == layer.name]:
            del self.edits[key]
