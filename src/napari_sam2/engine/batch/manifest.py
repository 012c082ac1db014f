"""Jobs of a many-stack run (:mod:`.distributed`): what to track, from a manifest or a folder,
and how a finished job is recognised (the done-record written beside its output).

A job is one stack, its prompts file(s), one output and its own options (channels, direction,
frame axis, all positions, window, labels name). Jobs come from

- a CSV manifest: columns ``stack``, ``prompts``, ``output``, and optionally any option column;
  several prompts files in one cell are separated by ``;``; an empty cell takes the default;
- a JSON manifest: a list of job objects with the same keys, or ``{"defaults": {...},
  "jobs": [...]}``; ``prompts`` may be a list;
- a folder (:func:`jobs_from_folder`): every ``NAME.prompts.json`` / ``NAME.prompts.csv`` (or
  ``NAME.prompts.<anything>.json``, one per position of a 3D+t stack) beside a stack ``NAME.tif``,
  ``NAME.ome.tif``, ``NAME.zarr``, ``NAME.nii(.gz)`` or a folder ``NAME/`` (images or a DICOM series);
  the labels go to ``OUTPUT_DIR/NAME<suffix>``.

Relative paths in a manifest are relative to the manifest's folder.

**Complete** means: the labels are under their final name (writers publish them only once
whole) *and* a done-record ``<output>.done.json`` beside them (``<image>.zarr.labels-<name>
.done.json`` for labels inside an OME-Zarr image) names the same inputs: the stack's identity
(size and modification time of its file(s)), the SHA-256 of each prompts file, the job's options
and the model. The record also holds the output's own identity: labels recorded from other
inputs (edited prompts...) and untouched since are *stale* and redone; labels without a record
(a run stopped between the two writes, another program) or edited after they were written are
replaced only with ``overwrite`` (see :func:`output_state`).
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from napari_sam2.errors import InputError, NapariSam2Error

__all__ = [
    "Job",
    "ManifestError",
    "done_record_path",
    "is_complete",
    "job_record",
    "output_state",
    "jobs_from_folder",
    "load_manifest",
    "write_done_record",
]

DONE_FORMAT = "napari-sam2-done"
STACK_SUFFIXES = (".ome.tiff", ".ome.tif", ".tiff", ".tif", ".zarr", ".nii.gz", ".nii")
DIRECTIONS = ("forward", "backward", "both")


class ManifestError(NapariSam2Error, ValueError):
    """A manifest or folder that does not describe jobs, named with its line or entry."""


@dataclass(frozen=True)
class Job:
    """One stack to track: its prompts file(s), its output and its own options."""

    stack: str
    prompts: tuple[str, ...]
    output: str
    channels: tuple[int, ...] | None = None
    direction: str = "both"
    frame_axis: int | None = None
    all_positions: bool = False
    window: str | None = None
    labels_name: str = "sam2"

    @property
    def name(self) -> str:
        return Path(self.stack).name

    def options(self) -> dict[str, Any]:
        """The keyword arguments of :func:`~.batch.track_files` for this job."""
        return {
            "channels": self.channels,
            "direction": self.direction,
            "frame_axis": self.frame_axis,
            "all_positions": self.all_positions,
            "window": self.window,
            "labels_name": self.labels_name,
        }


OPTION_NAMES = tuple(f.name for f in fields(Job) if f.name not in ("stack", "prompts", "output"))


def _option(name: str, value: Any, where: str) -> Any:
    """A manifest value (text from CSV, or JSON) as the Job field ``name`` holds it."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        if name == "channels":
            items = value.replace(";", ",").split(",") if isinstance(value, str) else list(value)
            out = tuple(int(v) for v in items if str(v).strip())
            if not 1 <= len(out) <= 3 or min(out) < 0:
                raise InputError
            return out
        if name == "frame_axis":
            if isinstance(value, bool) or int(value) < 0 or float(value) != int(value):
                raise InputError
            return int(value)
        if name == "all_positions":
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text not in ("true", "false", "yes", "no", "1", "0"):
                raise InputError
            return text in ("true", "yes", "1")
        if name == "direction":
            if value not in DIRECTIONS:
                raise InputError
            return value
        if name == "window":
            from napari_sam2.engine.batch.track_stack import window_normalizer

            window_normalizer(str(value))  # a bad window is found now, not on a worker
            return str(value)
        return str(value).strip()  # labels_name
    except (ValueError, TypeError) as e:
        hint = {
            "channels": "1 to 3 channel numbers, e.g. 0;2",
            "frame_axis": "an axis number >= 0",
            "all_positions": "true or false",
            "direction": "forward, backward or both",
            "window": "a CT preset name or CENTER,WIDTH",
        }.get(name, "text")
        raise ManifestError(f"{where}: {name} {value!r} is not {hint}{f' ({e})' if str(e) else ''}") from None


