"""Score "track all" with the Cell Tracking Challenge measures (traccuracy) on synthetic lineages.

For each seed of ``synthetic_lineage_timelapse`` (divisions, cells entering and leaving, a
contact) and each re-seeding cadence ``--every``: track-all -> a CTC result folder
(``res_track.txt`` + ``maskTTT.tif``) -> traccuracy's CTC loader -> TRA / DET / LNK (CTC
matcher) and division recall / precision / F1 / MBC (IoU matcher, one-to-one, no frame
buffer), against the generator's ground truth written as a CTC ``<seq>_GT/TRA`` folder; and,
when py-ctcmetrics (the challenge's own scorer) is installed, its TRA / DET / LNK of the same
folders (``ctc_*`` fields, the table's "TRA (py-ctcmetrics)"; see docs/tracking-lineage.md for why the two can differ).

Two predictors:

- ``--predictor standin``: the ground-truth stand-ins of ``tests/fakes.py`` (a predictor that
  answers with the true cells under each object's last mask, a generator that returns the
  true masks). The model's errors are taken out, so this measures the seeding, new-cell,
  lost-track, division and lineage logic: it should score near perfect, and ``--check``
  exits 1 unless every row has TRA >= 0.99 and division recall 1.0.
- ``--predictor model``: our SAM2VideoPredictor and SAM2AutomaticMaskGenerator on the tests'
  deterministic test weights (or ``--checkpoint``). Random weights give meaningless masks:
  this checks the run end to end and that the CTC files load; the scores are not quality.

    PYTHONPATH=src python benchmarks/bench_tracking_ctc.py --predictor standin --every 1 5 10 --seeds 0 1 2
    PYTHONPATH=src python benchmarks/bench_tracking_ctc.py --predictor model --device cuda --frames 30

Results are appended as JSON lines to ``--out`` (default benchmarks/results/tracking_ctc.jsonl)
and printed as a markdown table with the date, machine and command.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
TRA_REQUIRED, DIVISION_RECALL_REQUIRED = 0.99, 1.0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--predictor", choices=["standin", "model"], default="standin")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0], help="data seeds (default 0)")
    ap.add_argument("--every", type=int, nargs="+", default=[1], help="re-seed cadences N (default 1)")
    ap.add_argument("--frames", type=int, default=60, help="time points (default 60)")
    ap.add_argument("--size", type=int, default=256, help="frame height = width (default 256)")
    ap.add_argument("--lost-after", type=int, default=3)
    ap.add_argument("--division-frames", type=int, default=3)
    ap.add_argument("--min-area", type=int, default=16)
    ap.add_argument("--config", default="sam2.1_hiera_t", help="model variant (--predictor model)")
    ap.add_argument(
        "--checkpoint", default=None, help="checkpoint (--predictor model; default: test weights)"
    )
    ap.add_argument("--device", default="auto", help="device (--predictor model)")
    ap.add_argument(
        "--check", action="store_true", help=f"exit 1 unless TRA >= {TRA_REQUIRED} and division recall 1"
    )
    ap.add_argument("--keep", type=Path, default=None, help="keep the CTC folders here (default: temporary)")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "tracking_ctc.jsonl")
    ap.add_argument("--dry-run", action="store_true", help="print the plan, run nothing")
    return ap


def make_engine(args, image, labels):
    """(predictor, generator) for one data set."""
    if args.predictor == "standin":
        sys.path.insert(0, str(ROOT / "tests"))
        from fakes import GroundTruthMaskGenerator, GroundTruthPredictor

        return GroundTruthPredictor(labels), GroundTruthMaskGenerator(image, labels)
    from napari_sam2.engine.cells.seeding import automatic_mask_generator_class
    from napari_sam2.engine.predict.video_predictor import SAM2VideoPredictor
    from napari_sam2.engine.weights.build import build_sam2_model, resolve_device

    generator_class = automatic_mask_generator_class()  # ImportError with a clear message
    checkpoint = args.checkpoint
    if checkpoint is None:
        sys.path.insert(0, str(ROOT / "tests"))
        from conftest import make_test_checkpoint  # the tests' deterministic weights

        try:
            checkpoint = make_test_checkpoint(args.config)
        except BaseException as exc:  # pytest's Skipped: the golden folder with the generator is absent
            if type(exc).__name__ != "Skipped":
                raise
            raise SystemExit(f"bench_tracking_ctc: test weights: {exc} (or pass --checkpoint)") from None
    model = build_sam2_model(args.config, checkpoint, resolve_device(args.device))
    return SAM2VideoPredictor(model), generator_class(model)


def score_ctc_metrics(gt_dir: Path, res_dir: Path) -> dict[str, Any]:
    """py-ctcmetrics' TRA, DET, LNK and AOGM operation counts (``ctc_*``); {} without it."""
    try:
        from ctc_metrics.scripts.evaluate import calculate_metrics, load_data
    except ImportError:
        return {}
    # load_data + calculate_metrics: evaluate_sequence without its prints, in this process
    comp, ref, traj, segm, _, valid = load_data(str(res_dir), str(gt_dir), True, False, threads=1)
    m = calculate_metrics(comp, ref, traj, segm, ["Valid", "DET", "TRA", "LNK"], valid)
    keys = [
        "Valid",
        "TRA",
        "DET",
        "LNK",
        "AOGM",
        "AOGM_NS",
        "AOGM_FN",
        "AOGM_FP",
        "AOGM_ED",
        "AOGM_EA",
        "AOGM_EC",
    ]
    return {f"ctc_{k}": (float(m[k]) if m.get(k) is not None else None) for k in keys}


