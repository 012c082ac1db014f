"""Speed of napari-sam2 per model variant, device and precision.

For each (variant, device, dtype) it measures, each part in a fresh process so that its
peak RSS (ru_maxrss) and peak CUDA memory belong to that part alone:

- ``image``: model load (build from the checkpoint), ``SAM2ImagePredictor.set_image`` and
  ``predict`` latency (median of ``--repeats`` after ``--warmup`` untimed calls) on one
  256 x 256 uint16 frame, one click at a cell centroid, ``multimask_output=True``;
- ``track``, once per ``--objects`` count (default 1 and 5): seconds per frame of
  ``SAM2VideoPredictor.propagate_in_video`` over ``--frames`` tracked frames of the
  synthetic time-lapse (256 x 256 uint16), objects = clicks at the ground-truth cell
  centroids of frame 0. Only the propagated frames after the prompted frame 0 are timed:
  model load, ``init_state``, the prompts and the pre-flight (frame 0) are not.

bf16 means ``torch.autocast(device, bfloat16)`` (the video predictor's ``autocast_dtype``;
the image predictor's calls run inside the context). For bf16 the same process then runs
fp32 on the same frames and prompts (after the peaks are read) and reports the deviation:
per (frame, object) mask IoU and relative L2 of the low-resolution logits.

Results are JSON lines in ``--out`` (one ``run`` record with the machine, command and date,
one record per part, one ``summary`` per configuration) and a printed markdown table.

    python benchmarks/bench_speed.py                                   # tiny, auto device, fp32
    python benchmarks/bench_speed.py --configs sam2.1_hiera_t sam2.1_hiera_l --device cuda --dtype fp32 bf16
    python benchmarks/bench_speed.py --dry-run                         # print the plan only

Weights: by default the tests' deterministic test checkpoint of each variant (same
architecture and shapes as the official file, so the same speed); ``--weights official``
uses the cached official checkpoints instead.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

CONFIGS = (
    "sam2.1_hiera_t",
    "sam2.1_hiera_s",
    "sam2.1_hiera_b+",
    "sam2.1_hiera_l",
    "sam2_hiera_t",
    "sam2_hiera_s",
    "sam2_hiera_b+",
    "sam2_hiera_l",
)
DTYPES = ("fp32", "bf16")
FRAME_SHAPE = (256, 256)
SEED = 0
RESULT_PREFIX = "@@RESULT "  # a child's result line on stdout
# A child's partial result so far: what a driver that stops the child (time budget) can still report.
PROGRESS_PREFIX = "@@PROGRESS "
# Frames from which resident device memory must no longer grow: the per-object hot frames (16) and the
# feature cache (256 MiB, 16 frames of features) are full by then, so later growth is per-frame state.
FLAT_FROM = 20


# ====================================================================== shared helpers
# (meta_reference.py imports these, so both scripts measure the same way)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_revision() -> str | None:
    try:
        rev = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        return f"{rev}{'+dirty' if dirty else ''}" if rev else None
    except (OSError, subprocess.SubprocessError):
        return None


def machine_info() -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "cpu_cores": os.cpu_count(),
        "cpu_cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "load_avg_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "napari_sam2_git": git_revision(),
        "gpu": None,
        "cuda": torch.version.cuda,
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["gpu_memory_gb"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
    return info


def describe_run(header: dict) -> str:
    """The lines to paste above a results table: date, machine, torch, command."""
    m = header["machine"]
    gpu = f"  GPU {m['gpu']}" if m.get("gpu") else ""
    return (
        f"{header['date']}  {m['cpu']} ({m['cpu_cores']} cores){gpu}  torch {m['torch']}\n"
        f"command: {header['command']}"
    )


def command_line() -> str:
    return " ".join(shlex.quote(a) for a in [Path(sys.executable).name, *sys.argv])


def now_iso() -> str:
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


def sync(device) -> None:
    """Wait for queued GPU work, so that timers measure it."""
    import torch

    dev = torch.device(device)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    elif dev.type == "mps":
        torch.mps.synchronize()


def reset_device_peak(device) -> None:
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.reset_peak_memory_stats()


def device_peak_mb(device) -> float | None:
    import torch

    if torch.device(device).type == "cuda":
        return round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return None


def autocast(device, dtype: str):
    import torch

    if dtype == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)


def resolve_checkpoint(config: str, weights: str, checkpoint: str | None = None) -> Path:
    """The checkpoint file: an explicit path, the cached official file, or the test weights."""
    if checkpoint:
        return Path(checkpoint)
    if weights == "official":
        from napari_sam2.engine.weights.download import ensure_checkpoint

        return ensure_checkpoint(config, None, download=False)
    sys.path.insert(0, str(ROOT / "tests"))
    import conftest  # the tests' deterministic weights

    if not conftest.GOLDEN_DIR.is_dir():  # make_test_checkpoint would pytest.skip()
        raise SystemExit(
            f"test weights need {conftest.GOLDEN_DIR} (../shared/golden beside the checkout, or "
            "$NAPARI_SAM2_GOLDEN_DIR); use --weights official or --checkpoint FILE instead"
        )
    return conftest.make_test_checkpoint(config)


def tracking_inputs(n_tracked: int, n_objects: int) -> tuple[np.ndarray, list[tuple[int, list[float]]]]:
    """(T, H, W) uint16 frames with T = n_tracked + 1, and one click (x, y) per object.

    Objects are the first ``n_objects`` ground-truth cells of frame 0 (by id), each
    clicked at its centroid.
    """
    from napari_sam2.plugin.sample_data import synthetic_timelapse

    image, labels = synthetic_timelapse(n_frames=n_tracked + 1, shape=FRAME_SHAPE, seed=SEED)
    ids = [int(i) for i in np.unique(labels[0]) if i > 0]
    if n_objects > len(ids):
        raise ValueError(f"frame 0 has {len(ids)} cells; cannot track {n_objects} objects")
    prompts = []
    for obj_id in ids[:n_objects]:
        ys, xs = np.nonzero(labels[0] == obj_id)
        prompts.append((obj_id, [float(xs.mean()), float(ys.mean())]))
    return image, prompts


def time_propagation(frames_iter, device, on_frame=None) -> tuple[list[float], list[np.ndarray], list[int]]:
    """Consume a ``propagate_in_video`` generator; seconds of every frame after the first.

    Each yielded mask batch is turned into a boolean numpy array (what a caller does with
    it), so the device-to-host copy is part of a frame's time. The first yield (the
    prompted frame, including the pre-flight memory encoding) is not timed.
    ``on_frame(item)``, if given, runs after each frame's clock reading and is not timed
    (bookkeeping of the benchmark itself: memory readings, keeping logits).
    """
    seconds, masks, order = [], [], []
    t_prev = None
    for item in frames_iter:
        frame_idx, _obj_ids, video_res_masks = item
        binary = (video_res_masks[:, 0] > 0.0).cpu().numpy()
        sync(device)
        now = time.perf_counter()
        if t_prev is not None:
            seconds.append(now - t_prev)
        t_prev = now
        masks.append(binary)
        order.append(int(frame_idx))
        if on_frame is not None:
            on_frame(item)
            sync(device)
            t_prev = time.perf_counter()
    return seconds, masks, order


def device_allocated_bytes(device) -> int | None:
    """Bytes the caching allocator has handed out on a CUDA device (a host-side counter: no sync)."""
    import torch

    if torch.device(device).type == "cuda":
        return torch.cuda.memory_allocated(torch.device(device))
    return None


def memory_trace_stats(trace: list[int | None], objects: int) -> dict[str, Any]:
    """Resident device memory over the tracked frames (bytes after each yield, minus what the
    benchmark itself holds): growth from frame ``FLAT_FROM`` on, per frame and object."""
    if not trace or trace[0] is None:
        return {}
    stats: dict[str, Any] = {
        "resident_mb_first": round(trace[0] / 2**20, 1),
        "resident_mb_last": round(trace[-1] / 2**20, 1),
    }
    tail = trace[FLAT_FROM:]
    if len(tail) >= 10:  # a least-squares slope over at least 10 frames after the caches are full
        x = np.arange(len(tail), dtype=np.float64)
        slope = np.polyfit(x, np.asarray(tail, dtype=np.float64), 1)[0]
        stats["resident_growth_kb_per_frame_per_object"] = round(slope / 1024 / max(1, objects), 2)
        stats["resident_growth_from_frame"] = FLAT_FROM
    return stats


def dynamo_stats() -> dict[str, int]:
    """torch.compile's counters so far in this process (graphs compiled, graph breaks)."""
    try:
        from torch._dynamo.utils import counters
    except ImportError:
        return {}
    return {
        "unique_graphs": int(counters["stats"].get("unique_graphs", 0)),
        "graph_breaks": int(sum(counters["graph_break"].values())),
    }