def make_job(
    entry: Mapping[str, Any], where: str, base: Path | None = None, defaults: Mapping | None = None
) -> Job:
    """A Job from one manifest entry (CSV row or JSON object), checked field by field."""
    unknown = set(entry) - {"stack", "prompts", "output", *OPTION_NAMES}
    if unknown:
        raise ManifestError(
            f"{where}: unknown field(s) {', '.join(sorted(map(str, unknown)))}; the fields are stack, prompts, "
            f"output, {', '.join(OPTION_NAMES)}"
        )

    def path(text: Any) -> str:
        p = Path(str(text).strip()).expanduser()
        return str(p if p.is_absolute() or base is None else base / p)

    missing = [k for k in ("stack", "prompts", "output") if not entry.get(k)]
    if missing:
        raise ManifestError(f"{where}: no {', '.join(missing)} given")
    prompts = entry["prompts"]
    prompts = [p for p in prompts.split(";") if p.strip()] if isinstance(prompts, str) else list(prompts)
    options = {}
    for name in OPTION_NAMES:
        value = _option(name, entry.get(name), where)
        if value is None and defaults is not None:
            value = defaults.get(name)
        if value is not None:
            options[name] = value
    return Job(path(entry["stack"]), tuple(path(p) for p in prompts), path(entry["output"]), **options)


