"""Segment everything, timed side by side: our ``generate()`` vs Meta's SAM2AutomaticMaskGenerator.

One process runs both on the same frames, alternating (ours first on the first frame, Meta's
first on the next, ...), with the same checkpoint (default: the tests' deterministic test
weights) and the same keyword arguments (default: Meta's, 32 x 32 points in batches of 64).
Frames: the lineage sample (``synthetic_lineage_timelapse``, 256 x 256 uint16), mapped once to
uint8 RGB by ``Normalizer.fit`` on the stack, so that both get the same pixels (ours maps
uint8 RGB exactly as Meta does, ``/ 255``).

Meta's code is read from a checkout that YOU supply (``--meta-repo``, a clone of
https://github.com/facebookresearch/sam2); it is never copied into this repository. Its model
is built without hydra by ``benchmarks/meta_reference.py``. Meta's generator and predictor
import torchvision, which this project does not depend on; when it is not installed, stand-ins
of the four things they use are registered (harness only): ``ops.boxes.batched_nms`` and
``box_area`` are ours (``engine/mask_utils``; ``benchmarks/meta_amg_reference.py`` checks them
index for index against torchvision's), and ``transforms.ToTensor`` / ``Resize`` / ``Normalize``
do what torchvision's do on tensors (``/ 255``; bilinear with antialiasing; ``(x - mean) /
std``). The time spent in the NMS stand-in is reported.

Reported per frame: wall and CPU seconds of each ``generate()``, the ratio Meta / ours (> 1:
ours is faster), mask counts and whether the records agree (IoU, predicted IoU, stability).
Then one decoder batch of ours (the points of one ``points_per_batch``) against its FLOP floor:
its FLOPs counted by ``torch.utils.flop_counter`` divided by this machine's measured matrix
product rate on the decoder's own largest product shape.

    python benchmarks/amg_speed.py --meta-repo ~/src/sam2                 # 2 frames, 1 run each
    python benchmarks/amg_speed.py --meta-repo ~/src/sam2 --frames 4 --points-per-side 16
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import types
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import bench_speed as bs  # noqa: E402  (machine_info, checkpoints, ...)

NMS_SECONDS = [0.0]  # time in the NMS stand-in on Meta's side


# ====================================================================== inputs


def lineage_frames(n: int) -> list[np.ndarray]:
    """The first ``n`` frames of the lineage sample as uint8 RGB (one normaliser for the stack)."""
    from napari_sam2.engine.frames.normalization import Normalizer
    from napari_sam2.plugin.sample_lineage import synthetic_lineage_timelapse

    stack, _, _ = synthetic_lineage_timelapse(n_frames=max(20, n))
    norm = Normalizer.fit(stack[:n])
    return [np.round(norm.to_rgb(f) * 255).astype(np.uint8) for f in stack[:n]]


# ====================================================================== Meta's side


def install_torchvision_standin() -> bool:
    """Register the torchvision stand-ins (see the module doc) unless torchvision is installed."""
    try:
        import torchvision  # noqa: F401

        return False
    except ImportError:
        pass
    import torch
    import torch.nn.functional as F
    from torch import nn

    from napari_sam2.engine.segment import mask_utils

    def batched_nms(boxes, scores, idxs, iou_threshold):
        t = time.perf_counter()
        keep = mask_utils.batched_nms(boxes, scores, idxs, iou_threshold)
        NMS_SECONDS[0] += time.perf_counter() - t
        return keep

    class ToTensor:
        def __call__(self, pic):
            x = torch.from_numpy(np.ascontiguousarray(pic)).permute(2, 0, 1).contiguous()
            return x.to(torch.float32).div(255) if x.dtype == torch.uint8 else x.to(torch.float32)

    class Resize(nn.Module):
        def __init__(self, size: tuple[int, int]) -> None:
            super().__init__()
            self.size = [int(size[0]), int(size[1])]

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = F.interpolate(
                x.unsqueeze(0), size=self.size, mode="bilinear", align_corners=False, antialias=True
            )
            return out.squeeze(0)

    class Normalize(nn.Module):
        def __init__(self, mean: list[float], std: list[float]) -> None:
            super().__init__()
            self.register_buffer("mean", torch.tensor(mean)[:, None, None])
            self.register_buffer("std", torch.tensor(std)[:, None, None])

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return (x - self.mean) / self.std

    tv = types.ModuleType("torchvision")
    ops, boxes, transforms = (
        types.ModuleType(f"torchvision.{n}") for n in ("ops", "ops.boxes", "transforms")
    )
    boxes.batched_nms, boxes.box_area = batched_nms, mask_utils.box_area
    ops.boxes, ops.batched_nms = boxes, batched_nms
    transforms.ToTensor, transforms.Resize, transforms.Normalize = ToTensor, Resize, Normalize
    tv.ops, tv.transforms = ops, transforms
    sys.modules.update(
        {
            "torchvision": tv,
            "torchvision.ops": ops,
            "torchvision.ops.boxes": boxes,
            "torchvision.transforms": transforms,
        }
    )
    return True


def meta_generator_class(meta_repo: str, config: str, checkpoint: Path):
    """(Meta's model, Meta's SAM2AutomaticMaskGenerator class, Meta's revision)."""
    import importlib

    import meta_reference as mr

    from napari_sam2.model import load_config

    m = mr.import_meta(meta_repo)
    amg = importlib.import_module("sam2.automatic_mask_generator")
    model, _ = mr.build_meta_predictor(m, load_config(config), checkpoint, "cpu", False)
    return model, amg.SAM2AutomaticMaskGenerator, mr.meta_revision(m.pkg_dir)


# ====================================================================== timing


def timed(fn):
    t, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - t, time.process_time() - c


def records_digest(records: list[dict]) -> str:
    """SHA-1 of every record's mask bits, box, scores, point and crop: equal digests, same output."""
    import hashlib

    h = hashlib.sha1()
    for r in records:
        h.update(np.packbits(r["segmentation"]).tobytes())
        h.update(json.dumps([r["area"], r["bbox"], r["predicted_iou"], r["stability_score"],
                             r["point_coords"], r["crop_box"]]).encode())  # fmt: skip
    return h.hexdigest()[:16]


def agreement(ours: list[dict], theirs: list[dict]) -> dict:
    res = {"n_ours": len(ours), "n_meta": len(theirs)}
    n = min(len(ours), len(theirs))
    if n:
        ious = []
        for a, b in zip(ours[:n], theirs[:n]):
            inter = np.logical_and(a["segmentation"], b["segmentation"]).sum()
            union = np.logical_or(a["segmentation"], b["segmentation"]).sum()
            ious.append(inter / union if union else 1.0)
        res["mask_iou_min"] = float(min(ious))
        res["identical_masks"] = int(sum(i == 1.0 for i in ious))
        res["pred_iou_absdiff_max"] = float(
            max(abs(a["predicted_iou"] - b["predicted_iou"]) for a, b in zip(ours, theirs))
        )
        res["stability_absdiff_max"] = float(
            max(abs(a["stability_score"] - b["stability_score"]) for a, b in zip(ours, theirs))
        )
    return res


def matmul_rate(m: int, k: int, n: int, repeats: int = 3) -> tuple[float, float]:
    """GFLOP/s of this machine's best of ``repeats`` fp32 products (m x k) @ (k x n), per wall
    second and per CPU second of this process (the latter less hurt by other work on the machine)."""
    import torch

    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(m, k, generator=g), torch.randn(k, n, generator=g)
    torch.mm(a, b)
    times = [timed(lambda: torch.mm(a, b))[1:] for _ in range(repeats)]
    flop = 2.0 * m * k * n
    return flop / min(t[0] for t in times) / 1e9, flop / min(t[1] for t in times) / 1e9


def decoder_batch(gen, frame: np.ndarray, repeats: int) -> dict:
    """One batch of ours (the first ``points_per_batch`` points, both decoder stages, every row
    upscaled): seconds, counted FLOPs and their floor at the machine's matrix-product rate."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    pred = gen.predictor
    pred.set_image(frame)
    prepared = gen._prepare_decoder()
    model, dec = pred.model, pred.model.sam_mask_decoder
    pts = torch.as_tensor(gen.point_grids[0][: gen.points_per_batch] * np.array(frame.shape[:2])[None, ::-1])
    pts = pred.transform_coords(pts.float(), normalize=True, orig_hw=frame.shape[:2])
    labels = torch.ones(pts.shape[0], dtype=torch.int32)
    high_res = [f[:1] for f in pred._features["high_res_feats"]]

    def run():
        with torch.inference_mode():
            sparse, _ = model.sam_prompt_encoder((pts[:, None], labels[:, None]), None)
            tokens = dec.decode_tokens(None, None, sparse, None, True, prepared=prepared)
            return dec.upscale_masks(tokens, high_res)

    with FlopCounterMode(display=False) as counter:
        run()
    flops = counter.get_total_flops()
    times = [timed(run)[1:] for _ in range(repeats)]
    # the decoder's dominant product: the image side's projections, (points * h * w) x 256 -> 128
    c, (h, w) = prepared.keys.shape[2], prepared.hw
    rate, cpu_rate = matmul_rate(pts.shape[0] * h * w, c, c // 2)
    best, cpu_best = min(t[0] for t in times), min(t[1] for t in times)
    gflop = flops / 1e9
    return {
        "points": int(pts.shape[0]),
        "gflop": round(gflop, 1),
        "seconds_best": round(best, 2),
        "cpu_seconds_best": round(cpu_best, 2),
        "matmul_gflops": round(rate, 1),
        "matmul_gflops_per_cpu_s": round(cpu_rate, 1),
        "floor_seconds": round(gflop / rate, 2),
        "times_floor": round(best / (gflop / rate), 2),
        "cpu_floor_seconds": round(gflop / cpu_rate, 2),
        "cpu_times_floor": round(cpu_best / (gflop / cpu_rate), 2),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--meta-repo", help="your checkout of facebookresearch/sam2 (root or its sam2/)")
    ap.add_argument("--frames", type=int, default=2, help="lineage-sample frames, each run by both")
    ap.add_argument("--points-per-side", type=int, default=32)
    ap.add_argument("--points-per-batch", type=int, default=64)
    ap.add_argument("--config", default="sam2.1_hiera_t")
    ap.add_argument("--checkpoint", help="checkpoint file (default: the tests' deterministic test weights)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-repeats", type=int, default=2, help="timed repeats of the single decoder batch")
    ap.add_argument("--out", type=Path, help="append the results as a JSON line here")
    ap.add_argument(
        "--ours-only",
        action="store_true",
        help="time only our generate() (e.g. an older revision on PYTHONPATH, for before/after)",
    )
    args = ap.parse_args(argv)

    import torch

    from napari_sam2 import SAM2AutomaticMaskGenerator, build_sam2

    torch.set_num_threads(args.threads)
    ckpt = bs.resolve_checkpoint(args.config, "test", args.checkpoint)
    if not args.ours_only and not args.meta_repo:
        ap.error("--meta-repo is required (a checkout of facebookresearch/sam2), or give --ours-only")
    stand_in = meta_rev = None
    if not args.ours_only:
        stand_in = install_torchvision_standin()
        meta_model, MetaAMG, meta_rev = meta_generator_class(args.meta_repo, args.config, ckpt)
    ours_model = build_sam2(args.config, ckpt, device="cpu")
    kwargs = dict(points_per_side=args.points_per_side, points_per_batch=args.points_per_batch)
    frames = lineage_frames(args.frames)
    record = {"date": bs.now_iso(), "command": bs.command_line(), "machine": bs.machine_info(),
              "meta_git": meta_rev, "torchvision_stand_in": stand_in, "checkpoint": ckpt.name,
              "kwargs": kwargs, "frames": []}  # fmt: skip
    print(bs.describe_run(record), flush=True)
    for i, frame in enumerate(frames):
        runs = {}
        order = ("ours", "meta") if i % 2 == 0 else ("meta", "ours")
        if args.ours_only:
            order = ("ours",)
        for who in order:
            NMS_SECONDS[0] = 0.0
            if who == "ours":
                gen = SAM2AutomaticMaskGenerator(ours_model, **kwargs)
            else:
                gen = MetaAMG(meta_model, **kwargs)
            recs, wall, cpu = timed(lambda gen=gen, frame=frame: gen.generate(frame))
            runs[who] = {"records": recs, "seconds": round(wall, 1), "cpu_seconds": round(cpu, 1)}
            if who == "meta":
                runs[who]["nms_seconds"] = round(NMS_SECONDS[0], 3)
            print(f"frame {i} {who}: {len(recs)} masks, {wall:.1f} s wall, {cpu:.1f} s cpu", flush=True)
        if args.ours_only:
            entry = {"frame": i, "ours_seconds": runs["ours"]["seconds"], "ours_cpu_seconds": runs["ours"]["cpu_seconds"],
                     "n_ours": len(runs["ours"]["records"]), "ours_digest": records_digest(runs["ours"]["records"]),
                     "load_avg_1min": round(os.getloadavg()[0], 1)}  # fmt: skip
            record["frames"].append(entry)
            print(json.dumps(entry), flush=True)
            continue
        entry = {
            "frame": i,
            "ours_seconds": runs["ours"]["seconds"],
            "ours_cpu_seconds": runs["ours"]["cpu_seconds"],
            "meta_seconds": runs["meta"]["seconds"],
            "meta_cpu_seconds": runs["meta"]["cpu_seconds"],
            "meta_nms_seconds": runs["meta"].get("nms_seconds"),
            "ratio_wall": round(runs["meta"]["seconds"] / runs["ours"]["seconds"], 2),
            "ratio_cpu": round(runs["meta"]["cpu_seconds"] / runs["ours"]["cpu_seconds"], 2),
            "load_avg_1min": round(os.getloadavg()[0], 1),
            "ours_digest": records_digest(runs["ours"]["records"]),
            **agreement(runs["ours"]["records"], runs["meta"]["records"]),
        }
        record["frames"].append(entry)
        print(json.dumps(entry), flush=True)
    if args.ours_only:
        if args.out:
            bs.append_jsonl(args.out, record)
        return 0
    gen = SAM2AutomaticMaskGenerator(ours_model, **kwargs)
    record["decoder_batch"] = decoder_batch(gen, frames[0], args.batch_repeats)
    print("decoder batch:", json.dumps(record["decoder_batch"]), flush=True)
    ratios = [f["ratio_wall"] for f in record["frames"]]
    cratios = [f["ratio_cpu"] for f in record["frames"]]
    print(
        f"Meta / ours, wall: median {statistics.median(ratios):.2f} ({ratios}); cpu: median {statistics.median(cratios):.2f}"
    )
    if args.out:
        bs.append_jsonl(args.out, record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
