"""Track every cell with a trained instance head finding the cells: quality and cost.

The instance head is trained (``train_instance_head``, test weights, frozen encoder) on one
movie of the plugin's lineage sample generator (``synthetic_lineage_timelapse``) and then finds
the cells of *another* movie (another seed) in ``track-all``: the seeds on the start frame, the
cells that enter or appear (every-frame discovery) and the re-seeds every 10 frames. Tracking
itself is the ground-truth stand-in of ``tests/fakes.py`` (``GroundTruthPredictor``; the test
weights cannot track), so the scores measure what the head finds, against the same run with a
perfect finder (``GroundTruthMaskGenerator``). Scored by traccuracy and py-ctcmetrics, as
``benchmarks/track_all_quality.py`` does.

Cost: the head's passes per frame and the seconds of each finder (the head's encoder passes
included: with the stand-in predictor there are no tracker features to share; in a real run
the tracker's encoder pass serves it, see tests/engine/test_segment_instance_head.py).

    PYTHONPATH=src nice -n 15 python benchmarks/track_all_head.py --image-size 256 --seeds 0 1 --head-steps 200

JSON lines go to ``--out``; a markdown table is printed.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--image-size", type=int, default=256, help="model input size (default 256)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="held-out movies")
    ap.add_argument("--head-steps", type=int, default=200)
    ap.add_argument(
        "--train-frames",
        type=int,
        default=16,
        help="labelled frames the head trains on (spread over a movie)",
    )
    ap.add_argument("--frames", type=int, default=60, help="frames of the held-out movie")
    ap.add_argument("--min-area", type=int, default=16)
    ap.add_argument("--out", default="track_all_head.jsonl")
    ap.add_argument("--dry-run", action="store_true")
    args = ap.parse_args(argv)
    print(
        f"seeds {args.seeds}, head {args.head_steps} steps on {args.train_frames} frames, size {args.image_size}"
    )
    if args.dry_run:
        return 0

    sys.path.insert(0, str(ROOT / "tests"))
    sys.path.insert(0, str(HERE))
    from fakes import GroundTruthMaskGenerator, GroundTruthPredictor
    from track_all_quality import entry_delays, score
    from train_finetune import make_model

    from napari_sam2.engine.cells.lineage import TrackGraph
    from napari_sam2.engine.cells.seeding import SeedFilter
    from napari_sam2.engine.cells.track_all import TrackAllConfig, TrackAllRun
    from napari_sam2.engine.cells.track_exports import write_ctc
    from napari_sam2.engine.segment.instance_head import InstanceHeadGenerator
    from napari_sam2.engine.train import labeled_stack
    from napari_sam2.engine.train.data import FrameRef
    from napari_sam2.engine.train.instance_head import HeadTrainConfig, train_instance_head
    from napari_sam2.plugin.sample_lineage import synthetic_lineage_timelapse

    model = make_model(args.image_size, args.device)
    rows = []
    work = Path(tempfile.mkdtemp(prefix="track_all_head_"))
    for seed in args.seeds:
        # the training movie: as long as the held-out one, every k-th frame labelled
        image_t, gt_t, _ = synthetic_lineage_timelapse(n_frames=args.frames, seed=seed + 100)
        stack = labeled_stack(image_t, gt_t, name=f"lineage seed {seed + 100}")
        step = max(args.frames // args.train_frames, 1)
        frames = [FrameRef(0, t) for t in range(0, args.frames, step)][: args.train_frames]
        head, summary = train_instance_head(
            model, [stack], frames, HeadTrainConfig(steps=args.head_steps, seed=seed)
        )
        image, gt, truth = synthetic_lineage_timelapse(n_frames=args.frames, seed=seed)
        gt_dir = work / f"seed{seed}_GT"
        graph = TrackGraph.from_label_stack(gt, {int(r[0]): int(r[3]) for r in truth})
        write_ctc(gt, graph, gt_dir / "TRA", ground_truth=True)
        config = TrackAllConfig(
            reseed_every=10, discover_every_frame=True, seed_filter=SeedFilter(min_area=args.min_area)
        )
        for finder_name in ("instance head", "perfect (ground truth)"):
            finder = (
                InstanceHeadGenerator(model, head)
                if finder_name == "instance head"
                else GroundTruthMaskGenerator(image, gt)
            )
            run = TrackAllRun(GroundTruthPredictor(gt), image, finder, config)
            t0 = time.perf_counter()
            result = run.run()
            seconds = time.perf_counter() - t0
            res_dir = write_ctc(
                result.labels, result.graph, work / f"seed{seed}_{len(rows)}_RES", overwrite=True
            )
            delays = [d for d in entry_delays(gt, truth, result.labels) if d is not None]
            row = {
                "seed": seed,
                "finder": finder_name,
                "image_size": args.image_size,
                "head_steps": args.head_steps,
                "head_train_seconds": summary["seconds"],
                "frames": int(gt.shape[0]),
                "tracks": len(result.graph),
                "gt_tracks": len(truth),
                "entry_delay_max": max(delays) if delays else None,
                "seconds": round(seconds, 1),
                "head_passes": getattr(finder, "head_passes", None),
                "encoder_passes": getattr(finder, "encoder_passes", None),
                **{
                    k: (round(v, 4) if isinstance(v, float) else v) for k, v in score(gt_dir, res_dir).items()
                },
            }
            rows.append(row)
            with open(args.out, "a") as f:
                f.write(json.dumps(row) + "\n")
            print(
                f"seed {seed} {finder_name}: TRA {row['tra_ctc']:.3f} (py-ctcmetrics) / {row['tra_traccuracy']:.3f} "
                f"(traccuracy), DET {row['det_ctc']:.3f}, {row['tracks']} tracks (truth {row['gt_tracks']}), "
                f"{row['seconds']} s, head passes {row['head_passes']}",
                flush=True,
            )
    print()
    print(
        "| held-out seed | finder | TRA (py-ctcmetrics) | TRA (traccuracy) | DET | div F1 | tracks (truth) | head passes / frames | s |"
    )
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        passes = "" if r["head_passes"] is None else f"{r['head_passes']} / {r['frames']}"
        print(
            f"| {r['seed']} | {r['finder']} | {r['tra_ctc']:.3f} | {r['tra_traccuracy']:.3f} | {r['det_ctc']:.3f} | "
            f"{r['div_f1_traccuracy']:.3f} | {r['tracks']} ({r['gt_tracks']}) | {passes} | {r['seconds']} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
