"""Peak memory and speed of tracking 2 objects through the synthetic time-lapse.

Runs in a fresh process per stack length so that peak RSS (ru_maxrss) belongs to that run
alone. Per-frame RSS and seconds are logged as JSON lines while it runs, so a long run can
be watched (and a cut-off run still says something).

    python benchmarks/bench_tracking_memory.py --frames 50 400 --out benchmarks/results/memory.jsonl

Test weights (no real checkpoint is needed): the SAM 2.1 tiny test checkpoint made from
../shared/golden, as the tests make it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def run_one(n_frames: int, out: Path, threads: int, config: str) -> None:
    import torch

    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import make_test_checkpoint  # the tests' deterministic weights

    from napari_sam2.engine.predict.video_predictor import SAM2VideoPredictor
    from napari_sam2.engine.weights.build import build_sam2_model
    from napari_sam2.plugin.sample_data import synthetic_timelapse

    torch.set_num_threads(threads)
    image, labels = synthetic_timelapse(n_frames=n_frames, shape=(256, 256), seed=0)
    model = build_sam2_model(config, make_test_checkpoint(config), "cpu")
    predictor = SAM2VideoPredictor(model, fill_hole_area=0)
    rss_after_load = rss_mb()

    t0 = time.perf_counter()
    state = predictor.init_state(image)
    # Two cells of frame 0, clicked at their centroids.
    ids = [i for i in np.unique(labels[0]) if i > 0][:2]
    for obj_id in ids:
        ys, xs = np.nonzero(labels[0] == obj_id)
        predictor.add_new_points_or_box(state, 0, int(obj_id), points=[[xs.mean(), ys.mean()]], labels=[1])
    packed = []  # the outputs themselves, bit-packed (8 KB per object and frame at 256 x 256)
    with out.open("a") as log:
        t_prev = time.perf_counter()
        for frame_idx, _obj_ids, masks in predictor.propagate_in_video(state):
            packed.append(np.packbits((masks[:, 0] > 0).cpu().numpy(), axis=-1))
            now = time.perf_counter()
            log.write(
                json.dumps(
                    {
                        "kind": "frame",
                        "n_frames": n_frames,
                        "frame": frame_idx,
                        "seconds": round(now - t_prev, 3),
                        "rss_mb": round(rss_mb(), 1),
                        "peak_rss_mb": round(peak_rss_mb(), 1),
                        "state_resident_mb": round(state.resident_bytes() / 2**20, 1),
                    }
                )
                + "\n"
            )
            log.flush()
            t_prev = now
    total = time.perf_counter() - t0
    outputs_mb = sum(p.nbytes for p in packed) / 2**20
    summary = {
        "kind": "summary",
        "n_frames": n_frames,
        "objects": len(ids),
        "config": config,
        "threads": threads,
        "seconds_total": round(total, 1),
        "seconds_per_frame": round(total / n_frames, 2),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "rss_after_model_load_mb": round(rss_after_load, 1),
        "outputs_mb": round(outputs_mb, 2),
        "feature_cache_mb": round(state.features.nbytes / 2**20, 1),
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "date": time.strftime("%Y-%m-%d"),
    }
    with out.open("a") as log:
        log.write(json.dumps(summary) + "\n")
    print(json.dumps(summary))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, nargs="+", default=[50, 400])
    ap.add_argument("--out", type=Path, default=HERE / "results" / "tracking_memory.jsonl")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--config", default="sam2.1_hiera_t")
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.child is not None:
        run_one(args.child, args.out, args.threads, args.config)
        return 0
    for n in args.frames:  # one fresh process per length: peak RSS is per run
        cmd = [
            sys.executable,
            __file__,
            "--child",
            str(n),
            "--out",
            str(args.out),
            "--threads",
            str(args.threads),
            "--config",
            args.config,
        ]
        subprocess.run(cmd, check=True, env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    return 0


if __name__ == "__main__":
    sys.exit(main())