def eager(model_is_compiled: bool):
    """Run compiled modules eagerly inside the block (a float32 reference without recompiling)."""
    import torch

    if model_is_compiled and hasattr(torch, "compiler") and hasattr(torch.compiler, "set_stance"):
        return torch.compiler.set_stance("force_eager")
    return contextlib.nullcontext()


def progress(record: dict) -> None:
    """Print a child's partial result (the driver keeps the last one if it has to stop the child)."""
    print(PROGRESS_PREFIX + json.dumps(record), flush=True)


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two boolean masks; 1.0 when both are empty."""
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def rel_l2(a, b) -> float:
    """||a - b|| / ||b|| (b is the reference)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    den = np.linalg.norm(b)
    num = np.linalg.norm(a - b)
    return float(num / den) if den > 0 else (0.0 if num == 0 else float("inf"))


def deviation_stats(ious: list[float], rels: list[float]) -> dict[str, float]:
    return {
        "iou_min": round(min(ious), 5),
        "iou_mean": round(float(np.mean(ious)), 5),
        "logit_rel_l2_max": float(f"{max(rels):.4g}"),
        "logit_rel_l2_mean": float(f"{np.mean(rels):.4g}"),
    }


# The first tracked frame (after the prompted frame 0) from which the memory bank is full
# (the prompted frame + 6 previous ones, SAM 2's num_maskmem = 7): earlier frames attend to
# fewer memories and are cheaper, so short runs understate the steady cost.
STEADY_FROM = 7


