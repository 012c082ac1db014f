"""Quality of "track all" with every-frame discovery, scored by traccuracy AND py-ctcmetrics.

The ground-truth stand-ins of ``tests/fakes.py`` replace the model (a predictor that answers
with the true cell under each object's last mask, a generator that returns the true masks),
so what is measured is the run's logic: seeding, discovery of new cells, re-seeding, lost
tracks, divisions, the lineage. Data: ``synthetic_lineage_timelapse`` (the plugin's lineage
sample: ``--data sample``, 60 frames of 256 x 256, 9 cells, 4 divisions, 3 cells entering),
and larger movies of the same generator (``--data large``: 100 frames of 512 x 512, 40 cells,
12 divisions, 10 cells entering, 6 leaving), several seeds.

Configurations: ``discover+reseed10`` (every-frame discovery, a full re-seed every 10
frames), ``discover`` (discovery, never a re-seed), and, for comparison, ``reseed10`` (no
discovery, a full re-seed every 10 frames: how new cells were found before discovery) and
``discover(otsu)`` (discovery with Otsu's threshold alone, its first version: dim entering
cells found late).

Scores: TRA (both scorers), division F1 (traccuracy's DivisionMetrics, IoU matcher one to
one, no frame tolerance; py-ctcmetrics' BC(0), the same quantity on the CTC matching), and
the **entry delay**: for every ground-truth cell that is not there on the start frame and
is not a daughter (it entered the field), the frames from its first ground-truth frame to
the first frame where one result object covers more than half of it (the CTC detection
rule), or "never".

    PYTHONPATH=src nice -n 15 python benchmarks/track_all_quality.py --data sample large --seeds 0 1 2

JSON lines go to ``--out``; a markdown table is printed.
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

# name -> (reseed_every, discovery on, discovery's threshold)
CONFIGS = {
    "reseed10": (10, False, "background"),
    "discover+reseed10": (10, True, "background"),
    "discover": (0, True, "background"),
    "discover(otsu)": (0, True, "otsu"),
}
DATA = {
    "sample": dict(n_frames=60, shape=(256, 256)),  # synthetic_lineage_timelapse's defaults
    "large": dict(n_frames=100, shape=(512, 512), n_cells=40, n_divisions=12, n_entering=10, n_leaving=6),
}


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", nargs="+", choices=list(DATA), default=["sample"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--configs", nargs="+", choices=list(CONFIGS), default=list(CONFIGS))
    ap.add_argument("--min-area", type=int, default=16, help="seed filter's min_area (default 16)")
    ap.add_argument("--keep", type=Path, default=None, help="keep the CTC folders here")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "track_all_quality.jsonl")
    return ap


def entry_delays(gt: Any, truth: Any, result: Any, start: int = 0, min_area: int = 1) -> list[int | None]:
    """Frames from each entering cell's first frame to its first detected frame (None: never).

    An entering cell: a ground-truth track beginning after ``start`` with no parent. Its
    first frame: the first where it has at least ``min_area`` pixels (1: its first ground-truth
    frame; the seed filter's min_area: the first frame where it can be found at all).
    Detected on a frame: one result label covers more than half of its pixels there (CTC's rule).
    """
    import numpy as np

    delays: list[int | None] = []
    for label, first, last, parent in truth.tolist():
        if first <= start or parent:
            continue
        found = None
        while first <= last and int((gt[first] == label).sum()) < min_area:
            first += 1
        for f in range(first, last + 1):
            cell = gt[f] == label
            size = int(cell.sum())
            ids, counts = np.unique(result[f][cell], return_counts=True)
            if any(i and 2 * c > size for i, c in zip(ids.tolist(), counts.tolist())):
                found = f - first
                break
        delays.append(found)
    return delays


def score(gt_dir: Path, res_dir: Path) -> dict[str, Any]:
    """traccuracy's TRA and division F1, py-ctcmetrics' TRA and BC(0), of one result folder."""
    from ctc_metrics.scripts.evaluate import calculate_metrics, load_data
    from traccuracy import run_metrics
    from traccuracy.loaders import load_ctc_data
    from traccuracy.matchers import CTCMatcher, IOUMatcher
    from traccuracy.metrics import CTCMetrics, DivisionMetrics

    gt = load_ctc_data(str(gt_dir / "TRA"), name="ground truth", run_checks=True)
    pred = load_ctc_data(str(res_dir), name="track-all", run_checks=True)
    ctc, _ = run_metrics(gt, pred, CTCMatcher(), [CTCMetrics()])
    div, _ = run_metrics(gt, pred, IOUMatcher(iou_threshold=0.5, one_to_one=True), [DivisionMetrics()])
    t = ctc[0]["results"]
    d = div[0]["results"]["Frame Buffer 0"]
    comp, ref, traj, segm, _, valid = load_data(str(res_dir), str(gt_dir), True, False, threads=1)
    m = calculate_metrics(comp, ref, traj, segm, ["Valid", "DET", "TRA", "LNK", "BC(0)"], valid)
    return {
        "tra_traccuracy": t["TRA"],
        "det_traccuracy": t["DET"],
        "fn_nodes": t["fn_nodes"],
        "fp_nodes": t["fp_nodes"],
        "div_f1_traccuracy": d["Division F1"],
        "div_recall_traccuracy": d["Division Recall"],
        "div_precision_traccuracy": d["Division Precision"],
        "valid_ctc": m["Valid"],
        "tra_ctc": m["TRA"],
        "det_ctc": m["DET"],
        "bc0_ctc": m["BC(0)"],
        "div_tp_ctc": m.get("tp_div(0)"),
        "div_fp_ctc": m.get("fp_div(0)"),
        "div_fn_ctc": m.get("fn_div(0)"),
    }


def run_one(data: str, seed: int, name: str, work: Path, min_area: int, cache: dict) -> dict[str, Any]:
    import numpy as np

    sys.path.insert(0, str(ROOT / "tests"))
    from fakes import GroundTruthMaskGenerator, GroundTruthPredictor

    from napari_sam2.engine.cells.discovery import DiscoveryConfig
    from napari_sam2.engine.cells.lineage import TrackGraph
    from napari_sam2.engine.cells.seeding import SeedFilter
    from napari_sam2.engine.cells.track_all import TrackAllConfig, TrackAllRun
    from napari_sam2.engine.cells.track_exports import write_ctc
    from napari_sam2.plugin.sample_lineage import synthetic_lineage_timelapse

    key = (data, seed)
    if key not in cache:
        image, gt, truth = synthetic_lineage_timelapse(seed=seed, **DATA[data])
        gt_dir = work / f"{data}{seed}_GT"
        graph = TrackGraph.from_label_stack(gt, {int(r[0]): int(r[3]) for r in truth})
        write_ctc(gt, graph, gt_dir / "TRA", ground_truth=True)
        cache.clear()  # one movie in memory at a time
        cache[key] = (image, gt, truth, gt_dir)
    image, gt, truth, gt_dir = cache[key]
    every, discover, threshold = CONFIGS[name]
    config = TrackAllConfig(
        reseed_every=every,
        discover_every_frame=discover,
        discovery=DiscoveryConfig(threshold=threshold),
        seed_filter=SeedFilter(min_area=min_area, drop_border_touching=False),
    )
    run = TrackAllRun(GroundTruthPredictor(gt), image, GroundTruthMaskGenerator(image, gt), config)
    t0 = time.perf_counter()
    result = run.run()
    seconds = time.perf_counter() - t0
    res_dir = write_ctc(result.labels, result.graph, work / f"{data}{seed}_{name}_RES", overwrite=True)
    delays = entry_delays(gt, truth, result.labels)
    visible = entry_delays(gt, truth, result.labels, min_area=min_area)
    found = [d for d in delays if d is not None]
    return {
        "kind": "result",
        "data": data,
        "seed": seed,
        "config": name,
        "reseed_every": every,
        "discovery": discover,
        "threshold": threshold if discover else None,
        "frames": int(gt.shape[0]),
        "size": list(gt.shape[1:]),
        "gt_tracks": len(truth),
        "gt_divisions": int((np.bincount(truth[:, 3])[1:] == 2).sum()),
        "tracks": len(result.graph),
        "divisions": len(result.graph.divisions()),
        "entering": len(delays),
        "entry_delays": delays,
        "entry_delay_max": max(found) if found else None,
        "entry_never": sum(d is None for d in delays),
        "entry_delays_visible": visible,  # from the first frame with >= min_area pixels
        "discovery_points": run.discovery_points,
        "seconds": round(seconds, 2),
        **{k: (round(v, 5) if isinstance(v, float) else v) for k, v in score(gt_dir, res_dir).items()},
    }


def markdown(rows: list[dict]) -> str:
    head = (
        "| data | seed | configuration | TRA (traccuracy) | TRA (py-ctcmetrics) | div. F1 (traccuracy) "
        "| div. F1 = BC(0) (py-ctcmetrics) | FN / FP nodes | divisions (GT) | entry delays, frames | from >= min_area px |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        delays = ", ".join("never" if d is None else str(d) for d in r["entry_delays"]) or "-"
        visible = ", ".join("never" if d is None else str(d) for d in r["entry_delays_visible"]) or "-"
        lines.append(
            f"| {r['data']} | {r['seed']} | {r['config']} | {r['tra_traccuracy']:.4f} | {r['tra_ctc']:.4f} "
            f"| {r['div_f1_traccuracy']:.3f} | {r['bc0_ctc']:.3f} | {r['fn_nodes']} / {r['fp_nodes']} "
            f"| {r['divisions']} ({r['gt_divisions']}) | {delays} | {visible} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("TQDM_DISABLE", "1")  # traccuracy's progress bars
    sys.path.insert(0, str(HERE))
    import bench_speed  # machine description, command line and date, as the other benchmarks

    header = {
        "kind": "header",
        "benchmark": "track_all_quality",
        "date": bench_speed.now_iso(),
        "command": bench_speed.command_line(),
        "machine": bench_speed.machine_info(),
        "predictor": "standin (tests/fakes.py GroundTruthPredictor + GroundTruthMaskGenerator)",
        "data": {
            k: {kk: list(v) if isinstance(v, tuple) else v for kk, v in DATA[k].items()} for k in args.data
        },
    }
    bench_speed.append_jsonl(args.out, header)
    rows: list[dict] = []
    cache: dict = {}
    with tempfile.TemporaryDirectory(prefix="track_all_quality_") as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        for data in args.data:
            for seed in args.seeds:
                for name in args.configs:
                    row = run_one(data, seed, name, work, args.min_area, cache)
                    row["date"] = header["date"]
                    bench_speed.append_jsonl(args.out, row)
                    rows.append(row)
                    print(
                        f"{data} seed {seed} {name}: TRA {row['tra_traccuracy']:.4f} / {row['tra_ctc']:.4f}, "
                        f"div F1 {row['div_f1_traccuracy']:.3f} / {row['bc0_ctc']:.3f}, "
                        f"entry delays {row['entry_delays']}",
                        flush=True,
                    )
    print()
    print(bench_speed.describe_run(header))
    print(markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
