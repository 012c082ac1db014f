"""Prompt files: the JSON files the widget saves (every prompt, the corrections, and how the
image was cut into frames) and the CSV files anyone can write by hand (points and boxes)."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from napari_sam2.engine.frames.stack_view import StackView
from napari_sam2.engine.prompts.prompt_set import PROMPTS_FORMAT, PROMPTS_VERSION, PromptSet
from napari_sam2.engine.validation import PromptError

__all__ = ["CSV_FIELDS", "StackInfo", "load_prompts", "save_prompts"]


CSV_FIELDS = ["kind", "frame", "obj_id", "x", "y", "label", "x0", "y0", "x1", "y1"]


@dataclass(frozen=True)
class StackInfo:
    """How the image was cut into frames when the prompts were made, saved with them so that a
    batch run (``napari-sam2 track``) sees the same frames as the widget did.

    ``shape`` is the image's shape along its axes (an RGB colour axis left out, ``rgb`` says so);
    ``frame_axis`` the axis propagated along (None: one 2-D image); ``channel_axis`` the axis
    holding channels and ``channels`` the ones the model saw (None: the default choice);
    ``held`` the index every other axis was held at, as ``((axis, index), ...)``.
    """

    shape: tuple[int, ...] | None = None
    frame_axis: int | None = None
    channel_axis: int | None = None
    channels: tuple[int, ...] | None = None
    held: tuple[tuple[int, int], ...] = ()
    rgb: bool = False
    image: str | None = None

    def to_json(self) -> dict:
        return {
            "image": self.image,
            "shape": None if self.shape is None else list(self.shape),
            "frame_axis": self.frame_axis,
            "channel_axis": self.channel_axis,
            "channels": None if self.channels is None else list(self.channels),
            "held": [list(h) for h in self.held],
            "rgb": self.rgb,
        }

    @classmethod
    def from_json(cls, doc: dict, source: str = "prompts") -> StackInfo:
        def axis(name):
            v = doc.get(name)
            if v is None:
                return None
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise PromptError(f"{source}: {name} must be a non-negative axis number or null; got {v!r}")
            return v

        try:
            shape = None if doc.get("shape") is None else tuple(int(v) for v in doc["shape"])
            channels = None if doc.get("channels") is None else tuple(int(v) for v in doc["channels"])
            held = tuple((int(a), int(i)) for a, i in doc.get("held") or ())
        except (TypeError, ValueError):
            raise PromptError(
                f"{source}: the stack description (shape, channels, held) is malformed"
            ) from None
        return cls(
            shape,
            axis("frame_axis"),
            axis("channel_axis"),
            channels,
            held,
            bool(doc.get("rgb", False)),
            doc.get("image"),
        )

    def view(self, shape: Sequence[int] | None = None, rgb: bool | None = None) -> StackView:
        """The stack view these prompts were made in, on an image of ``shape`` (default: the
        saved shape; a different shape is refused by :meth:`check_shape` first)."""
        shape = tuple(self.shape if shape is None else shape)
        rgb = self.rgb if rgb is None else rgb
        if self.shape is None:  # a file without a stack description: the default view
            return StackView.from_shape(shape, "auto", None, rgb)
        self.check_shape(shape)
        view = StackView.from_shape(shape, self.frame_axis, self.channel_axis, rgb)
        held = dict(view.held)
        for axis, index in self.held:
            if axis not in held or not 0 <= index < shape[axis]:
                raise PromptError(
                    f"the prompts were made at index {index} of axis {axis}, which this image does not have"
                )
            held[axis] = index
        return StackView(
            view.shape, view.frame_axis, view.channel_axis, view.rgb, tuple(sorted(held.items()))
        )

    def describe(self) -> str:
        parts = [f"shape {list(self.shape)}" if self.shape is not None else "shape unknown"]
        if self.frame_axis is not None:
            parts.append(f"frames along axis {self.frame_axis}")
        if self.channel_axis is not None:
            parts.append(
                f"channels on axis {self.channel_axis}"
                + (f" (using {list(self.channels)})" if self.channels else "")
            )
        if self.held:
            parts.append("held " + ", ".join(f"axis {a} at {i}" for a, i in self.held))
        return ", ".join(parts)

    def check_shape(self, shape: Sequence[int], what: str = "the image") -> None:
        """Refuse prompts saved on an image of another shape (clicks would land elsewhere)."""
        if self.shape is not None and tuple(int(v) for v in shape) != tuple(self.shape):
            raise PromptError(
                f"these prompts were made on an image of shape {list(self.shape)}, but {what} has shape "
                f"{[int(v) for v in shape]}; use the image they were made on (the file names "
                f"{self.image!r})"
                if self.image
                else f"these prompts were made on an image of shape {list(self.shape)}, but {what} has shape "
                f"{[int(v) for v in shape]}; use the image they were made on"
            )


def save_prompts(path: str | Path, prompts: PromptSet, stack: StackInfo | None = None) -> Path:
    """Write prompts as JSON (``.json``: with masks, corrections and the stack description) or
    CSV (``.csv``: points and boxes only, one row each; nothing about the stack). Coordinates
    are pixels of the frame, ``x`` = column, ``y`` = row; ``label`` 1 = positive, 0 = negative.
    The file is written next to its final name and then renamed, so a failure never leaves half a file."""
    path = Path(path)
    records = prompts.to_records()
    tmp = path.with_name(path.name + ".part")
    if path.suffix.lower() == ".csv":
        if records["masks"]:
            raise PromptError("CSV files hold points and boxes only; save as .json to keep mask prompts")
        with open(tmp, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=CSV_FIELDS)
            w.writeheader()
            for r in records["points"]:
                w.writerow({"kind": "point", **r})
            for r in records["boxes"]:
                w.writerow({"kind": "box", **r})
    else:
        doc = {
            "format": PROMPTS_FORMAT,
            "version": PROMPTS_VERSION,
            "stack": (stack or StackInfo()).to_json(),
        }
        doc.update(records)
        tmp.write_text(json.dumps(doc, indent=1))
    tmp.replace(path)
    return path


def load_prompts(path: str | Path) -> tuple[PromptSet, StackInfo]:
    """Read a file written by :func:`save_prompts` (or by hand: the CSV columns are
    ``kind,frame,obj_id,x,y,label,x0,y0,x1,y1``). Every entry is checked; the first bad one
    raises a PromptError naming the file, the line or entry, and the problem."""
    path = Path(path)
    if not path.is_file():
        raise PromptError(
            f"prompts file {path} does not exist"
            if not path.exists()
            else f"{path} is a folder, not a prompts file"
        )
    if path.suffix.lower() == ".csv":
        return _load_csv(path), StackInfo()
    try:
        doc = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise PromptError(f"{path.name} is not valid JSON ({e}); prompts files are .json or .csv") from None
    if not isinstance(doc, dict) or doc.get("format") != PROMPTS_FORMAT:
        raise PromptError(f'{path.name} is not a napari-sam2 prompts file (no "format": "{PROMPTS_FORMAT}")')
    version = doc.get("version")
    if not isinstance(version, int) or version > PROMPTS_VERSION:
        raise PromptError(
            f"{path.name} is a prompts file of version {version!r}; this napari-sam2 reads versions up to "
            f"{PROMPTS_VERSION}: update napari-sam2"
        )
    stack_doc = doc.get("stack") if version >= 2 else doc  # version 1 kept these keys at the top
    stack = StackInfo.from_json(stack_doc or {}, path.name)
    return PromptSet.from_records(doc, path.name), stack


def _load_csv(path: Path) -> PromptSet:
    points, boxes = [], []
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        missing = {"frame", "obj_id"} - set(reader.fieldnames or ())
        if missing:
            raise PromptError(
                f"{path.name}: missing column(s) {', '.join(sorted(missing))}; the columns are {','.join(CSV_FIELDS)}"
            )
        for i, row in enumerate(reader, start=2):
            kind = (row.get("kind") or "point").strip().lower()
            where = f"line {i}"
            if kind == "point":
                points.append(
                    {"_where": where, **{k: row.get(k) for k in ("frame", "obj_id", "x", "y", "label")}}
                )
            elif kind == "box":
                boxes.append(
                    {"_where": where, **{k: row.get(k) for k in ("frame", "obj_id", "x0", "y0", "x1", "y1")}}
                )
            else:
                raise PromptError(f"{path.name}, {where}: unknown kind {kind!r}; use 'point' or 'box'")
    return PromptSet.from_records({"points": points, "boxes": boxes}, path.name)
