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

        if not isinstance(doc, dict):
            raise PromptError(
                f"{source}: 'stack' must be an object (image, shape, frame_axis, channel_axis, channels, held, rgb); "
                f"got {_kind(doc)} {doc!r}. Save the prompts again from the widget, or remove 'stack'"
            )

        def numbers(name, example):
            v = doc.get(name)
            if v is None:
                return None
            if not isinstance(v, list) or not all(_is_whole(x) and x >= 0 for x in v):
                raise PromptError(
                    f"{source}: stack {name} must be a list of non-negative whole numbers such as {example}, or null; "
                    f"got {v!r}"
                )
            return tuple(int(x) for x in v)

        shape = numbers("shape", "[10, 512, 512]")
        channels = numbers("channels", "[0, 2]")
        held_doc = doc.get("held") or []
        if not isinstance(held_doc, list) or not all(
            isinstance(h, list) and len(h) == 2 and all(_is_whole(x) and x >= 0 for x in h) for h in held_doc
        ):
            raise PromptError(
                f"{source}: stack held must be a list of [axis, index] pairs of non-negative whole numbers such as "
                f"[[0, 3]]; got {held_doc!r}"
            )
        held = tuple((int(a), int(i)) for a, i in held_doc)
        rgb = doc.get("rgb", False)
        if not isinstance(rgb, bool):
            raise PromptError(f"{source}: stack rgb must be true or false; got {rgb!r}")
        image = doc.get("image")
        if image is not None and not isinstance(image, str):
            raise PromptError(f"{source}: stack image must be the image's name (text) or null; got {image!r}")
        return cls(shape, axis("frame_axis"), axis("channel_axis"), channels, held, rgb, image)

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
    # a boolean is an int to Python: "version": true must not read as version 1
    if isinstance(version, int) and not isinstance(version, bool) and version > PROMPTS_VERSION:
        raise PromptError(
            f"{path.name} is a prompts file of version {version!r}; this napari-sam2 reads versions up to "
            f"{PROMPTS_VERSION}: update napari-sam2"
        )
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        got = "it has none" if version is None else f"got {_kind(version)} {json.dumps(version)}"
        raise PromptError(
            f'{path.name}: "version" must be a whole number from 1 to {PROMPTS_VERSION}; {got}. Files saved by '
            f"napari-sam2 say {PROMPTS_VERSION}: fix the value, or save the prompts again"
        )
    _check_records(doc, path.name)
    stack_doc = doc.get("stack") if version >= 2 else doc  # version 1 kept these keys at the top
    stack = StackInfo.from_json({} if stack_doc is None else stack_doc, path.name)
    return PromptSet.from_records(doc, path.name), stack


_KINDS = ("points", "boxes", "masks")


def _kind(value: object) -> str:
    """How JSON calls a value's type, for messages about hand-edited files."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return f"a {type(value).__name__}"


def _is_whole(value: object) -> bool:
    """An integer as JSON writes one (2, or 2.0 from a numpy script); not true/false, not "2"."""
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, float) and value.is_integer())


def _check_records(doc: dict, name: str) -> None:
    """The structure of a JSON prompts file, checked before reading it, so that each mistake of a
    hand-edited file is named with its place (the entry) rather than as a crash or read wrongly."""
    present = [k for k in _KINDS if k in doc]
    if not present:
        others = sorted(k for k in doc if k not in ("format", "version", "stack", "corrections"))
        found = f" (its other keys: {', '.join(repr(k) for k in others)})" if others else ""
        raise PromptError(
            f"{name} holds no prompts: it has none of the lists 'points', 'boxes' or 'masks'{found}. "
            "Add at least one of them (an entry per prompt, e.g. "
            '"points": [{"frame": 0, "obj_id": 1, "x": 10, "y": 20, "label": 1}]), or save the prompts again'
        )
    for kind in present:
        entries = doc[kind]
        if not isinstance(entries, list):
            raise PromptError(f"{name}: '{kind}' must be a list of entries; got {_kind(entries)}")
        for i, entry in enumerate(entries):
            if not isinstance(entry, dict):
                continue  # from_records names it
            for key, what in (("frame", "a frame index counted from 0"), ("obj_id", "an object id from 1")):
                value = entry.get(key)
                if value is None or _is_whole(value):
                    continue  # missing: from_records names it; ranges are checked there too
                hint = ": write it without quotes" if isinstance(value, str) else ""
                raise PromptError(
                    f"{name}, {kind} entry {i + 1}: {key} must be a whole number ({what}); got {_kind(value)} "
                    f"{json.dumps(value)}{hint}"
                )
    corrections = doc.get("corrections")
    if corrections is None:
        return
    if not isinstance(corrections, list):
        raise PromptError(
            f"{name}: 'corrections' must be a list of [frame, obj_id] pairs; got {_kind(corrections)} "
            f"{json.dumps(corrections)}"
        )
    for i, pair in enumerate(corrections):
        if not (isinstance(pair, list) and len(pair) == 2 and all(_is_whole(v) for v in pair)):
            raise PromptError(
                f"{name}, corrections entry {i + 1}: expected a [frame, obj_id] pair of whole numbers such as [3, 1]; "
                f"got {json.dumps(pair)}"
            )


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
