"""The GPU check's summary: one JSON and one Markdown file, the issue's targets judged from the numbers.

``gpu_check.py`` fills a :class:`Summary` part by part and writes it after every part, so whatever
stops the run (time budget, a crash, the device call's own limit), the files on disk say how far it
got. Every target of issue 14 is listed with its status: judged (met / missed, with the value) or
not judged, with the reason (which run was missing, and why). See docs/gpu-check.md.
"""

from __future__ import annotations

import json
import math
import os
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from bench_speed import PROGRESS_PREFIX, RESULT_PREFIX

SCHEMA = 2
# In the order they run: what is worth most per second of device time first.
PARTS = (
    "environment",
    "install",
    "weights",
    "tests_eager",
    "bench_eager",
    "bench_compiled",
    "tests_compiled",
)
TITLES = {
    "tests_eager": 'Tests, eager (`pytest -m "gpu and not compile"`)',
    "tests_compiled": 'Tests, torch.compile (`pytest -m "gpu and compile"`)',
    "bench_eager": "Benchmark, eager: no torch.compile on either side",
    "bench_compiled": "Benchmark, compiled: each implementation's fastest mode",
}
MODES = {"bench_eager": "eager", "bench_compiled": "compiled"}
# Statuses that make the check fail (exit code 1). "skipped" always comes with a reason.
BAD = {"failed", "error", "timeout", "not run"}

# Meta's published speed of SAM 2.1 (A100, torch.compile of all components, bf16, one object).
META_PUBLISHED_A100_FPS = {
    "sam2.1_hiera_t": 91.2,
    "sam2.1_hiera_s": 84.8,
    "sam2.1_hiera_b+": 64.1,
    "sam2.1_hiera_l": 39.5,
}
# Targets of issue 14, on the same GPU.
FPS_RATIO_MIN, FPS_RATIO_AIM = 1.0, 2.0
FIVE_OBJECT_COST_MAX = 3.0
# "Memory flat in the number of frames": resident device memory may grow per tracked frame by at most
# this much per object once the caches are full (a frame's full output, memory + logits, is ~768 KB;
# what legitimately stays per frame is the object pointer and score, ~1.5 KB).
FLAT_KB_PER_FRAME_PER_OBJECT = 16.0
# The growth is a least-squares slope from tracked frame 20 over at least 10 frames.
FLAT_MIN_FRAMES = 30
# Header lines of tests-failures.txt, as gpu_check_plugin.py writes them (not imported from there:
# that module imports pytest, which this one, run before anything is installed, must not need).
FAILURE_PREFIX = "@@FAILURE "
INTERRUPTED_PREFIX = "@@INTERRUPTED "


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def fps(s_per_frame: float | None) -> float | None:
    return round(1.0 / s_per_frame, 2) if _finite(s_per_frame) and s_per_frame > 0 else None


