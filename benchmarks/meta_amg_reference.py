"""Segment everything, side by side: napari-sam2's SAM2AutomaticMaskGenerator vs Meta's.

Meta's code is read from a checkout that YOU supply (``--meta-repo``, a clone of
https://github.com/facebookresearch/sam2: its root or its ``sam2/`` package folder); it is never
copied into, vendored by or committed to this repository. Meta's generator imports torchvision
(and OpenCV for its ``postprocess_small_regions``), which this project does not depend on, so
Meta's side runs in a separate Python environment that has them (``--meta-python``), e.g.

    python -m venv /tmp/meta-venv
    /tmp/meta-venv/bin/pip install torch torchvision opencv-python-headless numpy pillow pyyaml tqdm scikit-image
    python benchmarks/meta_amg_reference.py --meta-repo ~/src/sam2 --meta-python /tmp/meta-venv/bin/python

Meta's model is built without hydra exactly as ``benchmarks/meta_reference.py`` builds it (same
numbers as our configs, the same checkpoint loaded with ``strict=True``) and handed to Meta's
own ``SAM2AutomaticMaskGenerator``; ours gets ``build_sam2`` of the same checkpoint. Both get the
same uint8 RGB pixels (made here and passed as .npy files) and the same keyword arguments.
Default weights: the tests' deterministic test checkpoint (``tests/conftest.py``).

``min_mask_region_area > 0`` makes Meta clean each mask's low-res logits with a CUDA-only
extension (``sam2._C``); without it Meta skips the step with a warning, so on a CPU-only machine
those cases compare against nothing unless ``--meta-cc opencv`` is given: it registers a
stand-in ``sam2._C.get_connected_componnets`` computed by OpenCV's
``connectedComponentsWithStats`` (8-connectivity; labels and per-pixel component areas, the
outputs the CUDA kernel documents). That stand-in is part of this harness, not of our code.

The child (Meta's side) also checks, on the same torch build, our ``batched_nms`` against
torchvision's ``batched_nms`` (random boxes with many tied scores, both of torchvision's code
paths) and our ``postprocess_small_regions`` against Meta's (OpenCV) on Meta's output masks.

Reported per case: mask counts, whether the outputs pair one to one in order, and the worst
pair: mask IoU, |predicted IoU difference|, |stability difference|, box and point differences.
Seconds are wall time of ``generate`` on this machine (informational only: other work shares it).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
IOU_MIN = 0.99
SCORE_TOL = 2e-3

# name -> (image name, generator keyword arguments)
CASES: dict[str, tuple[str, dict]] = {
    "grid8_nofilter": ("truck_600x800", dict(points_per_side=8, pred_iou_thresh=0.0, stability_score_thresh=0.0, box_nms_thresh=1.0)),
    "grid6_nms": ("truck_600x800", dict(points_per_side=6, pred_iou_thresh=0.0, stability_score_thresh=0.0)),
    "crops1": ("truck_600x800", dict(points_per_side=8, crop_n_layers=1, crop_n_points_downscale_factor=2, pred_iou_thresh=0.0, stability_score_thresh=0.0)),
    "m2m": ("truck_600x800", dict(points_per_side=6, use_m2m=True, pred_iou_thresh=0.0, stability_score_thresh=0.0)),
    "single_mask": ("truck_600x800", dict(points_per_side=6, multimask_output=False, pred_iou_thresh=0.0, stability_score_thresh=0.0)),
    "filters": ("truck_1024", dict(points_per_side=6, points_per_batch=16, pred_iou_thresh=0.9, stability_score_thresh=0.6, stability_score_offset=0.5, mask_threshold=0.5)),
    "min_region": ("truck_600x800", dict(points_per_side=6, min_mask_region_area=40, pred_iou_thresh=0.0, stability_score_thresh=0.0)),
    # Random test weights give masks covering most of the image (then NMS leaves one, and crop
    # masks all touch crop edges); a high mask_threshold gives partial masks of many sizes, so
    # crop-edge filtering and the NMS have real work.
    "crops1_t100": ("truck_600x800", dict(points_per_side=8, crop_n_layers=1, crop_n_points_downscale_factor=2, mask_threshold=100.0, pred_iou_thresh=0.0, stability_score_thresh=0.0)),
    "m2m_t100": ("truck_600x800", dict(points_per_side=6, use_m2m=True, mask_threshold=100.0, pred_iou_thresh=0.0, stability_score_thresh=0.0)),
    "min_region_t100": ("truck_600x800", dict(points_per_side=6, min_mask_region_area=40, mask_threshold=100.0, pred_iou_thresh=0.0, stability_score_thresh=0.0)),
}  # fmt: skip


# ====================================================================== inputs


def make_images(golden_dir: Path, out_dir: Path) -> dict[str, Path]:
    """The uint8 RGB inputs, as .npy files both sides read."""
    from PIL import Image

    truck = golden_dir / "inputs" / "truck.png"
    if not truck.is_file():
        raise SystemExit(
            f"{truck} is missing: the inputs come from ../shared/golden (or $NAPARI_SAM2_GOLDEN_DIR)"
        )
    img = Image.open(truck).convert("RGB")
    arrays = {
        "truck_1024": np.array(img),
        "truck_600x800": np.array(img.resize((800, 600), Image.BICUBIC)),  # non-square: H 600, W 800
    }
    paths = {}
    for name, arr in arrays.items():
        paths[name] = out_dir / f"{name}.npy"
        np.save(paths[name], arr)
    return paths


def records_to_arrays(records: list[dict], shape: tuple[int, int]) -> dict[str, np.ndarray]:
    masks = np.stack([r["segmentation"] for r in records]) if records else np.zeros((0, *shape), bool)
    return {
        "masks_packed": np.packbits(masks, axis=-1),
        "masks_shape": np.array(masks.shape),
        "area": np.array([r["area"] for r in records], dtype=np.int64),
        "bbox": np.array([r["bbox"] for r in records], dtype=np.float64).reshape(-1, 4),
        "predicted_iou": np.array([r["predicted_iou"] for r in records], dtype=np.float64),
        "stability_score": np.array([r["stability_score"] for r in records], dtype=np.float64),
        "point_coords": np.array([r["point_coords"][0] for r in records], dtype=np.float64).reshape(-1, 2),
        "crop_box": np.array([r["crop_box"] for r in records], dtype=np.float64).reshape(-1, 4),
    }


def unpack(arrays) -> np.ndarray:
    shape = tuple(int(s) for s in arrays["masks_shape"])
    return np.unpackbits(arrays["masks_packed"], axis=-1, count=shape[-1]).astype(bool).reshape(shape)


# ====================================================================== Meta's side (child)


def register_opencv_cc(pkg) -> None:
    """A CPU stand-in for Meta's CUDA ``sam2._C`` (harness only; see the module docstring)."""
    import types

    import cv2
    import torch

    def get_connected_componnets(mask):  # Meta's spelling
        m = mask.to(torch.uint8).cpu().numpy()
        labels = np.zeros(m.shape, np.int32)
        counts = np.zeros(m.shape, np.int32)
        for i in range(m.shape[0]):
            _, lab, stats, _ = cv2.connectedComponentsWithStats(m[i, 0], connectivity=8)
            area = stats[:, cv2.CC_STAT_AREA].astype(np.int32)
            area[0] = 0
            labels[i, 0] = lab
            counts[i, 0] = area[lab]
        return torch.from_numpy(labels).to(mask.device), torch.from_numpy(counts).to(mask.device)

    mod = types.ModuleType("sam2._C")
    mod.get_connected_componnets = get_connected_componnets
    sys.modules["sam2._C"] = mod
    pkg._C = mod