def score(gt_dir: Path, res_dir: Path) -> dict[str, Any]:
    """traccuracy's CTC and division metrics of a result folder against a ground-truth folder
    (``<seq>_GT`` holding ``TRA/``), and py-ctcmetrics' (:func:`score_ctc_metrics`)."""
    from traccuracy import run_metrics
    from traccuracy.loaders import load_ctc_data
    from traccuracy.matchers import CTCMatcher, IOUMatcher
    from traccuracy.metrics import CTCMetrics, DivisionMetrics

    gt = load_ctc_data(str(gt_dir / "TRA"), name="ground truth", run_checks=True)
    pred = load_ctc_data(str(res_dir), name="track-all", run_checks=True)
    ctc, _ = run_metrics(gt, pred, CTCMatcher(), [CTCMetrics()])
    div, _ = run_metrics(gt, pred, IOUMatcher(iou_threshold=0.5, one_to_one=True), [DivisionMetrics()])
    out = dict(ctc[0]["results"])
    out.update(div[0]["results"]["Frame Buffer 0"])
    out.update(score_ctc_metrics(gt_dir, res_dir))
    return out


def run_one(args, seed: int, every: int, work: Path) -> dict[str, Any]:
    import numpy as np

    from napari_sam2.engine.cells.lineage import TrackGraph
    from napari_sam2.engine.cells.seeding import SeedFilter
    from napari_sam2.engine.cells.track_all import TrackAllConfig, TrackAllRun
    from napari_sam2.engine.cells.track_exports import write_ctc
    from napari_sam2.engine.cells.track_rules import DivisionRule
    from napari_sam2.plugin.sample_lineage import synthetic_lineage_timelapse

    image, labels, truth = synthetic_lineage_timelapse(
        n_frames=args.frames, shape=(args.size, args.size), seed=seed
    )
    gt_dir = work / f"seed{seed}_GT"
    if not gt_dir.exists():
        gt_graph = TrackGraph.from_label_stack(labels, {int(r[0]): int(r[3]) for r in truth})
        write_ctc(labels, gt_graph, gt_dir / "TRA", ground_truth=True)
    predictor, generator = make_engine(args, image, labels)
    config = TrackAllConfig(
        reseed_every=every,
        lost_after=args.lost_after,
        seed_filter=SeedFilter(min_area=args.min_area, drop_border_touching=False),
        division=DivisionRule(persist_frames=args.division_frames),
    )
    t0 = time.perf_counter()
    result = TrackAllRun(predictor, image, generator, config).run()
    seconds = time.perf_counter() - t0
    res_dir = write_ctc(result.labels, result.graph, work / f"seed{seed}_every{every}_RES", overwrite=True)
    if result.graph.num_records:
        metrics = score(gt_dir, res_dir)
    else:  # traccuracy cannot load an empty CTC result; nothing found scores 0
        metrics = dict.fromkeys(["TRA", "DET", "LNK", "Division Recall", "Division Precision"], 0.0)
        metrics.update(
            dict.fromkeys(["Division F1", "Mitotic Branching Correctness"], 0.0),
            fn_nodes=int(sum(len(np.unique(f)) - 1 for f in labels)),
            fp_nodes=0,
            fn_edges=None,
            note="no object was tracked",
        )
    return {
        "kind": "result",
        "predictor": args.predictor,
        "seed": seed,
        "every": every,
        "frames": args.frames,
        "size": args.size,
        "gt_tracks": len(truth),
        "gt_divisions": int((np.bincount(truth[:, 3])[1:] == 2).sum()) if len(truth) else 0,
        "tracks": len(result.graph),
        "divisions": len(result.graph.divisions()),
        "seconds": round(seconds, 2),
        **{k: (round(v, 4) if isinstance(v, float) else v) for k, v in metrics.items()},
    }


