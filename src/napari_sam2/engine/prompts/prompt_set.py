"""The prompt data model (no Qt, no torch): clicks, boxes and masks per frame and object,
their run-length encoding and the prompt files the widget saves and the CLI reads.

A :class:`PromptSet` holds, per frame and per object, the clicks ``(x, y)`` with their
labels (1 positive, 0 negative), at most one box ``[x0, y0, x1, y1]`` and at most one
mask -- exactly what the engine's ``add_new_points_or_box`` / ``add_new_mask`` take.
Coordinates are pixels of one frame, ``x`` = column, ``y`` = row.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from napari_sam2.engine.validation import PromptError, check_box, check_mask, check_obj_id, check_points

PROMPTS_FORMAT = "napari-sam2-prompts"
#: version 2 adds the stack block (shape, axes, channel selection) and the corrections
PROMPTS_VERSION = 2

#: object ids become label values, written as 16-bit labels (ImageJ's integer type)
MAX_OBJECT_ID = 65535


# --------------------------------------------------------------------------- checks


def object_id(obj_id) -> int:
    """An object id of a prompt: an integer from 1 to 65535 (it becomes the label value)."""
    value = check_obj_id(obj_id)
    if not 1 <= value <= MAX_OBJECT_ID:
        raise PromptError(
            f"object id {value} is out of range: ids are label values from 1 to {MAX_OBJECT_ID} (0 is background)"
        )
    return value


def _frame_number(frame) -> int:
    value = check_obj_id(frame, argument="frame")
    if value < 0:
        raise PromptError(f"frame {value} is negative; frames are counted from 0")
    return value


def point_label(value, *, where: str = "a point") -> int:
    """1 (positive) or 0 (negative) from True/False or exactly 1/0; anything else is refused."""
    if isinstance(value, (bool, np.bool_)):
        return int(value)
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if number in (0.0, 1.0):
        return int(number)
    raise PromptError(
        f"{where} has label {value!r}: a point label must be 1 (positive: part of the object) or 0 "
        "(negative: not part of the object)"
    )


# --------------------------------------------------------------------------- prompts


@dataclass
class ObjectPrompt:
    """The prompts of one object on one frame, in the engine's ``(x, y)`` order."""

    points: list[tuple[float, float]] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    box: tuple[float, float, float, float] | None = None
    mask: np.ndarray | None = None

    def is_empty(self) -> bool:
        return not self.points and self.box is None and self.mask is None

    @property
    def has_points_or_box(self) -> bool:
        return bool(self.points) or self.box is not None

    def fingerprint(self) -> tuple:
        pts = tuple((round(x, 3), round(y, 3)) for x, y in self.points)
        box = None if self.box is None else tuple(round(v, 3) for v in self.box)
        mask = None
        if self.mask is not None:
            m = np.ascontiguousarray(self.mask, dtype=bool)
            mask = (m.shape, hash(np.packbits(m).tobytes()))
        return pts, tuple(int(v) for v in self.labels), box, mask

    def engine_points(self) -> tuple[np.ndarray | None, np.ndarray | None]:
        if not self.points:
            return None, None
        return (
            np.asarray(self.points, dtype=np.float32).reshape(-1, 2),
            np.asarray(self.labels, dtype=np.int32).reshape(-1),
        )

    def engine_box(self) -> np.ndarray | None:
        return None if self.box is None else np.asarray(self.box, dtype=np.float32)