def nms_check(seed: int = 0) -> dict:
    """Our batched_nms vs torchvision's on the same torch build: index lists must be identical."""
    import torch
    from torchvision.ops import batched_nms as tv_batched_nms

    from napari_sam2.engine.segment.mask_utils import batched_nms

    rng = np.random.default_rng(seed)
    trials = mismatches = 0
    for n in (5, 50, 400, 999, 1001, 2500):
        for ties in (None, 2, 7):
            for n_cat in (1, 3):
                for thr in (0.0, 0.3, 0.7, 1.0):
                    xy = rng.integers(0, 200, (n, 2))
                    wh = rng.integers(1, 80, (n, 2))
                    boxes = torch.tensor(np.concatenate([xy, xy + wh], 1), dtype=torch.float32)
                    s = rng.integers(0, ties, n) / ties if ties else rng.random(n)
                    scores = torch.tensor(s, dtype=torch.float32)
                    idxs = torch.tensor(rng.integers(0, n_cat, n))
                    trials += 1
                    if (
                        tv_batched_nms(boxes, scores, idxs, thr).tolist()
                        != batched_nms(boxes, scores, idxs, thr).tolist()
                    ):
                        mismatches += 1
    return {"trials": trials, "mismatches": mismatches}


def postprocess_check(meta_amg, m_amg_module, records: list[dict], min_area: int, thr: float) -> dict:
    """Meta's postprocess_small_regions (OpenCV) vs ours, on the same masks."""
    import torch

    from napari_sam2.engine.segment.automatic_mask_generator import SAM2AutomaticMaskGenerator as Ours
    from napari_sam2.engine.segment.mask_utils import MaskRecords, mask_to_rle_pytorch

    masks = torch.from_numpy(np.stack([r["segmentation"] for r in records]))
    boxes = torch.tensor([[b[0], b[1], b[0] + b[2], b[1] + b[3]] for r in records for b in [r["bbox"]]])
    rles = mask_to_rle_pytorch(masks)
    theirs = meta_amg.postprocess_small_regions(
        m_amg_module.MaskData(rles=list(rles), boxes=boxes.clone()), min_area, thr
    )
    ours = Ours.postprocess_small_regions(MaskRecords(rles=list(rles), boxes=boxes.clone()), min_area, thr)
    same = theirs["rles"] == ours["rles"] and torch.equal(theirs["boxes"].float(), ours["boxes"].float())
    return {
        "masks_in": len(rles),
        "kept_meta": len(theirs["rles"]),
        "kept_ours": len(ours["rles"]),
        "identical": bool(same),
    }