def per_frame_stats(seconds: list[float]) -> dict[str, Any]:
    if not seconds:
        return {"tracked_frames": 0}
    mean = sum(seconds) / len(seconds)
    steady = seconds[STEADY_FROM - 1 :]
    return {
        "tracked_frames": len(seconds),
        "s_per_frame": round(mean, 4),
        "s_per_frame_steady": round(sum(steady) / len(steady), 4) if steady else None,
        "s_per_frame_median": round(statistics.median(seconds), 4),
        "s_first_frame": round(seconds[0], 4),
        "fps": round(1.0 / mean, 3) if mean > 0 else None,
        "frame_seconds": [round(s, 4) for s in seconds],
    }


def setup_torch(threads: int | None) -> None:
    import torch

    if threads:
        torch.set_num_threads(threads)


def append_jsonl(path: Path, record: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(json.dumps(record) + "\n")


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    src = str(ROOT / "src")
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("TQDM_DISABLE", "1")  # Meta's propagate_in_video prints a progress bar
    return env


def run_child(script: Path, spec: dict, out: Path) -> dict:
    """Run one measurement in a fresh interpreter; its result record (or an error record)."""
    cmd = [sys.executable, str(script), "--child", json.dumps(spec), "--out", str(out)]
    proc = subprocess.run(cmd, env=child_env(), capture_output=True, text=True)
    sys.stderr.write(proc.stderr)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX) :])
    sys.stdout.write(proc.stdout)
    last = [ln for ln in proc.stderr.splitlines() if ln.strip()][-1:]
    record = {**spec, "kind": "error", "returncode": proc.returncode, "error": last[0] if last else None}
    append_jsonl(out, record)
    return record


def emit(record: dict, out: Path) -> None:
    append_jsonl(out, record)
    print(RESULT_PREFIX + json.dumps(record), flush=True)


# ====================================================================== measurements (children)


