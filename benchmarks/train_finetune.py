"""Does training learn? Held-out scores of fine-tuning and of the instance head, from the test weights.

Two measurements on the synthetic time-lapse (``plugin/sample_data.synthetic_timelapse``), each
training on stacks of some seeds and scoring on a stack of another seed (never the same movie):

1. ``decoder``: fine-tune the mask decoder + prompt encoder (:class:`Trainer`, Meta's prompt
   sampling) and record the held-out IoU of one click at each cell's centre every
   ``--eval-every`` steps, with the elapsed time;
2. ``head``: train the instance head (:func:`train_instance_head`) for ``--head-steps`` steps,
   per ``--seeds``, and report the held-out instance F1 at IoU 0.5 and its cost per frame
   (head + watershed, the encoder excluded as it is shared), beside segment-everything's cost
   per frame (32 x 32 point grid; the encoder excluded too).

The weights are the golden test weights (random, no real SAM 2 knowledge), the image encoder is
frozen. ``--image-size`` below 1024 runs the same weights at a smaller input (CPU budgets).

    PYTHONPATH=src python benchmarks/train_finetune.py --steps 200 --image-size 512
    PYTHONPATH=src python benchmarks/train_finetune.py --dry-run

Results: JSON lines in ``--out`` and a summary on stdout.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--what", default="decoder,head", help="decoder, head or both (comma separated)")
    p.add_argument("--image-size", type=int, default=1024, help="model input size (default 1024)")
    p.add_argument("--device", default="auto")
    p.add_argument("--steps", type=int, default=200, help="decoder fine-tuning steps")
    p.add_argument("--eval-every", type=int, default=50)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--head-steps", type=int, default=300)
    p.add_argument("--seeds", default="0,1,2", help="instance head training seeds")
    p.add_argument("--frames", type=int, default=8, help="frames per synthetic stack")
    p.add_argument("--size", type=int, default=256, help="synthetic frame side in pixels")
    p.add_argument("--out", default="train_finetune.jsonl")
    p.add_argument("--dry-run", action="store_true", help="print the plan, run nothing")
    return p.parse_args(argv)


def make_model(image_size: int, device: str):
    import torch

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_speed import resolve_checkpoint

    from napari_sam2.engine.weights.build import load_model_weights, resolve_device
    from napari_sam2.engine.weights.checkpoints import load_state_dict_file
    from napari_sam2.model import SAM2Model, load_config

    ckpt = resolve_checkpoint("sam2.1_hiera_t", "test")
    cfg = load_config("sam2.1_hiera_t")
    s = image_size // 16
    cfg = dataclasses.replace(
        cfg,
        image_size=image_size,
        memory_attention=dataclasses.replace(cfg.memory_attention, feat_sizes=(s, s)),
    )
    torch.manual_seed(0)
    model = SAM2Model(cfg)
    load_model_weights(model, load_state_dict_file(ckpt), source=str(ckpt))
    return model.to(resolve_device(device)).eval()


def stacks_for(seeds, frames: int, size: int):
    from napari_sam2.engine.train import labeled_stack
    from napari_sam2.plugin.sample_data import synthetic_timelapse

    out = []
    for s in seeds:
        img, lab = synthetic_timelapse(frames, (size, size), 6, seed=s)
        out.append(labeled_stack(img, lab, name=f"synthetic seed {s}"))
    return out


def bench_decoder(args, write) -> None:
    from napari_sam2.engine.train import TrainConfig, Trainer
    from napari_sam2.engine.train.data import FrameRef

    stacks = stacks_for([10, 11, 12], args.frames, args.size)  # 10, 11 train; 12 held out
    train = [FrameRef(i, t) for i in (0, 1) for t in range(args.frames)]
    val = [FrameRef(2, t) for t in range(0, args.frames, 2)]
    model = make_model(args.image_size, args.device)
    cfg = TrainConfig(steps=args.steps, lr=args.lr, loss_resolution="low", validate_every=args.eval_every)
    tr = Trainer(model, stacks, cfg, train=train, val=val)
    t0 = time.perf_counter()
    curve = []

    def progress(info):
        if "val_iou" in info:
            curve.append((info["step"], info["val_iou"], round(time.perf_counter() - t0, 1)))
            print(f"decoder step {info['step']}: held-out IoU {info['val_iou']:.3f}", flush=True)

    summary = tr.run(progress=progress)
    rec = {
        "what": "decoder",
        "image_size": args.image_size,
        "device": str(model.device),
        "steps": args.steps,
        "lr": args.lr,
        "val_iou_before": summary["val_iou_before"],
        "curve": curve,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    write(rec)


def bench_head(args, write) -> None:
    import torch

    from napari_sam2.engine.segment.automatic_mask_generator import SAM2AutomaticMaskGenerator
    from napari_sam2.engine.train.data import FrameRef
    from napari_sam2.engine.train.features import FrameStore, encode_frame
    from napari_sam2.engine.train.instance_head import (
        HeadTrainConfig,
        evaluate_instance_head,
        maps_to_instances,
        predict_maps,
        train_instance_head,
    )

    model = make_model(args.image_size, args.device)
    seeds = [int(s) for s in args.seeds.split(",")]
    for seed in seeds:
        stacks = stacks_for([seed, seed + 100], args.frames, args.size)  # train on one movie, score another
        train = [FrameRef(0, t) for t in range(args.frames)]
        val = [FrameRef(1, t) for t in range(args.frames)]
        head, summary = train_instance_head(
            model, stacks, train, HeadTrainConfig(steps=args.head_steps, seed=seed)
        )
        store = FrameStore(model, stacks)
        f1 = evaluate_instance_head(model, head, store, val)
        feats = store.features(val[0])
        gt = stacks[1].label_frame(0)
        t0 = time.perf_counter()
        for _ in range(3):
            maps_to_instances(predict_maps(head, feats, gt.shape))
        head_s = (time.perf_counter() - t0) / 3
        rec = {
            "what": "head",
            "seed": seed,
            "image_size": args.image_size,
            "steps": args.head_steps,
            "train_seconds": summary["seconds"],
            "val_f1": f1,
            "head_seconds_per_frame": round(head_s, 4),
        }
        if seed == seeds[0]:  # segment-everything's cost per frame, features precomputed likewise
            amg = SAM2AutomaticMaskGenerator(model)
            rgb = stacks[1].image_rgb(0)
            t0 = time.perf_counter()
            masks = amg.generate(rgb)
            amg_s = time.perf_counter() - t0
            enc0 = time.perf_counter()
            with torch.no_grad():
                encode_frame(model, stacks[1], 0)
            enc_s = time.perf_counter() - enc0
            rec.update(amg_seconds_per_frame=round(amg_s - enc_s, 3), encoder_seconds=round(enc_s, 3))
            rec["amg_masks"] = len(masks)
        print(f"head seed {seed}: held-out F1@0.5 {f1:.3f}, {head_s * 1000:.0f} ms per frame", flush=True)
        write(rec)


def main(argv=None) -> int:
    args = parse_args(argv)
    what = [w.strip() for w in args.what.split(",") if w.strip()]
    unknown = set(what) - {"decoder", "head"}
    if unknown:
        raise SystemExit(f"--what: unknown {sorted(unknown)}; use decoder, head or both")
    plan = f"{what} at image size {args.image_size}: decoder {args.steps} steps, head {args.head_steps} steps x seeds {args.seeds}"
    print(plan)
    if args.dry_run:
        return 0
    out = Path(args.out)

    def write(rec):
        with out.open("a") as f:
            f.write(json.dumps(rec) + "\n")

    if "decoder" in what:
        bench_decoder(args, write)
    if "head" in what:
        bench_head(args, write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