class Summary:
    """Everything the check found, written to ``summary.json`` and ``summary.md`` in ``out``."""

    def __init__(self, out: Path, header: dict[str, Any]) -> None:
        self.out = out
        self.data: dict[str, Any] = {
            "schema": SCHEMA,
            **header,
            "status": "running",
            "parts": {p: {"status": "not run", "note": "not reached"} for p in PARTS},
            "targets": [],
        }

    def part(self, name: str, status: str, **fields: Any) -> dict[str, Any]:
        entry = {"status": status, **fields}
        self.data["parts"][name] = entry
        self.write()
        return entry

    def finish(self, elapsed_s: float, interrupted: str | None = None) -> int:
        """Judge the targets, write the files; the exit code (0: every part ok or skipped)."""
        self.data["elapsed_s"] = round(elapsed_s, 1)
        if interrupted:
            for entry in self.data["parts"].values():
                if entry["status"] == "running":
                    entry.update(status="error", note=interrupted)
        self.data["targets"] = judge_targets(self.data)
        bad = [p for p, e in self.data["parts"].items() if e["status"] in BAD]
        for name in MODES:
            items = self.data["parts"][name].get("items", [])
            bad += [f"{name} {i['config']} {i['objects']} obj" for i in items if i["status"] in BAD]
        self.data["status"] = "failed" if bad or interrupted else "ok"
        self.data["problems"] = bad + ([interrupted] if interrupted else [])
        self.write()
        return 0 if self.data["status"] == "ok" else 1

    def write(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        for name, text in (
            ("summary.json", json.dumps(self.data, indent=1, default=str) + "\n"),
            ("summary.md", markdown(self.data)),
        ):
            tmp = self.out / f".{name}.tmp"
            tmp.write_text(text)
            os.replace(tmp, self.out / name)


# ====================================================================== bench items


def bench_item(spec: dict, record: dict | None, status: str, seconds: float, note: str = "") -> dict:
    """One (variant, object count) of the benchmark, from a child's result or partial record."""
    r = record or {}
    item: dict[str, Any] = {
        "config": spec["config"],
        "objects": spec["objects"],
        "dtype": spec.get("dtype", "?"),
        "status": status,
        "seconds": round(seconds, 1),
        "mode": describe_mode(spec),
    }
    if note:
        item["note"] = note
    if r.get("kind") == "meta_reference" or "meta_load_s" in r:
        item["ours"] = _impl(r.get("ours", {}), r, "ours_")
        item["meta"] = _impl(r.get("meta", {}), r, "meta_")
        item["fps_ratio_ours_over_meta"] = r.get("fps_ratio_ours_over_meta")
        if "agreement" in r:
            item["agreement"] = {"against": "Meta", **r["agreement"]}
    else:
        item["ours"] = _impl(r, r, "")
        if "vs_fp32" in r:
            item["agreement"] = {"against": "ours in fp32", **r["vs_fp32"]}
    return item


def describe_mode(spec: dict) -> str:
    """What ran, in words: ours' precision and compilation against which of Meta's predictors."""
    if spec.get("compile"):
        ours = f"{spec['dtype']} + torch.compile ({spec.get('compile_mode') or 'max-autotune-no-cudagraphs'})"
    else:
        ours = f"{spec['dtype']} eager"
    if "meta_repo" not in spec:
        return f"ours {ours} (Meta's copy absent)"
    if spec.get("meta_vos"):
        meta = "SAM2VideoPredictorVOS (vos_optimized: torch.compile max-autotune of all components)"
    else:
        meta = "SAM2VideoPredictor eager"
    return f"ours {ours} vs Meta {meta} {spec['dtype']}"


def stage_reached(spec: dict, record: dict | None) -> str:
    """Where a stopped child was, from the last partial record it printed."""
    r = record or {}
    compiled = bool(spec.get("compile"))
    if "meta_repo" in spec:
        steps = [
            ("ours_load_s", "while loading the models"),
            ("ours_first_run_s", "during ours' first run (warm-up" + (", compilation)" if compiled else ")")),
            ("ours", "during ours' first timed run"),
            (
                "meta_first_run_s",
                "during Meta's first run (warm-up"
                + (", its compilation)" if spec.get("meta_vos") else ")")
                + "; ours' numbers are in",
            ),
            ("meta", "during Meta's first timed run; ours' numbers are in"),
        ]
    else:
        steps = [
            ("load_s", "while loading the model"),
            ("first_run_s", "during the first run (warm-up" + (", compilation)" if compiled else ")")),
            ("s_per_frame", "during the timed runs"),
        ]
    for key, where in steps:
        if spec.get("warmup_frames", 1) <= 0 and key.endswith("first_run_s"):
            continue
        if key not in r:
            return where
    return "during the remaining timed runs (the first timed run of each is in)"


def _impl(stats: dict, record: dict, prefix: str) -> dict:
    out = {
        "fps": stats.get("fps"),
        "fps_steady": fps(stats.get("s_per_frame_steady")),
        "s_per_frame": stats.get("s_per_frame"),
        "s_per_frame_steady": stats.get("s_per_frame_steady"),
        "tracked_frames": stats.get("tracked_frames"),
        "load_s": record.get(f"{prefix}load_s"),
        "first_run_s": record.get(f"{prefix}first_run_s"),
        "cuda_peak_mb": stats.get("cuda_own_peak_mb", stats.get("cuda_max_allocated_mb")),
        "growth_kb_per_frame_per_object": stats.get("resident_growth_kb_per_frame_per_object"),
        "peak_rss_mb": record.get("peak_rss_mb"),
    }
    if record.get(f"{prefix}dynamo") or (not prefix and record.get("dynamo")):
        out["dynamo"] = record.get(f"{prefix}dynamo") or record.get("dynamo")
    return {k: v for k, v in out.items() if v is not None}


# ====================================================================== reading the processes' output


def read_child(log_text: str) -> tuple[dict | None, dict | None]:
    """(result record, last partial record) from a child's output."""
    result = partial = None
    for line in log_text.splitlines():
        if line.startswith(RESULT_PREFIX):
            result = json.loads(line[len(RESULT_PREFIX) :])
        elif line.startswith(PROGRESS_PREFIX):
            partial = json.loads(line[len(PROGRESS_PREFIX) :])
    return result, partial


def read_junit(path: Path) -> tuple[dict, list[dict], list[str]]:
    """(counts, failures, skip reasons) of a JUnit XML file (all its test suites)."""
    counts = {"passed": 0, "failed": 0, "errors": 0, "skipped": 0}
    failures, skips = [], []
    if not path.is_file():
        return counts, failures, skips
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError:
        return counts, failures, skips
    for case in root.iter("testcase"):
        if not case.get("name"):  # pytest's placeholder for a test cut off by an interruption
            continue
        name = f"{case.get('classname', '')}::{case.get('name', '')}"
        kinds = {child.tag: child for child in case}
        if "failure" in kinds or "error" in kinds:
            kind = "failure" if "failure" in kinds else "error"
            counts["failed" if kind == "failure" else "errors"] += 1
            msg = (kinds[kind].get("message") or kinds[kind].text or "").strip().splitlines()
            failures.append({"test": name, "message": (msg[0] if msg else "?")[:500]})
        elif "skipped" in kinds:
            counts["skipped"] += 1
            reason = (kinds["skipped"].get("message") or "").strip()
            if reason and reason not in skips:
                skips.append(reason)
        else:
            counts["passed"] += 1
    return counts, failures, skips


def junit_seconds(path: Path) -> dict[str, float]:
    """Seconds per test (setup + call + teardown) from a JUnit XML file."""
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError):
        return {}
    return {
        f"{c.get('classname', '')}::{c.get('name')}": round(float(c.get("time") or 0.0), 1)
        for c in root.iter("testcase")
        if c.get("name")
    }