class PromptSet:
    """Prompts per frame and per object: ``prompts[frame][obj_id] -> ObjectPrompt``."""

    def __init__(self) -> None:
        self._data: dict[int, dict[int, ObjectPrompt]] = {}
        #: (frame, obj_id) pairs whose prompts correct a tracked mask (see mark_correction)
        self.corrections: set[tuple[int, int]] = set()

    # ---- building
    def get(self, frame: int, obj_id: int, create: bool = True) -> ObjectPrompt | None:
        frame, obj_id = _frame_number(frame), object_id(obj_id)
        if not create:
            return self._data.get(frame, {}).get(obj_id)
        return self._data.setdefault(frame, {}).setdefault(obj_id, ObjectPrompt())

    def add_point(self, frame: int, obj_id: int, x: float, y: float, positive: bool | int = True) -> None:
        """A click; ``positive`` is True/1 (part of the object) or False/0 (not part of it)."""
        xy = np.array([[x, y]], dtype=np.float64)
        if not np.isfinite(xy).all():
            raise PromptError(
                f"point (x={x}, y={y}) of object {obj_id} on frame {frame} is not a finite number"
            )
        label = point_label(positive, where=f"the point of object {obj_id} on frame {frame}")
        p = self.get(frame, obj_id)
        p.points.append((float(x), float(y)))
        p.labels.append(label)

    def set_box(self, frame: int, obj_id: int, box: Sequence[float]) -> None:
        """A box ``[x0, y0, x1, y1]`` (corners put in order; one box per object and frame)."""
        b = np.asarray(box, dtype=np.float64).reshape(-1)
        if b.size != 4 or not np.isfinite(b).all():
            raise PromptError(
                f"box of object {obj_id} on frame {frame} must be 4 finite numbers [x0, y0, x1, y1]; got {list(box)}"
            )
        x0, y0, x1, y1 = (float(v) for v in b)
        if x0 == x1 or y0 == y1:
            raise PromptError(
                f"box {list(b)} of object {obj_id} on frame {frame} has zero width or height; draw it around the object"
            )
        self.get(frame, obj_id).box = (min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))

    def set_mask(self, frame: int, obj_id: int, mask: np.ndarray) -> None:
        """A mask prompt (2-D, 0/1 or bool, not empty)."""
        arr = np.asarray(mask)
        where = f"of object {obj_id} on frame {frame}"
        if arr.ndim != 2:
            raise PromptError(f"mask {where} must be 2-D (H, W); got shape {arr.shape}")
        self.get(frame, obj_id).mask = check_mask(arr, *arr.shape, where=where)

    def mark_correction(self, frame: int, obj_id: int, correction: bool = True) -> None:
        """Record that the prompts of ``obj_id`` on ``frame`` refine a mask that tracking made there
        (a correction), rather than define the object from scratch. Batch runs replay corrections
        after a first propagation, as they were made."""
        key = (_frame_number(frame), object_id(obj_id))
        if correction:
            self.corrections.add(key)
        else:
            self.corrections.discard(key)

    def is_correction(self, frame: int, obj_id: int) -> bool:
        return (int(frame), int(obj_id)) in self.corrections

    def check(self, num_frames: int, height: int, width: int) -> None:
        """Check every prompt against a stack of ``num_frames`` frames of ``height`` x ``width``
        pixels; the first problem raises a PromptError naming the frame, the object and what to do."""
        for f, o, p in self.items():
            where = f"object {o} on frame {f}"
            if not 0 <= f < num_frames:
                raise PromptError(
                    f"{where}: frame {f} is outside the stack (0 .. {num_frames - 1}); were the prompts made on "
                    "another image, or along another axis?"
                )
            if p.points:
                check_points(p.points, p.labels, width, height, argument=f"a point of {where}")
            if p.box is not None:
                check_box(p.box, width, height, argument=f"the box of {where}")
            if p.mask is not None:
                check_mask(p.mask, height, width, where=f"of {where}")

    def copy(self) -> PromptSet:
        out = PromptSet()
        for f, o, p in self.items():
            q = out.get(f, o)
            q.points, q.labels, q.box = list(p.points), list(p.labels), p.box
            q.mask = None if p.mask is None else p.mask.copy()
        out.corrections = set(self.corrections)
        return out

    def remove(self, frame: int | None = None, obj_id: int | None = None) -> None:
        for f in list(self._data):
            if frame is not None and f != frame:
                continue
            for o in list(self._data[f]):
                if obj_id is None or o == obj_id:
                    del self._data[f][o]
            if not self._data[f]:
                del self._data[f]
        self.corrections = {(f, o) for f, o in self.corrections if self.get(f, o, create=False) is not None}

    def update(self, other: PromptSet) -> None:
        """Merge ``other`` in: its points are appended, its boxes and masks win."""
        for f, o, p in other.items():
            q = self.get(f, o)
            q.points += p.points
            q.labels += p.labels
            if p.box is not None:
                q.box = p.box
            if p.mask is not None:
                q.mask = p.mask
        self.corrections |= other.corrections

    # ---- reading
    def items(self) -> Iterator[tuple[int, int, ObjectPrompt]]:
        for f in sorted(self._data):
            for o in sorted(self._data[f]):
                p = self._data[f][o]
                if not p.is_empty():
                    yield f, o, p

    def frames(self) -> list[int]:
        return sorted({f for f, _, _ in self.items()})

    def objects(self) -> list[int]:
        return sorted({o for _, o, _ in self.items()})

    def on_frame(self, frame: int) -> dict[int, ObjectPrompt]:
        return {o: p for f, o, p in self.items() if f == frame}

    def fingerprints(self) -> dict[tuple[int, int], tuple]:
        return {(f, o): p.fingerprint() for f, o, p in self.items()}

    def __len__(self) -> int:
        return sum(1 for _ in self.items())

    def __bool__(self) -> bool:
        return len(self) > 0

    def n_points(self) -> int:
        return sum(len(p.points) for _, _, p in self.items())

    def n_boxes(self) -> int:
        return sum(p.box is not None for _, _, p in self.items())

    def n_masks(self) -> int:
        return sum(p.mask is not None for _, _, p in self.items())

    def __repr__(self) -> str:
        return (
            f"PromptSet({len(self.frames())} frames, objects {self.objects()}, "
            f"{self.n_points()} points, {self.n_boxes()} boxes, {self.n_masks()} masks)"
        )

    # ---- records (for files)
    def to_records(self) -> dict[str, list[dict]]:
        points, boxes, masks = [], [], []
        for f, o, p in self.items():
            for (x, y), lab in zip(p.points, p.labels):
                points.append({"frame": f, "obj_id": o, "x": x, "y": y, "label": int(lab)})
            if p.box is not None:
                x0, y0, x1, y1 = p.box
                boxes.append({"frame": f, "obj_id": o, "x0": x0, "y0": y0, "x1": x1, "y1": y1})
            if p.mask is not None:
                masks.append(
                    {"frame": f, "obj_id": o, "shape": list(p.mask.shape), "rle": rle_encode(p.mask)}
                )
        corrections = [[f, o] for f, o in sorted(self.corrections)]
        return {"points": points, "boxes": boxes, "masks": masks, "corrections": corrections}

    @classmethod
    def from_records(cls, records: dict[str, Iterable[dict]], source: str = "prompts") -> PromptSet:
        """Prompts from file records; a bad entry raises a PromptError naming it (``source``, entry)."""
        ps = cls()
        for kind, keys in (
            ("points", ("frame", "obj_id", "x", "y", "label")),
            ("boxes", ("frame", "obj_id", "x0", "y0", "x1", "y1")),
            ("masks", ("frame", "obj_id", "shape", "rle")),
        ):
            entries = records.get(kind, [])
            if not isinstance(entries, list):
                raise PromptError(f"{source}: '{kind}' must be a list of entries")
            for i, r in enumerate(entries):
                where = (
                    r.get("_where", f"{kind} entry {i + 1}")
                    if isinstance(r, dict)
                    else f"{kind} entry {i + 1}"
                )
                if not isinstance(r, dict):
                    raise PromptError(f"{source}, {where}: expected an object with {', '.join(keys)}")
                missing = [k for k in keys if k not in r or r[k] in (None, "")]
                if missing:
                    raise PromptError(f"{source}, {where}: missing {', '.join(missing)}")
                try:
                    frame, obj = _number(r["frame"], "frame"), _number(r["obj_id"], "obj_id")
                    if kind == "points":
                        ps.add_point(
                            frame,
                            obj,
                            _number(r["x"], "x"),
                            _number(r["y"], "y"),
                            _number(r["label"], "label"),
                        )
                    elif kind == "boxes":
                        ps.set_box(frame, obj, [_number(r[k], k) for k in ("x0", "y0", "x1", "y1")])
                    else:
                        ps.set_mask(frame, obj, rle_decode(r["rle"], r["shape"]))
                except (PromptError, ValueError, TypeError) as e:
                    raise PromptError(f"{source}, {where}: {e}") from None
        for pair in records.get("corrections", []) or []:
            try:
                ps.mark_correction(*(int(v) for v in pair))
            except (TypeError, ValueError) as e:
                raise PromptError(f"{source}: bad corrections entry {pair!r} ({e})") from None
        return ps


