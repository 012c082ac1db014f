"""``napari-sam2 train``: fine-tune SAM 2 on image stacks and their corrected label stacks.

Each ``--data IMAGES LABELS`` pair is an image stack (anything ``track`` reads) and its
instance labels of the same (T, Y, X): a label TIFF / OME-Zarr stack or a Cell Tracking
Challenge folder (``man_track.txt`` + ``maskTTT.tif``, as ``track-all`` writes into its ``ctc/`` folder).
Only frames with at least one label are used. Writes OUTPUT (an official-format checkpoint
that ``--checkpoint`` of every other command takes), OUTPUT's ``.delta.pt`` (only the changed
tensors, to share) and its model card (``.card.json``, ``.card.md``). The resumable state is
kept in ``OUTPUT.train-state/``; Ctrl-C stops at the end of the current step and saves it,
``--resume`` continues. Every argument is checked before the model is built.
"""

from __future__ import annotations

import argparse
import sys
import threading

from napari_sam2.errors import InputError, MissingFileError

from ._common import parse_channels, report_error


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return v


def _model(args: argparse.Namespace):
    """The model to train; None lets fine_tune build the variant (tests return a small one)."""
    return None


def _stacks(args: argparse.Namespace):
    from pathlib import Path

    from napari_sam2.engine.train import labeled_stack

    stacks = []
    for images, labels in args.data:
        for what, p in (("images", images), ("labels", labels)):
            if not Path(p).expanduser().exists():
                raise MissingFileError(f"--data: the {what} {p} do not exist")
        stacks.append(
            labeled_stack(images, labels, name=Path(images).name, channel_axis=None, channels=args.channels)
        )
    return stacks


def _run(args: argparse.Namespace) -> int:
    import signal

    from napari_sam2.engine.train import PromptConfig, TrainConfig, fine_tune
    from napari_sam2.engine.train.instance_head import HeadTrainConfig
    from napari_sam2.engine.weights.build import resolve_device
    from napari_sam2.model.variants import resolve_variant

    stop = threading.Event()
    old_handler = None
    try:
        config_name = resolve_variant(args.model)
        resolve_device(args.device)
        config = TrainConfig(
            steps=args.steps,
            lr=args.lr,
            objects_per_step=args.objects_per_step,
            trainable=args.trainable,
            lora_rank=args.lora_rank,
            amp={"none": None, "bf16": "bfloat16", "fp16": "float16"}[args.amp],
            loss_resolution=args.loss_resolution,
            checkpoint_every=args.checkpoint_every,
            validate_every=args.validate_every,
            seed=args.seed,
            prompts=PromptConfig(correction_clicks=args.correction_clicks),
        )
        if args.instance_head_steps < 0:
            raise InputError(f"--instance-head-steps must be >= 0, got {args.instance_head_steps}")
        stacks = _stacks(args)

        def progress(info: dict) -> None:
            if args.quiet:
                return
            step, steps = info["step"], info["steps"]
            if info.get("phase") == "instance head":
                if step % args.log_every == 0 or step == steps:
                    print(
                        f"instance head step {step}/{steps}: loss {info['loss']:.4f}",
                        file=sys.stderr,
                        flush=True,
                    )
                return
            if "val_iou" in info or step % args.log_every == 0 or step == steps:
                val = f", validation IoU {info['val_iou']:.3f}" if info.get("val_iou") is not None else ""
                print(f"step {step}/{steps}: loss {info['loss']:.4f}{val}", file=sys.stderr, flush=True)

        def on_sigint(signum, frame):  # finish the step, save the state, then stop
            if stop.is_set():
                raise KeyboardInterrupt
            stop.set()
            print("stopping after this step (Ctrl-C again to abort at once)", file=sys.stderr, flush=True)

        if threading.current_thread() is threading.main_thread():
            old_handler = signal.signal(signal.SIGINT, on_sigint)
        summary = fine_tune(
            stacks,
            args.output,
            config_name=config_name,
            checkpoint=args.checkpoint,
            device=args.device,
            config=config,
            split=args.split,
            val_fraction=args.val_fraction,
            block=args.block,
            resume=args.resume,
            overwrite=args.overwrite,
            model=_model(args),
            progress=progress,
            should_stop=stop.is_set,
            instance_head=(
                HeadTrainConfig(steps=args.instance_head_steps, seed=args.seed)
                if args.instance_head_steps
                else None
            ),
        )
    except Exception as exc:  # noqa: BLE001 - every failure is reported in one line, with what to do
        return report_error("train", exc)
    finally:
        if old_handler is not None:
            signal.signal(signal.SIGINT, old_handler)
    if summary["stopped"]:
        print(
            f"napari-sam2 train: stopped at step {summary['steps']}; the state is in {summary['state']}: "
            "run the same command with --resume to continue",
            file=sys.stderr,
        )
        return 130
    files = summary["files"]
    head_msg = ""
    if summary.get("instance_head_stopped"):
        print(
            f"napari-sam2 train: stopped while training the instance head; {files['checkpoint']} is written, "
            "the head is not: train one on it from a script with train_instance_head (docs/fine-tuning.md)",
            file=sys.stderr,
        )
        return 130
    if "instance_head" in files:
        val_f1 = summary["instance_head"].get("val_f1")
        f1 = f", held-out instance F1 {val_f1:.3f}" if val_f1 is not None else ""
        head_msg = (
            f", and the instance head {files['instance_head'].name}{f1} "
            f"(napari-sam2 track-all ... --instance-head {files['instance_head']})"
        )
    if not args.quiet:
        before, after = summary["val_iou_before"], summary["val_iou_after"]
        val = f"; validation IoU {before:.3f} -> {after:.3f}" if before is not None else ""
        print(
            f"{summary['steps']} steps in {summary['seconds']:.0f} s{val}. Wrote {files['checkpoint']} "
            f"(use it with --checkpoint), {files['delta'].name} and {files['card_md'].name}{head_msg}"
        )
    return 0


