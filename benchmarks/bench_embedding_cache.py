"""What the persistent embedding cache saves: a re-propagation after a correction, and a
second session on the same stack, with and without the cache.

Each measurement runs in a fresh process (the model loaded anew; the cache, when on, in a
folder that this run's earlier processes filled, as a user's later sessions find it):

1. ``repropagate``: open the stack, click frame 0, propagate through the stack (untimed:
   with the cache on, this is what fills it), click a correction on frame 1, then the timed
   re-propagation from frame 1 to the end. The in-RAM feature cache (256 MiB: about 12
   frames at 1024 px) cannot hold a 30-frame stack, so without the disk cache most frames
   are encoded again;
2. ``first_session``: a fresh folder: open, click frame 0 (the time to the first preview),
   the timed propagation; with the cache on this pays for writing every entry;
3. ``second_session``: the same in a new process, the cache (when on) filled by the earlier
   processes: the features are read.

Per measurement: seconds per tracked frame (the first yielded frame of a propagation, which
holds the prompted frame's memory encoding, is not timed), seconds in the image encoder
(``SAM2Model.forward_image``) and in getting a frame's features at all (the encoder, or the
hash and the read of a cache entry), each as a share of the timed time, and the time from
opening the stack to the first preview (``init_state`` with the normaliser fit and frame 0's
features, plus the click).

    PYTHONPATH=src python benchmarks/bench_embedding_cache.py                  # tiny, CPU, 30 frames
    PYTHONPATH=src python benchmarks/bench_embedding_cache.py --frames 3 --dry-run

Weights, frames and prompts as in bench_speed.py (test weights; the synthetic 256 x 256
time-lapse; clicks at ground-truth centroids). Results: JSON lines in ``--out`` and a table.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench_speed as bs  # noqa: E402  (the shared timing helpers)

SCENARIOS = ("repropagate", "first_session", "second_session")
# (scenario, cache) in the order they run: the cache-on processes share one folder, which
# repropagate fills, first_session refills from empty (its own folder) and second_session reads
PLAN = (
    ("repropagate", "off"),
    ("repropagate", "on"),
    ("first_session", "off"),
    ("first_session", "on"),
    ("second_session", "off"),
    ("second_session", "on"),
)


class Clock:
    """Seconds spent inside wrapped callables (only while ``active``)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self.active = False

    def wrap(self, name: str, fn):
        def timed(*args, **kwargs):
            t = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                if self.active:
                    self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t
                    self.calls[name] = self.calls.get(name, 0) + 1

        return timed


def inputs(n_frames: int):
    """Frames (T, H, W) uint16, one click per frame 0 and 1 (the same cell: a correction)."""
    from napari_sam2.plugin.sample_data import synthetic_timelapse

    image, labels = synthetic_timelapse(n_frames=n_frames, shape=bs.FRAME_SHAPE, seed=bs.SEED)
    # a cell present on both frames (cell 1 may divide, and so end, early in a short stack)
    cell = int(min(set(np.unique(labels[0])) & set(np.unique(labels[1])) - {0}))

    def click(t: int) -> list[float]:
        ys, xs = np.nonzero(labels[t] == cell)
        return [float(xs.mean()), float(ys.mean())]

    return image, click(0), click(1)


def measure(spec: dict) -> dict:
    import torch

    from napari_sam2.engine.cache.embedding_cache import EmbeddingCache
    from napari_sam2.engine.predict.video_predictor import SAM2VideoPredictor

    bs.setup_torch(spec.get("threads"))
    load_start = _load_avg()
    device = spec["device"]
    ckpt = bs.resolve_checkpoint(spec["config"], spec["weights"], spec.get("checkpoint"))
    model, load_s = bs.timed_model_load(spec, ckpt)
    cache = EmbeddingCache(spec["cache_dir"]) if spec["cache"] == "on" else None
    predictor = SAM2VideoPredictor(
        model,
        fill_hole_area=0,
        add_all_frames_to_correct_as_cond=True,  # as the plugin and the CLI build it
        autocast_dtype=torch.bfloat16 if spec["dtype"] == "bf16" else None,
        embedding_cache=cache,
    )
    clock = Clock()
    model.forward_image = clock.wrap("encoder", model.forward_image)
    embedder = predictor._frame_embedder()
    embedder.embed = clock.wrap("features", embedder.embed)
    image, click0, click1 = inputs(spec["frames"])

    t0 = time.perf_counter()
    state = predictor.init_state(image)
    predictor.add_new_points_or_box(state, 0, 1, points=[click0], labels=[1])
    first_preview_s = time.perf_counter() - t0
    if spec["scenario"] == "repropagate":
        bs.time_propagation(predictor.propagate_in_video(state), device)  # untimed; fills the cache
        predictor.add_new_points_or_box(state, 1, 1, points=[click1], labels=[1])
        frames_iter = predictor.propagate_in_video(state, start_frame_idx=1)
    else:
        frames_iter = predictor.propagate_in_video(state)

    # the timed part: from the first yield (the start frame) to the last frame
    def timed_frames():
        for i, item in enumerate(frames_iter):
            if i == 0:
                clock.active = True
                clock.seconds.clear()
                clock.calls.clear()
            yield item

    hits0, misses0 = (cache.hits, cache.misses) if cache else (0, 0)
    seconds, _, _ = bs.time_propagation(timed_frames(), device)
    clock.active = False
    total = sum(seconds)
    encoder = clock.seconds.get("encoder", 0.0)
    features = clock.seconds.get("features", 0.0)
    record = {
        **spec,
        "kind": "embedding_cache",
        "checkpoint_file": ckpt.name,
        "load_s": round(load_s, 3),
        "first_preview_s": round(first_preview_s, 3),
        "timed_frames": len(seconds),
        "timed_s": round(total, 3),
        "s_per_frame": round(total / len(seconds), 4) if seconds else None,
        "encoder_s_per_frame": round(encoder / len(seconds), 4) if seconds else None,
        "encoder_share": round(encoder / total, 4) if total else None,
        "encoder_calls": clock.calls.get("encoder", 0),
        "features_s_per_frame": round(features / len(seconds), 4) if seconds else None,
        "features_share": round(features / total, 4) if total else None,
        "feature_fetches": clock.calls.get("features", 0),
        "cache_hits": cache.hits - hits0 if cache else None,
        "cache_misses": cache.misses - misses0 if cache else None,
        "cache_entries": cache.usage().entries if cache else None,
        "peak_rss_mb": round(bs.peak_rss_mb(), 1),
        # the machine's 1-minute load average when this process started and ended: about
        # the threads used means the run had the cores to itself; more, that others shared them
        "load_avg_start": load_start,
        "load_avg_end": _load_avg(),
    }
    state.close()
    return record