def _number(value, name: str):
    """A number from JSON/CSV text; integers stay integers so that 1.5 is not read as 1."""
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        return value
    text = str(value).strip()
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        raise PromptError(f"{name} {value!r} is not a number") from None


def rle_encode(mask: np.ndarray) -> list[int]:
    """Run lengths of a boolean mask in C order, starting with a (possibly empty) run of False."""
    flat = np.ascontiguousarray(mask, dtype=bool).ravel()
    if flat.size == 0:
        return []
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    runs = np.diff(bounds).tolist()
    if flat[0]:
        runs = [0] + runs
    return [int(r) for r in runs]


def rle_decode(runs: Sequence[int], shape: Sequence[int]) -> np.ndarray:
    """Inverse of :func:`rle_encode`; refuses run lengths that do not add up to the shape."""
    try:
        shape = tuple(int(v) for v in shape)
    except (TypeError, ValueError):
        raise PromptError(f"mask shape {shape!r} is not a list of two integers") from None
    if len(shape) != 2 or min(shape) <= 0:
        raise PromptError(f"mask shape {list(shape)} must be two positive integers (H, W)")
    if not isinstance(runs, (list, tuple)) or any(
        isinstance(r, bool) or not isinstance(r, int) or r < 0 for r in runs
    ):
        raise PromptError("mask run lengths must be a list of non-negative integers")
    flat = np.zeros(int(np.prod(shape)), dtype=bool)
    pos, value = 0, False
    for r in runs:
        r = int(r)
        if value:
            flat[pos : pos + r] = True
        pos += r
        value = not value
    if pos != flat.size:
        raise PromptError(
            f"mask run lengths add up to {pos} pixels, but a {shape[0]} x {shape[1]} mask has {flat.size}"
        )
    return flat.reshape(shape)


# --------------------------------------------------------------------------- masks -> labels


def masks_to_labels(obj_ids: Sequence[int], logits: np.ndarray, dtype=np.uint16) -> np.ndarray:
    """One label image from per-object logits ``(num_objs, H, W)`` (or ``(num_objs, 1, H, W)``).

    A pixel gets the id of the object whose mask covers it (logit > 0); where masks
    overlap, the object with the largest logit wins.  Background is 0.
    """
    logits = np.asarray(logits, dtype=np.float32)
    if logits.ndim == 4:
        logits = logits[:, 0]
    if len(obj_ids) == 0 or logits.shape[0] == 0:
        return np.zeros(logits.shape[-2:], dtype=dtype)
    ids = np.asarray(list(obj_ids), dtype=np.int64)
    best = np.argmax(logits, axis=0)
    fg = np.take_along_axis(logits, best[None], axis=0)[0] > 0
    out = np.where(fg, ids[best], 0)
    return out.astype(dtype)
