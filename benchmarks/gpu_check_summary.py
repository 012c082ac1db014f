"""The GPU check's summary: one JSON and one Markdown file, the issue's targets judged from the numbers.

``gpu_check.py`` fills a :class:`Summary` part by part and writes it after every part, so whatever
stops the run (time budget, a crash, the device call's own limit), the files on disk say how far it
got. See docs/gpu-check.md for how to read them.
"""

from __future__ import annotations

import json
import math
import os
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from bench_speed import PROGRESS_PREFIX, RESULT_PREFIX

SCHEMA = 1
PARTS = ("environment", "install", "weights", "tests", "bench")
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
        items = self.data["parts"]["bench"].get("items", [])
        bad += [f"bench {i['config']} {i['objects']} obj" for i in items if i["status"] in BAD]
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
        "status": status,
        "seconds": round(seconds, 1),
        "mode": _mode(spec),
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


def _mode(spec: dict) -> str:
    ours = spec["dtype"] + (" + compile" if spec.get("compile") else "")
    if "meta_repo" not in spec:
        return f"ours {ours} (Meta's copy absent)"
    meta = "SAM2VideoPredictorVOS (vos_optimized, compiled)" if spec.get("meta_vos") else "SAM2VideoPredictor"
    return f"ours {ours} vs Meta {meta} {spec['dtype']}"


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
    counts = {"passed": 0, "failed": 0, "errors": 0, "skipped": 0}
    failures, skips = [], []
    if not path.is_file():
        return counts, failures, skips
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError:
        return counts, failures, skips
    for case in root.iter("testcase"):
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


# ====================================================================== targets


def judge_targets(data: dict) -> list[dict]:
    """The issue's targets against what was measured; "not judged" with the reason otherwise."""
    items = [i for i in data["parts"]["bench"].get("items", []) if i.get("ours")]
    on_gpu = data.get("device") == "cuda"
    targets = []

    def add(name: str, status: str, value: Any = None, note: str = "") -> None:
        targets.append({"target": name, "status": status, "value": value, "note": note})

    configs = list(dict.fromkeys(i["config"] for i in items)) or list(data.get("configs", []))
    for config in configs:
        one = next((i for i in items if i["config"] == config and i["objects"] == 1), None)
        name = f"{config}: FPS at least Meta's on this GPU (1 object; aim 2x)"
        ratio = one.get("fps_ratio_ours_over_meta") if one else None
        if not on_gpu:
            add(name, "not judged", note="dry run on CPU: the targets are for a GPU")
        elif not _finite(ratio):
            add(name, "not judged", note="no side-by-side number (Meta's copy absent or the run incomplete)")
        else:
            status = (
                "met (aim 2x met)"
                if ratio >= FPS_RATIO_AIM
                else "met"
                if ratio >= FPS_RATIO_MIN
                else "missed"
            )
            published = META_PUBLISHED_A100_FPS.get(config)
            add(
                name,
                status,
                ratio,
                f"ours {one['ours'].get('fps')} FPS, Meta {one['meta'].get('fps')} FPS here"
                + (f"; Meta publishes {published} FPS on an A100" if published else ""),
            )
        five = next((i for i in items if i["config"] == config and i["objects"] == 5), None)
        name = f"{config}: 5 objects cost under {FIVE_OBJECT_COST_MAX:g}x one object (ours)"
        s1 = one["ours"].get("s_per_frame") if one else None
        s5 = five["ours"].get("s_per_frame") if five else None
        if not on_gpu:
            add(name, "not judged", note="dry run on CPU: the targets are for a GPU")
        elif _finite(s1) and _finite(s5) and s1 > 0:
            cost = round(s5 / s1, 2)
            add(name, "met" if cost < FIVE_OBJECT_COST_MAX else "missed", cost, f"{s5} vs {s1} s/frame")
        else:
            add(name, "not judged", note="1- and 5-object runs of ours not both measured")
        for item in (i for i in items if i["config"] == config):
            name = f"{config}, {item['objects']} obj: GPU memory flat in the number of frames (ours)"
            growth = item["ours"].get("growth_kb_per_frame_per_object")
            meta = item.get("meta", {}).get("growth_kb_per_frame_per_object")
            if not on_gpu:
                add(name, "not judged", note="dry run on CPU: no device memory to read")
            elif not _finite(growth):
                add(name, "not judged", note="too few frames to judge (needs >= 30 tracked frames)")
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
        lines.append(f"| {name} | {e['status']} | {_f(e.get('seconds'))} | {e.get('note', '')} |")
    tests = d["parts"]["tests"]
    if tests.get("counts"):
        c = tests["counts"]
        lines += [
            "",
            (
                f"## Tests (`pytest -m gpu`): {c.get('passed', 0)} passed, {c.get('failed', 0)} failed, "
                f"{c.get('errors', 0)} errors, {c.get('skipped', 0)} skipped"
            ),
            "",
        ]
        for f in tests.get("failures", []):
            lines.append(f"- **{f['test']}**: {f['message']}")
        if tests.get("skip_reasons"):
            lines.append(f"- skipped because: {'; '.join(tests['skip_reasons'])}")
    items = d["parts"]["bench"].get("items", [])
    if items:
        lines += [
            "",
            "## Benchmark",
            "",
            (
                "FPS over all tracked frames (steady: from frame 7, memory bank full); GPU peak MB = the "
                "implementation's weights + frames + the peak of its run; growth = resident GPU memory per "
                "frame and object from frame 20 on; first run = the untimed warm-up (compilation)."
            ),
            "",
            (
                "| variant | obj | status | mode | FPS ours (steady) | FPS Meta (steady) | ours/Meta | GPU peak MB "
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
                        str(i["objects"]),
                        i["status"] + (f" ({i['note']})" if i.get("note") else ""),
                        i.get("mode", "–"),
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
    if d.get("targets"):
        lines += ["", "## Targets (issue 14)", "", "| target | status | value | note |", "|---|---|---|---|"]
        for t in d["targets"]:
            lines.append(f"| {t['target']} | {t['status']} | {_f(t['value'])} | {t['note']} |")
    if d.get("problems"):
        lines += ["", "## Problems", ""] + [f"- {p}" for p in d["problems"]]
    lines += [
        "",
        (
            "Full numbers: summary.json, bench.jsonl (every record), tests-junit.xml, tests.log, bench.log, "
            "gpu_check.log. Put these tables, with the date, the machine and the command above, into "
            "docs/benchmarks.md (see docs/gpu-check.md)."
        ),
        "",
    ]
    return "\n".join(lines)