def add_parser(subparsers) -> None:
    from napari_sam2.model.variants import VARIANTS

    p = subparsers.add_parser(
        "train",
        help="fine-tune SAM 2 on image stacks and their corrected labels",
        description=__doc__.split("\n\n", 1)[1].replace("``", "'"),
    )
    p.add_argument(
        "--data",
        nargs=2,
        action="append",
        required=True,
        metavar=("IMAGES", "LABELS"),
        help="an image stack and its label stack (TIFF/OME-Zarr labels or a CTC folder); repeat for more stacks",
    )
    p.add_argument("-o", "--output", required=True, help="the checkpoint to write, e.g. tuned.pt")
    p.add_argument("--model", default="sam2.1_hiera_t", help=f"model variant: {', '.join(VARIANTS)}")
    p.add_argument("--checkpoint", default=None, help="checkpoint to start from (default: the official one)")
    p.add_argument(
        "--device", default="auto", help="auto (CUDA, then Apple MPS, then CPU), cpu, cuda, cuda:N or mps"
    )
    p.add_argument("--steps", type=_positive_int, default=1000, help="optimisation steps (default 1000)")
    p.add_argument(
        "--lr", type=float, default=1e-4, help="peak learning rate, cosine to a tenth (default 1e-4)"
    )
    p.add_argument(
        "--trainable",
        default="decoder",
        choices=["decoder", "lora", "memory"],
        help="decoder: mask decoder + prompt encoder (default, fast, ~4 M parameters); lora: also low-rank "
        "adapters on the image encoder (slower: the encoder runs at every step); memory: also the memory "
        "modules, on clips of consecutive labelled frames (video tracking)",
    )
    p.add_argument("--lora-rank", type=_positive_int, default=4, help="rank of the LoRA adapters (default 4)")
    p.add_argument(
        "--amp",
        default="none",
        choices=["none", "bf16", "fp16"],
        help="mixed precision (default none: float32)",
    )
    p.add_argument("--objects-per-step", type=_positive_int, default=4, help="objects per step (default 4)")
    p.add_argument(
        "--correction-clicks",
        type=int,
        default=7,
        help="correction clicks drawn from the model's errors after the first prompt (default 7, as Meta)",
    )
    p.add_argument(
        "--loss-resolution",
        default="high",
        choices=["high", "low"],
        help="high: losses on the model's full grid (as Meta); low: on the 4x smaller logits (cheaper)",
    )
    p.add_argument(
        "--split",
        default="auto",
        choices=["auto", "stack", "time"],
        help="validation split (default auto: by stack from 3 stacks on, else by time block)",
    )
    p.add_argument(
        "--val-fraction", type=float, default=0.2, help="share held out for validation (default 0.2; 0: none)"
    )
    p.add_argument(
        "--block", type=_positive_int, default=8, help="labelled frames per time block (default 8)"
    )
    p.add_argument(
        "--checkpoint-every", type=_positive_int, default=100, help="save the resumable state every N steps"
    )
    p.add_argument("--validate-every", type=_positive_int, default=100, help="validate every N steps")
    p.add_argument("--seed", type=int, default=0, help="seed of every random draw (default 0)")
    p.add_argument(
        "--channels",
        type=parse_channels,
        default=None,
        metavar="C[,C...]",
        help="the 1 to 3 channels the model sees",
    )
    p.add_argument(
        "--instance-head-steps",
        type=int,
        default=0,
        metavar="N",
        help="then train the automatic instance head for N steps on the fine-tuned model's features and "
        "write OUTPUT's .instance-head.pt (default 0: no head)",
    )
    p.add_argument("--resume", action="store_true", help="continue the run saved in OUTPUT.train-state/")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.add_argument("--log-every", type=_positive_int, default=10, help="print the loss every N steps")
    p.add_argument("--quiet", action="store_true", help="no progress or summary")
    p.set_defaults(func=_run)