def _load_avg() -> float | None:
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None


def table(records: list[dict]) -> str:
    lines = [
        (
            "| scenario | cache | s/frame | encoder s/frame | encoder share | features share | encoder runs "
            "| first preview s | speed-up | load start / end |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    base = {
        r["scenario"]: r["s_per_frame"] for r in records if r.get("cache") == "off" and r.get("s_per_frame")
    }
    for r in records:
        if r.get("kind") != "embedding_cache":
            lines.append(
                f"| {r.get('scenario')} | {r.get('cache')} | error: {r.get('error')} | | | | | | | |"
            )
            continue
        ref = base.get(r["scenario"])
        speedup = f"{ref / r['s_per_frame']:.2f}x" if ref and r["s_per_frame"] else ""
        lines.append(
            f"| {r['scenario']} | {r['cache']} | {r['s_per_frame']:.3f} | {r['encoder_s_per_frame']:.3f} "
            f"| {100 * r['encoder_share']:.1f} % | {100 * r['features_share']:.1f} % "
            f"| {r['encoder_calls']} of {r['feature_fetches']} fetched | {r['first_preview_s']:.2f} | {speedup} "
            f"| {r.get('load_avg_start')} / {r.get('load_avg_end')} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    ap.add_argument("--config", default="sam2.1_hiera_t")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="fp32", choices=bs.DTYPES)
    ap.add_argument("--frames", type=int, default=30, help="frames in the stack (default 30)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--weights", default="test", choices=["test", "official"])
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--scenarios", nargs="+", default=list(SCENARIOS), choices=SCENARIOS)
    ap.add_argument(
        "--cache-dir", type=Path, default=None, help="default: a new temporary folder, removed after"
    )
    ap.add_argument("--out", type=Path, default=HERE / "results" / "embedding_cache.jsonl")
    ap.add_argument("--dry-run", action="store_true", help="print the plan only")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child is not None:
        bs.emit(measure(json.loads(args.child)), args.out)
        return 0
    if args.frames < 3:
        ap.error("--frames must be >= 3 (frame 0 prompted, a correction on frame 1, one more tracked)")
    root = args.cache_dir or Path(tempfile.mkdtemp(prefix="napari-sam2-bench-cache-"))
    plan = [(s, c) for s, c in PLAN if s in args.scenarios]
    specs = [
        {
            "scenario": s,
            "cache": c,
            # first_session starts from an empty folder of its own; the others share one
            "cache_dir": str(root / ("empty" if s == "first_session" else "shared")),
            "config": args.config,
            "device": args.device,
            "dtype": args.dtype,
            "frames": args.frames,
            "threads": args.threads,
            "weights": args.weights,
            "checkpoint": args.checkpoint,
        }
        for s, c in plan
    ]
    if "second_session" in args.scenarios and "repropagate" not in args.scenarios:
        print(
            "note: second_session with the cache on reads what repropagate stored; without it, it fills the cache"
        )
    if args.dry_run:
        for spec in specs:
            print(json.dumps(spec))
        return 0
    header = {
        "kind": "run",
        "date": bs.now_iso(),
        "command": bs.command_line(),
        "machine": bs.machine_info(),
    }
    bs.append_jsonl(args.out, header)
    records = []
    try:
        for spec in specs:
            print(f"{spec['scenario']}, cache {spec['cache']}...", file=sys.stderr, flush=True)
            records.append(bs.run_child(Path(__file__), spec, args.out))
    finally:
        if args.cache_dir is None:
            shutil.rmtree(root, ignore_errors=True)
    print(bs.describe_run(header))
    print(f"load average at the start: {header['machine'].get('load_avg_1min')}")
    print(table(records))
    return 0


if __name__ == "__main__":
    sys.exit(main())