def read_pytest_log(text: str) -> tuple[dict, list[dict], list[str]]:
    """Outcomes from ``pytest -v`` lines (``path::test PASSED [ 10%]``), for a run stopped midway."""
    counts = {"passed": 0, "failed": 0, "errors": 0, "skipped": 0}
    failures = []
    key = {"PASSED": "passed", "FAILED": "failed", "ERROR": "errors", "SKIPPED": "skipped"}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and "::" in parts[0] and parts[1] in key:
            counts[key[parts[1]]] += 1
            if parts[1] in ("FAILED", "ERROR"):
                failures.append({"test": parts[0], "message": "see tests.log"})
    running = [ln.split()[0] for ln in text.splitlines() if "::" in ln and len(ln.split()) == 1]
    if running:
        failures.append({"test": running[-1], "message": "still running when the time budget ran out"})
    return counts, failures, []


def read_failures(text: str) -> list[dict]:
    """The header records of a failures file (or of the part of one that a run appended)."""
    records = []
    for line in text.splitlines():
        for prefix, kind in ((FAILURE_PREFIX, None), (INTERRUPTED_PREFIX, "interrupted")):
            if line.startswith(prefix):
                try:
                    record = json.loads(line[len(prefix) :])
                except ValueError:
                    continue
                if kind:
                    record["outcome"] = kind
                records.append(record)
    return records


def _leaf(test: str) -> str:
    """``path/to/test_x.py::test_a[p]`` and JUnit's ``path.to.test_x::test_a[p]`` alike: ``test_x::test_a[p]``."""
    head, _, tail = test.rpartition("::")
    module = head.replace("/", ".").removesuffix(".py").rsplit(".", 1)[-1]
    return f"{module}::{tail}"