def timed_model_load(spec: dict, ckpt: Path):
    """Build the model from its checkpoint (``compile`` only wraps it: compiling happens at the
    first calls, in the untimed warm-up). Returns (model, seconds)."""
    from napari_sam2.engine.weights.build import build_sam2_model, compile_model

    device = spec["device"]
    sync(device)
    t0 = time.perf_counter()
    if spec.get("image_size"):
        model = _model_at_size(spec["config"], ckpt, device, spec["image_size"])
    else:
        model = build_sam2_model(spec["config"], ckpt, device)
    if spec.get("compile", False):
        compile_model(model, **compile_options(spec))
    sync(device)
    return model, time.perf_counter() - t0


def _model_at_size(config: str, ckpt: Path, device: str, image_size: int):
    """The variant's architecture and weights at another input size (``--image-size``, for quick
    dry runs on a CPU: its numbers are not the variant's)."""
    import dataclasses

    from napari_sam2.engine.weights.build import load_model_weights
    from napari_sam2.engine.weights.checkpoints import load_state_dict_file
    from napari_sam2.model import SAM2Model, load_config

    cfg = load_config(config)
    side = image_size // 16  # the memory attention's map: the image encoder's stride-16 level
    cfg = dataclasses.replace(
        cfg,
        image_size=image_size,
        memory_attention=dataclasses.replace(cfg.memory_attention, feat_sizes=(side, side)),
    )
    model = SAM2Model(cfg)
    load_model_weights(model, load_state_dict_file(ckpt), source=f"checkpoint {ckpt}")
    return model.to(device).eval()


def compile_options(spec: dict) -> dict:
    """``compile_model`` keyword arguments of a spec: its ``compile_mode`` when one is given
    ("default" means inductor's own default mode), else compile_model's default."""
    mode = spec.get("compile_mode")
    if mode is None:
        return {}
    return {"mode": None if mode == "default" else mode}


def measure_image(spec: dict) -> dict:
    from napari_sam2.engine.predict.image_predictor import SAM2ImagePredictor
    from napari_sam2.plugin.sample_data import synthetic_timelapse

    setup_torch(spec.get("threads"))
    device, dtype = spec["device"], spec["dtype"]
    ckpt = resolve_checkpoint(spec["config"], spec["weights"], spec.get("checkpoint"))
    reset_device_peak(device)
    model, load_s = timed_model_load(spec, ckpt)

    image, labels = synthetic_timelapse(n_frames=1, shape=FRAME_SHAPE, seed=SEED)
    frame = image[0]
    cell = int(min(i for i in np.unique(labels[0]) if i > 0))
    ys, xs = np.nonzero(labels[0] == cell)
    point, label = [[float(xs.mean()), float(ys.mean())]], [1]
    predictor = SAM2ImagePredictor(model)

    def set_image():
        with autocast(device, dtype):
            predictor.set_image(frame)

    def predict():
        with autocast(device, dtype):
            return predictor.predict(point_coords=point, point_labels=label, multimask_output=True)

    def timed(fn, n):
        times = []
        for _ in range(n):
            sync(device)
            t = time.perf_counter()
            fn()
            sync(device)
            times.append(time.perf_counter() - t)
        return times

    timed(set_image, spec["warmup"])
    set_times = timed(set_image, spec["repeats"])
    timed(predict, spec["warmup"])
    pred_times = timed(predict, spec["repeats"])
    record = {
        **spec,
        "kind": "image",
        "checkpoint_file": ckpt.name,
        "load_s": round(load_s, 3),
        "set_image_ms": round(1000 * statistics.median(set_times), 2),
        "predict_ms": round(1000 * statistics.median(pred_times), 2),
        "set_image_ms_all": [round(1000 * t, 2) for t in set_times],
        "predict_ms_all": [round(1000 * t, 2) for t in pred_times],
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "cuda_max_allocated_mb": device_peak_mb(device),
    }
    if dtype != "fp32":  # deviation of this precision from fp32, same image and click
        masks, _, low = predict()
        predictor.set_image(frame)
        ref_masks, _, ref_low = predictor.predict(
            point_coords=point, point_labels=label, multimask_output=True
        )
        ious = [mask_iou(m, r) for m, r in zip(masks, ref_masks)]
        rels = [rel_l2(a, b) for a, b in zip(low, ref_low)]
        record["vs_fp32"] = deviation_stats(ious, rels)
    return record