def run_meta(spec: dict) -> None:
    import importlib

    import torch

    sys.path.insert(0, str(HERE))
    import meta_reference as mr  # builds Meta's model without hydra

    from napari_sam2.model import load_config

    torch.set_num_threads(spec["threads"])
    m = mr.import_meta(spec["meta_repo"])
    if spec["meta_cc"] == "opencv":
        register_opencv_cc(sys.modules["sam2"])
    amg_mod = importlib.import_module("sam2.automatic_mask_generator")
    amg_utils = importlib.import_module("sam2.utils.amg")
    model, _ = mr.build_meta_predictor(m, load_config(spec["config"]), Path(spec["checkpoint"]), "cpu", False)
    out_dir = Path(spec["work"])
    summary = {"meta_git": mr.meta_revision(m.pkg_dir), "torch": torch.__version__, "cases": {}}
    for case in spec["cases"]:
        image_name, kwargs = CASES[case]
        image = np.load(out_dir / f"{image_name}.npy")
        gen = amg_mod.SAM2AutomaticMaskGenerator(model, **kwargs)
        t0 = time.perf_counter()
        records = gen.generate(image)
        seconds = time.perf_counter() - t0
        np.savez_compressed(out_dir / f"meta_{case}.npz", **records_to_arrays(records, image.shape[:2]))
        summary["cases"][case] = {"seconds": round(seconds, 1), "n": len(records)}
        if case == spec.get("postprocess_case") and records:
            summary["postprocess_check"] = {
                "case": case,
                **postprocess_check(amg_mod.SAM2AutomaticMaskGenerator, amg_utils, records, 60, 0.7),
            }
        print(f"meta {case}: {len(records)} masks in {seconds:.1f} s", flush=True)
    summary["nms_check"] = nms_check()
    (out_dir / "meta_summary.json").write_text(json.dumps(summary, indent=1))