def merge_failures(found: list[dict], recorded: list[dict]) -> list[dict]:
    """The failures of a pytest run: those its plugin recorded the moment they happened (full
    message, phase, seconds; the full reports are in tests-failures.txt), then any that only JUnit
    or the verbose log know of."""
    out, seen, names = [], set(), set()
    for r in recorded:
        entry = {"test": r.get("test") or "(between tests)", "outcome": r.get("outcome", "failed")}
        for key in ("when", "seconds", "seconds_in_test", "message", "where"):
            if r.get(key) is not None:
                entry[key] = r[key]
        out.append(entry)
        seen.add(_leaf(entry["test"]))
        names.add(entry["test"].rpartition("::")[2])
    for f in found:
        leaf = _leaf(f["test"])
        # JUnit names a test of a file outside the rootdir without its module ("::test_a")
        if leaf in seen or (leaf.startswith("::") and leaf[2:] in names):
            continue
        out.append(f)
        seen.add(leaf)
    return out


# ====================================================================== targets


def judge_targets(data: dict) -> list[dict]:
    """Every target of issue 14 that this run planned, judged from what was measured, or "not
    judged" with the reason (the run that was missing, and why)."""
    on_gpu = data.get("device") == "cuda"
    targets: list[dict] = []

    def add(name: str, status: str, value: Any = None, note: str = "") -> None:
        targets.append({"target": name, "status": status, "value": value, "note": note})

    compiled_dtype = "bf16" if on_gpu else "fp32"
    plans = (
        ("bench_eager", data.get("configs") or [], data.get("objects") or [], data.get("dtypes") or ["bf16"]),
        (
            "bench_compiled",
            data.get("compiled_configs") or [],
            data.get("compiled_objects") or [],
            [compiled_dtype],
        ),
    )
    for part_name, configs, objects, dtypes in plans:
        for dtype in dtypes:  # one pass per precision
            part = data["parts"].get(part_name, {})
            mode = MODES[part_name]
            items = part.get("items", [])

            def find(config: str, k: int, items=items, dtype=dtype) -> dict | None:
                return next(
                    (
                        i
                        for i in items
                        if i["config"] == config and i["objects"] == k and i.get("dtype", dtype) == dtype
                    ),
                    None,
                )

            def missing(
                config: str, k: int, part=part, part_name=part_name, find=find, dtype=dtype
            ) -> str | None:
                """Why the (config, k, dtype) run gives no complete numbers; None when it does."""
                if not on_gpu:
                    return "dry run on CPU: the targets are for a GPU"
                item = find(config, k)
                if item is None:
                    return f"{part_name} {part.get('status', 'not run')}: {part.get('note', 'not reached')}"
                if item["status"] != "ok":
                    return f"the {config} {dtype} {k}-object run: {item['status']}" + (
                        f" ({item['note']})" if item.get("note") else ""
                    )
                return None

            for config in configs:
                if 1 in objects:
                    if mode == "eager":
                        name = f"{config} {dtype}: FPS at least Meta's, both eager (1 object; aim 2x)"
                    else:
                        name = f"{config} {dtype}: FPS at least Meta's fastest, ours compiled vs vos_optimized (1 object; aim 2x)"
                    why = missing(config, 1)
                    one = find(config, 1)
                    ratio = one.get("fps_ratio_ours_over_meta") if one else None
                    if why:
                        alone = (one or {}).get("ours", {}).get("fps") if on_gpu else None
                        add(
                            name, "not judged", note=why + (f"; ours alone: {_f(alone)} FPS" if alone else "")
                        )
                    elif not _finite(ratio):
                        add(name, "not judged", note="ours alone: Meta's copy absent (.gpu-carry/meta)")
                    else:
                        status = (
                            "met (aim 2x met)"
                            if ratio >= FPS_RATIO_AIM
                            else "met"
                            if ratio >= FPS_RATIO_MIN
                            else "missed"
                        )
                        published = META_PUBLISHED_A100_FPS.get(config) if mode == "compiled" else None
                        add(
                            name,
                            status,
                            ratio,
                            f"ours {_f(one['ours'].get('fps'))} FPS, Meta {_f(one['meta'].get('fps'))} FPS here"
                            + (f"; Meta publishes {published} FPS on an A100" if published else ""),
                        )
                if 1 in objects and 5 in objects:
                    name = f"{config} {dtype}: 5 objects cost under {FIVE_OBJECT_COST_MAX:g}x one object (ours, {mode})"
                    why = missing(config, 1) or missing(config, 5)
                    s1 = (find(config, 1) or {}).get("ours", {}).get("s_per_frame")
                    s5 = (find(config, 5) or {}).get("ours", {}).get("s_per_frame")
                    if why:
                        add(name, "not judged", note=why)
                    elif _finite(s1) and _finite(s5) and s1 > 0:
                        cost = round(s5 / s1, 2)
                        add(
                            name,
                            "met" if cost < FIVE_OBJECT_COST_MAX else "missed",
                            cost,
                            f"{s5} vs {s1} s/frame",
                        )
                    else:
                        add(name, "not judged", note="no seconds per frame in the records")
                for k in objects:
                    name = (
                        f"{config} {dtype}, {k} obj: GPU memory flat in the number of frames (ours, {mode})"
                    )
                    why = missing(config, k)
                    item = find(config, k) or {}
                    growth = item.get("ours", {}).get("growth_kb_per_frame_per_object")
                    meta = item.get("meta", {}).get("growth_kb_per_frame_per_object")
                    if why:
                        add(name, "not judged", note=why)
                    elif not _finite(growth):
                        add(
                            name,
                            "not judged",
                            note=f"too few tracked frames to judge (needs >= {FLAT_MIN_FRAMES}; --frames {data.get('frames')})",
                        )
                    else:
                        add(
                            name,
                            "met" if growth <= FLAT_KB_PER_FRAME_PER_OBJECT else "missed",
                            growth,
                            f"KB per frame and object from frame 20 on (bound {FLAT_KB_PER_FRAME_PER_OBJECT:g})"
                            + (f"; Meta {meta}" if _finite(meta) else ""),
                        )
    return targets