def track_once(predictor, image, prompts, device, max_frames=None, on_frame=None):
    """init_state + clicks (not timed), then the timed propagation. Returns (state, seconds, masks)."""
    state = predictor.init_state(image)
    for obj_id, xy in prompts:
        predictor.add_new_points_or_box(state, 0, obj_id, points=[xy], labels=[1])
    seconds, masks, _ = time_propagation(
        predictor.propagate_in_video(state, max_frame_num_to_track=max_frames), device, on_frame
    )
    return state, seconds, masks


def low_res_logits(predictor, state, frame_idx) -> list[np.ndarray]:
    return [o.pred_masks.float().cpu().numpy()[0, 0] for o in predictor.frame_outputs(state, frame_idx)]


def measure_track(spec: dict) -> dict:
    import torch

    from napari_sam2.engine.predict.video_predictor import SAM2VideoPredictor

    setup_torch(spec.get("threads"))
    device, dtype = spec["device"], spec["dtype"]
    ckpt = resolve_checkpoint(spec["config"], spec["weights"], spec.get("checkpoint"))
    image, prompts = tracking_inputs(spec["frames"], spec["objects"])
    reset_device_peak(device)
    model, load_s = timed_model_load(spec, ckpt)

    autocast_dtype = torch.bfloat16 if dtype == "bf16" else None
    predictor = SAM2VideoPredictor(
        model, fill_hole_area=spec["fill_hole_area"], autocast_dtype=autocast_dtype
    )
    partial = {**spec, "kind": "track", "checkpoint_file": ckpt.name, "load_s": round(load_s, 3)}
    progress(partial)
    if spec["warmup_frames"] > 0:  # untimed; with compile this is where compilation happens
        sync(device)
        t0 = time.perf_counter()
        state, _, _ = track_once(predictor, image, prompts, device, max_frames=spec["warmup_frames"])
        state.close()
        sync(device)
        partial["first_run_s"] = round(time.perf_counter() - t0, 3)
        partial["first_run_frames"] = spec["warmup_frames"]
        if spec.get("compile"):
            partial["dynamo"] = dynamo_stats()
        progress(partial)
    runs = []
    state = masks = None
    trace: list[int | None] = []  # resident device memory after each frame of the last run

    def read_memory(_item) -> None:
        trace.append(device_allocated_bytes(device))

    for _ in range(spec["track_repeats"]):
        if state is not None:
            state.close()
        trace.clear()
        state, seconds, masks = track_once(predictor, image, prompts, device, on_frame=read_memory)
        runs.append(seconds)
    run = sorted(runs, key=sum)[len(runs) // 2]  # the median run by total time
    record = {
        **partial,
        **per_frame_stats(run),
        "s_per_frame_all_repeats": [round(sum(s) / len(s), 4) for s in runs if s],
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "cuda_max_allocated_mb": device_peak_mb(device),
        **memory_trace_stats(trace, spec["objects"]),
    }
    progress(record)
    if dtype != "fp32" and spec.get("compare_fp32", True):  # same frames and prompts in float32
        ref = SAM2VideoPredictor(model, fill_hole_area=spec["fill_hole_area"], autocast_dtype=None)
        with eager(spec.get("compile", False)):  # an eager reference: no recompilation for float32
            ref_state, _, ref_masks = track_once(ref, image, prompts, device)
        ious, rels = [], []
        for f in range(len(masks)):
            ious += [mask_iou(a, b) for a, b in zip(masks[f], ref_masks[f])]
            rels += [
                rel_l2(a, b)
                for a, b in zip(low_res_logits(predictor, state, f), low_res_logits(ref, ref_state, f))
            ]
        record["vs_fp32"] = deviation_stats(ious, rels)
        ref_state.close()
    state.close()
    return record


# ====================================================================== summary and table


def summarize(records: list[dict]) -> list[dict]:
    """One summary per (config, device, dtype) from the part records of one run."""
    groups: dict[tuple, dict] = {}
    for r in records:
        if r.get("kind") not in ("image", "track", "error"):
            continue
        key = (r["config"], r["device"], r["dtype"] + ("+compile" if r.get("compile") else ""))
        g = groups.setdefault(
            key,
            {
                "kind": "summary",
                "config": key[0],
                "device": key[1],
                "dtype": key[2],
                "load_s": None,
                "set_image_ms": None,
                "predict_ms": None,
                "tracking": {},
                "peak_rss_mb": {},
                "cuda_max_allocated_mb": {},
                "errors": [],
                "_loads": [],
            },
        )
        if r.get("run_id"):
            g["run_id"] = r["run_id"]
        if r["kind"] == "error":
            g["errors"].append(r.get("part", "?") + (f"/{r['objects']}obj" if r.get("objects") else ""))
            continue
        g["_loads"].append(r["load_s"])
        part = "image" if r["kind"] == "image" else f"track_{r['objects']}obj"
        g["peak_rss_mb"][part] = r.get("peak_rss_mb")
        g["cuda_max_allocated_mb"][part] = r.get("cuda_max_allocated_mb")
        if r["kind"] == "image":
            g["set_image_ms"], g["predict_ms"] = r["set_image_ms"], r["predict_ms"]
            if "vs_fp32" in r:
                g.setdefault("vs_fp32", {})["image"] = r["vs_fp32"]
        else:
            g["tracking"][str(r["objects"])] = {
                "s_per_frame": r.get("s_per_frame"),
                "s_per_frame_steady": r.get("s_per_frame_steady"),
                "fps": r.get("fps"),
                "tracked_frames": r.get("tracked_frames"),
            }
            if "vs_fp32" in r:
                g.setdefault("vs_fp32", {})[f"track_{r['objects']}obj"] = r["vs_fp32"]
    out = []
    for g in groups.values():
        loads = g.pop("_loads")
        g["load_s"] = round(statistics.median(loads), 3) if loads else None
        out.append(g)
    return out


def _fmt(v, spec: str | None = None) -> str:
    if v is None:
        return "–"
    if not isinstance(v, float):
        return str(v)
    if spec is None:
        spec = ".0f" if abs(v) >= 100 else ".1f" if abs(v) >= 10 else ".3g"
    return format(v, spec)


def markdown_table(summaries: list[dict], objects: list[int]) -> str:
    head = ["variant", "device", "dtype", "load s", "set_image ms", "predict ms"]
    head += [f"track s/frame ({k} obj): all / from frame {STEADY_FROM}" for k in objects]
    head += ["peak RSS MB (" + " / ".join(["image"] + [f"{k} obj" for k in objects]) + ")"]
    any_cuda = any(v for s in summaries for v in s["cuda_max_allocated_mb"].values())
    if any_cuda:
        head += ["CUDA max alloc MB (" + " / ".join(["image"] + [f"{k} obj" for k in objects]) + ")"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for s in summaries:
        parts = ["image"] + [f"track_{k}obj" for k in objects]
        row = [
            s["config"],
            s["device"],
            s["dtype"],
            _fmt(s["load_s"]),
            _fmt(s["set_image_ms"]),
            _fmt(s["predict_ms"]),
        ]
        row += [
            " / ".join(
                _fmt(s["tracking"].get(str(k), {}).get(f)) for f in ("s_per_frame", "s_per_frame_steady")
            )
            for k in objects
        ]
        row += [" / ".join(_fmt(s["peak_rss_mb"].get(p), ".0f") for p in parts)]
        if any_cuda:
            row += [" / ".join(_fmt(s["cuda_max_allocated_mb"].get(p), ".0f") for p in parts)]
        if s["errors"]:
            row[0] += f" (failed: {', '.join(s['errors'])})"
        lines.append("| " + " | ".join(row) + " |")
    dev_rows = [(s, part, d) for s in summaries for part, d in s.get("vs_fp32", {}).items()]
    if dev_rows:
        lines += [
            "",
            "bf16 vs fp32 (same frames and prompts):",
            "",
            "| variant | device | part | mask IoU min | mask IoU mean | logit rel-L2 max | logit rel-L2 mean |",
            "|---|---|---|---|---|---|---|",
        ]
        for s, part, d in dev_rows:
            lines.append(
                f"| {s['config']} | {s['device']} | {part} | {d['iou_min']:.5f} | {d['iou_mean']:.5f} | "
                f"{d['logit_rel_l2_max']:.3g} | {d['logit_rel_l2_mean']:.3g} |"
            )
    return "\n".join(lines)


# ====================================================================== driver


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--configs",
        nargs="+",
        default=["sam2.1_hiera_t"],
        choices=CONFIGS,
        metavar="CONFIG",
        help=f"model variants (default sam2.1_hiera_t); any of: {', '.join(CONFIGS)}",
    )
    ap.add_argument("--device", nargs="+", default=["auto"], help="cpu, cuda, mps or auto (default auto)")
    ap.add_argument(
        "--dtype", nargs="+", default=["fp32"], choices=DTYPES, help="fp32 and/or bf16 (autocast)"
    )
    ap.add_argument(
        "--frames", type=int, default=8, help="tracked frames after the prompted frame 0 (default 8)"
    )
    ap.add_argument(
        "--objects", type=int, nargs="+", default=[1, 5], help="object counts to track (default 1 5)"
    )
    ap.add_argument(
        "--repeats", type=int, default=5, help="timed set_image/predict calls, median reported (default 5)"
    )
    ap.add_argument("--warmup", type=int, default=1, help="untimed set_image/predict calls first (default 1)")
    ap.add_argument(
        "--track-repeats",
        type=int,
        default=1,
        help="timed tracking runs, each on a fresh state; the median run is reported (default 1)",
    )
    ap.add_argument(
        "--warmup-frames",
        type=int,
        default=2,
        help="frames tracked in an untimed warm-up run before the timed one (default 2; 0: none)",
    )
    ap.add_argument("--parts", nargs="+", default=["image", "track"], choices=["image", "track"])
    ap.add_argument(
        "--weights",
        choices=["test", "official"],
        default="test",
        help="test: the tests' deterministic weights (default); official: cached official checkpoints",
    )
    ap.add_argument("--checkpoint", help="explicit checkpoint file (only with a single --configs entry)")
    ap.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the model's heavy components (napari_sam2.engine.weights.build.compile_model); "
        "the untimed warm-up calls and frames then include compilation",
    )
    ap.add_argument(
        "--compile-mode",
        default=None,
        help="torch.compile mode for --compile (default: compile_model's, max-autotune-no-cudagraphs; "
        "'default' for inductor's default mode, which compiles much faster)",
    )
    ap.add_argument(
        "--no-compare-fp32",
        action="store_true",
        help="with --dtype bf16, skip the float32 run that measures the deviation from fp32",
    )
    ap.add_argument(
        "--fill-hole-area", type=int, default=0, help="video predictor hole filling (default 0: off)"
    )
    ap.add_argument(
        "--threads", type=int, default=None, help="torch.set_num_threads in each child (default: torch's)"
    )
    ap.add_argument(
        "--image-size",
        type=int,
        default=None,
        help="build the model at this input size instead of the variant's (a multiple of 64; for quick "
        "dry runs on a CPU: the numbers are then not the variant's)",
    )
    ap.add_argument("--out", type=Path, default=HERE / "results" / "speed.jsonl")
    ap.add_argument(
        "--dry-run", action="store_true", help="parse the options and print the plan; run nothing"
    )
    ap.add_argument("--child", help=argparse.SUPPRESS)
    return ap


