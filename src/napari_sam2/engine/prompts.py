"""The prompt data model (no Qt, no torch): clicks, boxes and masks per frame and object,
their run-length encoding and the prompt files the widget saves and the CLI reads.

A :class:`PromptSet` holds, per frame and per object, the clicks ``(x, y)`` with their
labels (1 positive, 0 negative), at most one box ``[x0, y0, x1, y1]`` and at most one
mask -- exactly what the engine's ``add_new_points_or_box`` / ``add_new_mask`` take.
Coordinates are pixels of one frame, ``x`` = column, ``y`` = row.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

PROMPTS_FORMAT = "napari-sam2-prompts"
PROMPTS_VERSION = 1


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

    # ---- building
    def get(self, frame: int, obj_id: int, create: bool = True) -> ObjectPrompt | None:
        frame, obj_id = int(frame), int(obj_id)
        if not create:
            return self._data.get(frame, {}).get(obj_id)
        return self._data.setdefault(frame, {}).setdefault(obj_id, ObjectPrompt())

    def add_point(self, frame: int, obj_id: int, x: float, y: float, positive: bool = True) -> None:
        p = self.get(frame, obj_id)
        p.points.append((float(x), float(y)))
        p.labels.append(1 if positive else 0)

    def set_box(self, frame: int, obj_id: int, box: Sequence[float]) -> None:
        x0, y0, x1, y1 = (float(v) for v in box)
        self.get(frame, obj_id).box = (min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))

    def set_mask(self, frame: int, obj_id: int, mask: np.ndarray) -> None:
        self.get(frame, obj_id).mask = np.asarray(mask, dtype=bool)

    def remove(self, frame: int | None = None, obj_id: int | None = None) -> None:
        for f in list(self._data):
            if frame is not None and f != frame:
                continue
            for o in list(self._data[f]):
                if obj_id is None or o == obj_id:
                    del self._data[f][o]
            if not self._data[f]:
                del self._data[f]

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
        return {"points": points, "boxes": boxes, "masks": masks}

    @classmethod
    def from_records(cls, records: dict[str, Iterable[dict]]) -> PromptSet:
        ps = cls()
        for r in records.get("points", []):
            ps.add_point(
                int(r["frame"]), int(r["obj_id"]), float(r["x"]), float(r["y"]), bool(int(r["label"]))
            )
        for r in records.get("boxes", []):
            ps.set_box(int(r["frame"]), int(r["obj_id"]), [r["x0"], r["y0"], r["x1"], r["y1"]])
        for r in records.get("masks", []):
            ps.set_mask(int(r["frame"]), int(r["obj_id"]), rle_decode(r["rle"], r["shape"]))
        return ps


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
    flat = np.zeros(int(np.prod(shape)), dtype=bool)
    pos, value = 0, False
    for r in runs:
        r = int(r)
        if value:
            flat[pos : pos + r] = True
        pos += r
        value = not value
    if pos != flat.size:
        raise ValueError(f"mask run lengths add up to {pos}, expected {flat.size}")
    return flat.reshape(tuple(int(s) for s in shape))


# --------------------------------------------------------------------------- files

CSV_FIELDS = ["kind", "frame", "obj_id", "x", "y", "label", "x0", "y0", "x1", "y1"]


def save_prompts(path: str | Path, prompts: PromptSet, meta: dict | None = None) -> Path:
    """Write prompts as JSON (``.json``, with masks and metadata) or CSV (``.csv``:
    points and boxes only, one row each).  Coordinates are pixels of the image
    frame, ``x`` = column, ``y`` = row; ``label`` 1 = positive, 0 = negative."""
    path = Path(path)
    records = prompts.to_records()
    if path.suffix.lower() == ".csv":
        if records["masks"]:
            raise ValueError("CSV files hold points and boxes only; save as .json to keep mask prompts")
        with open(path, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=CSV_FIELDS)
            w.writeheader()
            for r in records["points"]:
                w.writerow({"kind": "point", **r})
            for r in records["boxes"]:
                w.writerow({"kind": "box", **r})
        return path
    doc = {"format": PROMPTS_FORMAT, "version": PROMPTS_VERSION, **(meta or {}), **records}
    path.write_text(json.dumps(doc, indent=1))
    return path


def load_prompts(path: str | Path) -> tuple[PromptSet, dict]:
    """Read a file written by :func:`save_prompts`; returns the prompts and the metadata."""
    path = Path(path)
    if path.suffix.lower() == ".csv":
        points, boxes = [], []
        with open(path, newline="") as fh:
            for i, row in enumerate(csv.DictReader(fh), start=2):
                kind = (row.get("kind") or "point").strip().lower()
                try:
                    if kind == "point":
                        points.append({k: row[k] for k in ("frame", "obj_id", "x", "y", "label")})
                    elif kind == "box":
                        boxes.append({k: row[k] for k in ("frame", "obj_id", "x0", "y0", "x1", "y1")})
                    else:
                        raise ValueError(f"unknown kind '{kind}'")
                except KeyError as e:
                    raise ValueError(f"{path.name}, line {i}: missing column {e}") from None
        try:
            return PromptSet.from_records({"points": points, "boxes": boxes}), {}
        except (TypeError, ValueError) as e:
            raise ValueError(f"{path.name}: bad value ({e})") from None
    try:
        doc = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path.name} is not valid JSON ({e})") from None
    if not isinstance(doc, dict) or doc.get("format") != PROMPTS_FORMAT:
        raise ValueError(f"{path.name} is not a napari-sam2 prompts file")
    meta = {k: v for k, v in doc.items() if k not in ("points", "boxes", "masks")}
    try:
        return PromptSet.from_records(doc), meta
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{path.name}: bad prompt entry ({e})") from None


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