# ====================================================================== markdown


def _f(v: Any, nd: int = 3) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{nd}g}" if abs(v) < 1000 else f"{v:.0f}"
    return str(v)


def _one_line(text: str, limit: int = 400) -> str:
    text = " / ".join(ln.strip() for ln in str(text).splitlines() if ln.strip())
    text = text.replace("|", "\\|")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _tests_lines(name: str, tests: dict) -> list[str]:
    c = tests.get("counts")
    if not c:
        return []
    lines = [
        "",
        (
            f"## {TITLES[name]}: {c.get('passed', 0)} passed, {c.get('failed', 0)} failed, "
            f"{c.get('errors', 0)} errors, {c.get('skipped', 0)} skipped"
        ),
        "",
    ]
    for f in tests.get("failures", []):
        outcome = f.get("outcome", "failed")
        if outcome == "interrupted":
            where = f" at {_one_line(f['where'], 300)}" if f.get("where") else ""
            lines.append(
                f"- **{f['test']}**: still running when stopped at the time budget "
                f"({_f(f.get('seconds_in_test'))} s into it){where}"
            )
            continue
        how = f" ({outcome} in {f['when']}, {_f(f.get('seconds'))} s)" if f.get("when") else ""
        lines.append(f"- **{f['test']}**{how}: {_one_line(f.get('message', '?'))}")
    if tests.get("failures"):
        lines.append("- full reports (traceback, captured output): tests-failures.txt")
    if tests.get("skip_reasons"):
        lines.append(f"- skipped because: {'; '.join(tests['skip_reasons'])}")
    return lines