def passes(row: dict) -> bool:
    return row["TRA"] >= TRA_REQUIRED and row["Division Recall"] >= DIVISION_RECALL_REQUIRED


def _fmt(v: Any) -> str:
    return "-" if v is None else f"{v:.4f}"


def markdown_table(rows: list[dict]) -> str:
    head = "| predictor | seed | every N | TRA (traccuracy) | TRA (py-ctcmetrics) | DET | LNK | FN nodes | FP nodes | FN edges | div. recall | div. precision | div. F1 | MBC | GT div. | tracks (GT) | s |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        lines.append(
            f"| {r['predictor']} | {r['seed']} | {r['every']} | {r['TRA']:.4f} | {_fmt(r.get('ctc_TRA'))} "
            f"| {r['DET']:.4f} | {r['LNK']:.4f} "
            f"| {r['fn_nodes']} | {r['fp_nodes']} | {r['fn_edges']} | {r['Division Recall']:.3f} "
            f"| {r['Division Precision']:.3f} | {r['Division F1']:.3f} | {r['Mitotic Branching Correctness']:.3f} "
            f"| {r['gt_divisions']} | {r['tracks']} ({r['gt_tracks']}) | {r['seconds']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.frames < 20 or args.size < 128:
        print(
            "bench_tracking_ctc: --frames must be >= 20 and --size >= 128 (the generator's minimum)",
            file=sys.stderr,
        )
        return 2
    plan = [(s, e) for s in args.seeds for e in args.every]
    print(f"plan: predictor={args.predictor}, {len(plan)} runs (seed, every): {plan}")
    if args.dry_run:
        return 0
    os.environ.setdefault("TQDM_DISABLE", "1")  # traccuracy's progress bars
    try:
        import traccuracy  # noqa: F401
    except ImportError:
        print("bench_tracking_ctc: needs traccuracy (pip install traccuracy)", file=sys.stderr)
        return 2
    sys.path.insert(0, str(HERE))
    import bench_speed  # machine description, command line and date, as the other benchmarks

    if args.predictor == "model":
        from napari_sam2.engine.cells.seeding import automatic_mask_generator_class

        try:
            automatic_mask_generator_class()
        except ImportError as exc:
            print(f"bench_tracking_ctc: --predictor model: {exc}", file=sys.stderr)
            return 2
    header = {
        "kind": "run",
        "date": bench_speed.now_iso(),
        "command": bench_speed.command_line(),
        "machine": bench_speed.machine_info(),
    }
    bench_speed.append_jsonl(args.out, header)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_ctc_") as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        for seed, every in plan:
            row = run_one(args, seed, every, work)
            row.update(date=header["date"], command=header["command"])
            bench_speed.append_jsonl(args.out, row)
            rows.append(row)
            print(
                f"seed {seed} every {every}: TRA {row['TRA']:.4f}, division recall {row['Division Recall']:.3f}",
                flush=True,
            )
    print()
    print(bench_speed.describe_run(header))
    print(markdown_table(rows))
    if args.check and not all(passes(r) for r in rows):
        print(
            f"\nCHECK FAILED: every row needs TRA >= {TRA_REQUIRED} and division recall {DIVISION_RECALL_REQUIRED}"
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