def load_manifest(path: str | Path, defaults: Mapping[str, Any] | None = None) -> list[Job]:
    """The jobs of a CSV or JSON manifest (see the module doc); ``defaults`` fill empty options."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ManifestError(f"no manifest file {path}")
    base = path.parent
    if path.suffix.lower() == ".csv":
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            rows = [(f"{path.name}, line {i}", row) for i, row in enumerate(reader, start=2)]
            header = reader.fieldnames or []
        missing = {"stack", "prompts", "output"} - set(header)
        if missing:
            raise ManifestError(
                f"{path.name}: missing column(s) {', '.join(sorted(missing))}; the columns are stack, prompts, "
                f"output and optionally {', '.join(OPTION_NAMES)}"
            )
        entries = [(where, {k: v for k, v in row.items() if k is not None}) for where, row in rows]
    elif path.suffix.lower() == ".json":
        try:
            doc = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ManifestError(f"{path.name} is not valid JSON ({e})") from None
        if isinstance(doc, dict):
            defaults = {
                **(defaults or {}),
                **{
                    k: _option(k, v, f"{path.name}, defaults")
                    for k, v in (doc.get("defaults") or {}).items()
                    if k in OPTION_NAMES
                },
            }
            doc = doc.get("jobs")
        if not isinstance(doc, list) or not all(isinstance(e, dict) for e in doc):
            raise ManifestError(
                f'{path.name}: expected a list of jobs, or {{"defaults": {{...}}, "jobs": [...]}}'
            )
        entries = [(f"{path.name}, job {i}", e) for i, e in enumerate(doc)]
    else:
        raise ManifestError(f"{path.name}: a manifest is a .csv or .json file")
    jobs = [make_job(entry, where, base, defaults) for where, entry in entries]
    if not jobs:
        raise ManifestError(f"{path.name} lists no job")
    return jobs


def _stack_name(entry: Path) -> str | None:
    lower = entry.name.lower()
    for suffix in STACK_SUFFIXES:
        if lower.endswith(suffix):
            return entry.name[: -len(suffix)]
    return entry.name if entry.is_dir() else None


def jobs_from_folder(
    folder: str | Path,
    output_dir: str | Path | None = None,
    suffix: str = ".tif",
    defaults: Mapping[str, Any] | None = None,
) -> tuple[list[Job], list[str]]:
    """Jobs by the folder convention (module doc): returns ``(jobs, stacks without prompts)``."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise ManifestError(f"{folder} is not a folder (give a manifest .csv/.json, or a folder of stacks)")
    out_dir = Path(output_dir).expanduser() if output_dir is not None else folder / "labels"
    if out_dir.resolve() == folder.resolve():
        raise ManifestError(
            f"the output folder {out_dir} is the input folder; the labels would be taken as stacks"
        )
    if not suffix.startswith("."):
        suffix = "." + suffix
    prompts: dict[str, list[Path]] = {}
    stacks: dict[str, list[Path]] = {}
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith(".") or entry.resolve() == out_dir.resolve():
            continue
        name, sep, rest = entry.name.partition(".prompts")
        if sep and entry.is_file() and entry.suffix.lower() in (".json", ".csv") and rest[:1] == ".":
            prompts.setdefault(name, []).append(entry)
            continue
        stem = _stack_name(entry)
        if stem is not None:
            stacks.setdefault(stem, []).append(entry)
    jobs = []
    for name, files in sorted(prompts.items()):
        found = stacks.get(name, [])
        if len(found) != 1:
            raise ManifestError(
                f"{files[0].name}: no stack named {name} beside it (looked for {name}"
                + ", ".join(STACK_SUFFIXES)
                + f" and a folder {name}/)"
                if not found
                else f"{files[0].name}: several stacks are named {name}: {', '.join(p.name for p in found)}; keep one"
            )
        entry = {
            "stack": str(found[0]),
            "prompts": [str(p) for p in files],
            "output": str(out_dir / f"{name}{suffix}"),
        }
        jobs.append(make_job(entry, f"{folder.name}/{files[0].name}", None, defaults))
    unprompted = sorted(p.name for name, found in stacks.items() if name not in prompts for p in found)
    if not jobs:
        raise ManifestError(
            f"no prompts files in {folder}: save the prompts of stack NAME.tif as NAME.prompts.json beside it"
        )
    return jobs, unprompted


# --------------------------------------------------------------------------------------------
# done-records


def done_record_path(job: Job) -> Path:
    """Where the done-record of ``job`` lives: beside its output (module doc)."""
    out = Path(job.output).expanduser()
    if _is_image(out):
        return out.with_name(f"{out.name}.labels-{job.labels_name}.done.json")
    return out.with_name(out.name + ".done.json")


def _is_image(out: Path) -> bool:
    """An existing OME-Zarr image (labels go inside it), not a label image of our own."""
    if not out.name.lower().endswith(".zarr") or not out.is_dir():
        return False
    from napari_sam2.engine.io.labels_zarr import _is_ome_image

    is_image, is_label_image = _is_ome_image(out)
    return bool(is_image and not is_label_image)


def _written_path(job: Job) -> Path:
    out = Path(job.output).expanduser()
    return out / "labels" / job.labels_name if _is_image(out) else out