def _bench_lines(name: str, part: dict) -> list[str]:
    items = part.get("items", [])
    if not items:
        return []
    modes = list(dict.fromkeys(i.get("mode", "–") for i in items))
    lines = [
        "",
        f"## {TITLES[name]}",
        "",
        "Mode: " + "; ".join(modes) + ".",
        "",
        (
            "| variant | dtype | obj | status | FPS ours (steady) | FPS Meta (steady) | ours/Meta | GPU peak MB "
            "ours / Meta | growth KB ours / Meta | load s ours / Meta | first run s ours / Meta | mask IoU min "
            "| logit rel-L2 max |"
        ),
        "|" + "---|" * 13,
    ]
    for i in items:
        o, m, a = i.get("ours", {}), i.get("meta", {}), i.get("agreement", {})
        lines.append(
            "| "
            + " | ".join(
                [
                    i["config"],
                    i.get("dtype", "?"),
                    str(i["objects"]),
                    i["status"] + (f" ({i['note']})" if i.get("note") else ""),
                    f"{_f(o.get('fps'))} ({_f(o.get('fps_steady'))})",
                    f"{_f(m.get('fps'))} ({_f(m.get('fps_steady'))})" if m else "–",
                    _f(i.get("fps_ratio_ours_over_meta")),
                    f"{_f(o.get('cuda_peak_mb'))} / {_f(m.get('cuda_peak_mb'))}",
                    f"{_f(o.get('growth_kb_per_frame_per_object'))} / {_f(m.get('growth_kb_per_frame_per_object'))}",
                    f"{_f(o.get('load_s'))} / {_f(m.get('load_s'))}",
                    f"{_f(o.get('first_run_s'))} / {_f(m.get('first_run_s'))}",
                    _f(a.get("iou_min"), 5) + (f" (vs {a['against']})" if a else ""),
                    _f(a.get("logit_rel_l2_max")),
                ]
            )
            + " |"
        )
    return lines


def markdown(d: dict) -> str:
    env = d["parts"]["environment"]
    where = env.get("gpu") or f"CPU ({env.get('cpu', '?')})"
    lines = [
        f"# GPU check: {d['status'].upper()}",
        "",
        (
            f"{d.get('date', '?')} · {where} · torch {env.get('torch', '?')} · CUDA {env.get('cuda') or '–'} · "
            f"python {env.get('python', '?')} · napari-sam2 {env.get('napari_sam2_git', '?')}"
        ),
        "",
        f"command: `{d.get('command', '?')}`  ",
        (
            f"device {d.get('device')}, {d.get('frames')} tracked frames, budget {d.get('budget_s')} s, "
            f"elapsed {d.get('elapsed_s', '–')} s"
        ),
        "",
        "| part | status | seconds | note |",
        "|---|---|---|---|",
    ]
    for name in PARTS:
        e = d["parts"][name]
        lines.append(
            f"| {name} | {e['status']} | {_f(e.get('seconds'))} | {_one_line(e.get('note', ''), 600)} |"
        )
    targets = d.get("targets") or []
    if targets:
        judged = [t for t in targets if t["status"] != "not judged"]
        met = sum(t["status"].startswith("met") for t in judged)
        lines += [
            "",
            f"## Targets (issue 14): {len(judged)} of {len(targets)} judged",
            "",
            (
                f"Judged: {len(judged)} ({met} met, {len(judged) - met} missed). Not judged: "
                f"{len(targets) - len(judged)}, each with the reason in its note (the run it needs was "
                "not made, not finished, or this is no GPU)."
            ),
            "",
            "| target | status | value | note |",
            "|---|---|---|---|",
        ]
        for t in targets:
            lines.append(
                f"| {t['target']} | {t['status']} | {_f(t['value'])} | {_one_line(t['note'], 600)} |"
            )
    for name in ("tests_eager", "bench_eager", "bench_compiled", "tests_compiled"):
        part = d["parts"][name]
        lines += _tests_lines(name, part) if name.startswith("tests") else _bench_lines(name, part)
    if any(d["parts"][n].get("items") for n in MODES):
        lines += [
            "",
            (
                "FPS over all tracked frames (steady: from frame 7, memory bank full); GPU peak MB = the "
                "implementation's weights + frames + the peak of its run; growth = resident GPU memory per "
                "frame and object from frame 20 on; first run = the untimed warm-up (with compile: the "
                "compilation)."
            ),
        ]
    if d.get("problems"):
        lines += ["", "## Problems", ""] + [f"- {p}" for p in d["problems"]]
    lines += [
        "",
        (
            "Full numbers: summary.json, bench.jsonl (every record), tests-junit.xml, tests-failures.txt (every "
            "failed test's full report), tests.log, bench.log, gpu_check.log. Put these tables, with the date, "
            "the machine and the command above, into docs/benchmarks.md (see docs/gpu-check.md)."
        ),
        "",
    ]
    return "\n".join(lines)