def check_args(ap: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.frames < 1:
        ap.error("--frames must be >= 1")
    if args.repeats < 1 or args.track_repeats < 1:
        ap.error("--repeats and --track-repeats must be >= 1")
    if args.warmup < 0 or args.warmup_frames < 0:
        ap.error("--warmup and --warmup-frames must be >= 0")
    if any(k < 1 for k in args.objects):
        ap.error("--objects must be >= 1")
    if args.image_size is not None and (args.image_size < 64 or args.image_size % 64):
        ap.error(f"--image-size must be a positive multiple of 64; got {args.image_size}")
    if args.checkpoint and len(args.configs) != 1:
        ap.error("--checkpoint needs exactly one --configs entry")
    for d in args.device:
        if d not in ("auto", "cpu", "mps") and not d.startswith("cuda"):
            ap.error(f"unknown --device {d!r}; use cpu, cuda, mps or auto")


def resolve_devices(names: list[str]) -> tuple[list[str], list[str]]:
    """Devices as torch names ("auto" resolved), and the problems found (e.g. no CUDA)."""
    from napari_sam2.engine.weights.build import resolve_device

    devices, problems = [], []
    for name in names:
        try:
            dev = str(resolve_device(name))
        except RuntimeError as e:
            problems.append(str(e))
            dev = name
        if dev not in devices:
            devices.append(dev)
    return devices, problems


def plan(args: argparse.Namespace, devices: list[str]) -> list[dict]:
    specs = []
    common = {
        "compile": args.compile,
        "compile_mode": args.compile_mode,
        "compare_fp32": not args.no_compare_fp32,
        "frames": args.frames,
        "repeats": args.repeats,
        "warmup": args.warmup,
        "track_repeats": args.track_repeats,
        "warmup_frames": args.warmup_frames,
        "weights": args.weights,
        "checkpoint": args.checkpoint,
        "fill_hole_area": args.fill_hole_area,
        "threads": args.threads,
        "image_size": args.image_size,
    }
    for config in args.configs:
        for device in devices:
            for dtype in args.dtype:
                base = {"config": config, "device": device, "dtype": dtype, **common}
                if "image" in args.parts:
                    specs.append({**base, "part": "image"})
                if "track" in args.parts:
                    for k in args.objects:
                        specs.append({**base, "part": "track", "objects": k})
    return specs


def main(argv: list[str] | None = None) -> int:
    ap = build_parser()
    args = ap.parse_args(argv)
    if args.child:
        spec = json.loads(args.child)
        record = measure_image(spec) if spec["part"] == "image" else measure_track(spec)
        emit(record, args.out)
        return 0
    check_args(ap, args)
    devices, problems = resolve_devices(args.device)
    run_id = datetime.datetime.now().strftime("%Y%m%dT%H%M%S")
    specs = [{**s, "run_id": run_id} for s in plan(args, devices)]
    if args.dry_run:
        print(f"plan ({len(specs)} fresh processes; results would be appended to {args.out}):")
        for s in specs:
            what = "load + set_image/predict" if s["part"] == "image" else f"track {s['objects']} obj"
            print(f"  {s['config']:16s} {s['device']:6s} {s['dtype']:5s} {what}")
        for p in problems:
            print(f"  note: {p}")
        return 0
    if problems:
        ap.error("; ".join(problems))
    # Generate / locate checkpoints once, here, so no child times the generation of test weights.
    for config in args.configs:
        resolve_checkpoint(config, args.weights, args.checkpoint)
    header = {
        "kind": "run",
        "run_id": run_id,
        "script": "bench_speed",
        "command": command_line(),
        "date": now_iso(),
        "machine": machine_info(),
        "options": {k: v for k, v in vars(args).items() if k not in ("child", "dry_run", "out")},
    }
    append_jsonl(args.out, header)
    print(json.dumps(header))
    records = []
    for spec in specs:
        print(
            f"# {spec['config']} {spec['device']} {spec['dtype']} {spec['part']}"
            + (f" {spec['objects']} obj" if spec["part"] == "track" else ""),
            flush=True,
        )
        records.append(run_child(Path(__file__), spec, args.out))
    summaries = summarize(records)
    for s in summaries:
        s.update(
            run_id=run_id,
            date=header["date"],
            command=header["command"],
            machine=header["machine"],
            frames=args.frames,
            weights=args.weights,
        )
        append_jsonl(args.out, s)
    print()
    print(describe_run(header))
    print()
    print(markdown_table(summaries, args.objects))
    return 0 if all(r.get("kind") != "error" for r in records) else 1


if __name__ == "__main__":
    sys.exit(main())