# ====================================================================== our side and the comparison


def compare(ours: dict, theirs: dict) -> dict:
    mo, mt = unpack(ours), unpack(theirs)
    res = {"n_ours": len(mo), "n_meta": len(mt)}
    n = min(len(mo), len(mt))
    if n == 0:
        res["paired_in_order"] = len(mo) == len(mt)
        return res
    inter = (mo[:n] & mt[:n]).reshape(n, -1).sum(1)
    union = (mo[:n] | mt[:n]).reshape(n, -1).sum(1)
    ious = np.where(union > 0, inter / np.maximum(union, 1), 1.0)
    d_iou = np.abs(ours["predicted_iou"][:n] - theirs["predicted_iou"][:n])
    d_stab = np.abs(ours["stability_score"][:n] - theirs["stability_score"][:n])
    d_box = np.abs(ours["bbox"][:n] - theirs["bbox"][:n]).max(1)
    d_pt = np.abs(ours["point_coords"][:n] - theirs["point_coords"][:n]).max(1)
    d_crop = np.abs(ours["crop_box"][:n] - theirs["crop_box"][:n]).max(1)
    nan_mismatch = int(
        (np.isnan(ours["stability_score"][:n]) != np.isnan(theirs["stability_score"][:n])).sum()
    )
    res.update(
        paired_in_order=bool(
            nan_mismatch == 0
            and len(mo) == len(mt)
            and ious.min() >= IOU_MIN
            and d_iou.max() <= SCORE_TOL
            and np.nan_to_num(d_stab, nan=0).max() <= SCORE_TOL
            and d_box.max() <= 2
        ),
        mask_iou_min=float(ious.min()),
        masks_identical=int((inter == union).sum()),
        predicted_iou_absdiff_max=float(d_iou.max()),
        stability_absdiff_max=float(np.nanmax(d_stab)) if not np.isnan(d_stab).all() else None,
        stability_nan_pairs=int(np.isnan(d_stab).sum()),  # empty masks (0/0), NaN on one side or both
        stability_nan_mismatch=nan_mismatch,  # NaN on one side only
        bbox_absdiff_max=float(d_box.max()),
        point_absdiff_max=float(d_pt.max()),
        crop_box_absdiff_max=float(d_crop.max()),
        area_absdiff_max=int(np.abs(ours["area"][:n] - theirs["area"][:n]).max()),
    )
    return res