def stack_identity(path: str | Path) -> dict[str, Any]:
    """Size and modification time of a stack's file(s): cheap, and changes when the data do.
    An OME-Zarr image's ``labels`` group is left out (labels written into it change it)."""
    p = Path(path).expanduser().resolve()
    if p.is_file():
        st = p.stat()
        return {"path": str(p), "files": 1, "bytes": st.st_size, "mtime_ns": st.st_mtime_ns}
    count = size = latest = 0
    for root, dirs, files in os.walk(p):
        if Path(root) == p and p.name.lower().endswith(".zarr") and "labels" in dirs:
            dirs.remove("labels")
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for f in files:
            st = os.stat(os.path.join(root, f))
            count, size, latest = count + 1, size + st.st_size, max(latest, st.st_mtime_ns)
    return {"path": str(p), "files": count, "bytes": size, "mtime_ns": latest}


def _sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).expanduser().read_bytes()).hexdigest()


def job_record(job: Job, model: Mapping[str, Any]) -> dict[str, Any]:
    """What a done-record must name for ``job`` to count as complete."""
    options = asdict(job)
    for k in ("stack", "prompts", "output"):
        options.pop(k)
    if options["channels"] is not None:
        options["channels"] = list(options["channels"])
    return {
        "format": DONE_FORMAT,
        "version": 1,
        "stack": stack_identity(job.stack),
        "prompts": [{"path": str(Path(p).expanduser().resolve()), "sha256": _sha256(p)} for p in job.prompts],
        "options": options,
        "model": dict(model),
    }


def output_state(job: Job, model: Mapping[str, Any]) -> tuple[str, str]:
    """What ``job``'s output is, and why: ``"absent"``; ``"complete"`` (a done-record of these
    inputs); ``"stale"`` (made by a run of this job from other inputs, e.g. edited prompts, and
    unchanged since: safe to redo); ``"foreign"`` (no record, or changed since it was written:
    someone else's or edited, so replaced only when asked)."""
    written, record_path = _written_path(job), done_record_path(job)
    if not written.exists():
        return "absent", "no output yet"
    if not record_path.is_file():
        return (
            "foreign",
            f"{written} exists but no run of this job recorded it ({record_path.name} is missing)",
        )
    try:
        record = json.loads(record_path.read_text())
        current = job_record(job, model)
    except (OSError, json.JSONDecodeError) as e:
        return "foreign", f"cannot read {record_path.name} ({e})"
    if record.get("output") != stack_identity(written):
        return "foreign", f"{written} was changed after napari-sam2 wrote it"
    changed = [k for k in ("stack", "prompts", "options", "model") if record.get(k) != current[k]]
    if changed:
        return "stale", f"made from other {', '.join(changed)}: redone"
    return "complete", "complete"


def is_complete(job: Job, model: Mapping[str, Any]) -> bool:
    """Whether ``job``'s output is complete for these inputs (:func:`output_state`)."""
    return output_state(job, model)[0] == "complete"


def write_done_record(
    job: Job, model: Mapping[str, Any], written: str | Path, extra: Mapping | None = None
) -> Path:
    """Write the done-record of ``job`` once its output is in place, atomically: the inputs, and
    the output's own identity (so that labels edited afterwards are never replaced unasked)."""
    record = job_record(job, model)
    record["written"] = str(written)
    record["output"] = stack_identity(written)
    record.update(extra or {})
    path = done_record_path(job)
    tmp = path.with_name(path.name + ".part")
    tmp.write_text(json.dumps(record, indent=1) + "\n")
    os.replace(tmp, path)
    return path


def duplicate_outputs(jobs: Iterable[Job]) -> dict[int, str]:
    """``{index: message}`` of the jobs that would write an output an earlier job writes."""
    seen: dict[tuple[str, str], tuple[int, Job]] = {}
    problems = {}
    for i, job in enumerate(jobs):
        out = Path(job.output).expanduser().resolve()
        key = (str(out), job.labels_name if out.name.lower().endswith(".zarr") else "")
        if key in seen:
            first, earlier = seen[key]  # name the earlier job's stack: this job is named by its result
            problems[i] = f"writes the same output {job.output} as job {first} ({Path(earlier.stack).name})"
        else:
            seen[key] = (i, job)
    return problems