def markdown(results: dict) -> str:
    head = ["case", "image", "Meta masks", "our masks", "paired 1:1 in order", "mask IoU min", "identical masks",
            "|d pred IoU| max", "|d stability| max", "bbox diff max (px)", "ours s", "Meta s"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for case, r in results["cases"].items():
        c = r["comparison"]

        def f(key, fmt="{:.3g}", c=c):
            v = c.get(key)
            return "-" if v is None else fmt.format(v)

        lines.append(
            f"| {case} | {CASES[case][0]} | {c['n_meta']} | {c['n_ours']} | {'yes' if c['paired_in_order'] else '**NO**'} | "
            f"{f('mask_iou_min', '{:.6f}')} | {c.get('masks_identical', '-')} | {f('predicted_iou_absdiff_max')} | "
            f"{f('stability_absdiff_max')} | {f('bbox_absdiff_max', '{:g}')} | {r['ours_seconds']} | {r['meta_seconds']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--meta-repo", help="your checkout of facebookresearch/sam2 (root or its sam2/ folder)")
    ap.add_argument(
        "--meta-python",
        default=sys.executable,
        help="python of an environment with torch, torchvision, opencv",
    )
    ap.add_argument(
        "--meta-cc",
        choices=["none", "opencv"],
        default="none",
        help="stand-in for Meta's CUDA connected components",
    )
    ap.add_argument("--cases", nargs="+", choices=sorted(CASES), default=list(CASES))
    ap.add_argument("--config", default="sam2.1_hiera_t")
    ap.add_argument("--checkpoint", help="checkpoint file (default: the tests' deterministic test weights)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--work", help="folder for inputs and Meta's outputs (default: a temporary one)")
    ap.add_argument("--out", help="write the results as JSON here")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        run_meta(json.loads(args.child))
        return 0
    if not args.meta_repo:
        ap.error("--meta-repo is required (a checkout of facebookresearch/sam2)")

    import torch

    sys.path.insert(0, str(HERE))
    import bench_speed as bs

    from napari_sam2 import SAM2AutomaticMaskGenerator, build_sam2

    torch.set_num_threads(args.threads)
    ckpt = bs.resolve_checkpoint(args.config, "test", args.checkpoint)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="amg-ref-"))
    work.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(ROOT / "tests"))
    import conftest

    make_images(conftest.GOLDEN_DIR, work)
    spec = dict(meta_repo=args.meta_repo, meta_cc=args.meta_cc, cases=args.cases, config=args.config,
                checkpoint=str(ckpt), threads=args.threads, work=str(work), postprocess_case=args.cases[0])  # fmt: skip
    env = dict(os.environ, TQDM_DISABLE="1")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(HERE), env.get("PYTHONPATH", "")]).rstrip(
        os.pathsep
    )
    proc = subprocess.run(
        [args.meta_python, str(Path(__file__).resolve()), "--child", json.dumps(spec)], env=env
    )
    if proc.returncode != 0:
        raise SystemExit(f"Meta's side failed (exit {proc.returncode})")
    meta_summary = json.loads((work / "meta_summary.json").read_text())

    model = build_sam2(args.config, ckpt, device="cpu")
    results = {"date": bs.now_iso(), "command": bs.command_line(), "machine": bs.machine_info(), "meta": meta_summary,
               "checkpoint": ckpt.name, "meta_cc": args.meta_cc, "cases": {}}  # fmt: skip
    for case in args.cases:
        image_name, kwargs = CASES[case]
        image = np.load(work / f"{image_name}.npy")
        t0 = time.perf_counter()
        records = SAM2AutomaticMaskGenerator(model, **kwargs).generate(image)
        seconds = round(time.perf_counter() - t0, 1)
        ours = records_to_arrays(records, image.shape[:2])
        theirs = dict(np.load(work / f"meta_{case}.npz"))
        results["cases"][case] = {
            "kwargs": kwargs,
            "image_shape": list(image.shape),
            "ours_seconds": seconds,
            "meta_seconds": meta_summary["cases"][case]["seconds"],
            "comparison": compare(ours, theirs),
        }
        print(
            f"ours {case}: {len(records)} masks in {seconds} s: {results['cases'][case]['comparison']}",
            flush=True,
        )
    print(
        bs.describe_run(
            {"date": results["date"], "machine": results["machine"], "command": results["command"]}
        )
    )
    print(
        f"Meta {meta_summary['meta_git']} on torch {meta_summary['torch']}; connected components: {args.meta_cc}"
    )
    print(markdown(results))
    print("NMS vs torchvision:", meta_summary["nms_check"])
    print("postprocess_small_regions vs Meta's:", meta_summary.get("postprocess_check"))
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1, default=str))
    ok = all(r["comparison"]["paired_in_order"] for r in results["cases"].values())
    ok = ok and meta_summary["nms_check"]["mismatches"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
