"""One call from labelled stacks to a fine-tuned checkpoint, and optionally an instance head
trained on its features: :func:`fine_tune` (the engine of the CLI and of the widget's Train tab)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from napari_sam2.engine.train.data import LabeledStack, split_frames
from napari_sam2.engine.train.export import output_paths, save_trained
from napari_sam2.engine.train.instance_head import HeadTrainConfig
from napari_sam2.engine.train.trainer import TrainConfig, Trainer
from napari_sam2.errors import AlreadyExistsError, MissingFileError, NapariSam2Error

STATE_FILE = "train_state.pt"


def state_dir_for(out: str | os.PathLike) -> Path:
    """Where the resumable state of a run writing ``out`` lives: ``<out>.train-state/``."""
    ckpt = output_paths(out)["checkpoint"]
    return ckpt.parent / f"{ckpt.stem}.train-state"


def instance_head_path(out: str | os.PathLike) -> Path:
    """The instance head a run writing ``out`` trains: ``<out>.instance-head.pt``, beside the checkpoint."""
    ckpt = output_paths(out)["checkpoint"]
    return ckpt.parent / f"{ckpt.stem}.instance-head.pt"


class _HeadStopped(NapariSam2Error):
    """Raised from the head's progress callback when asked to stop (its loop has no stop check)."""


def fine_tune(
    stacks: Sequence[LabeledStack],
    out: str | os.PathLike,
    *,
    config_name: str = "sam2.1_hiera_t",
    checkpoint: str | os.PathLike | None = None,
    device: str = "auto",
    config: TrainConfig | None = None,
    split: str = "auto",
    val_fraction: float = 0.2,
    block: int = 8,
    resume: bool = False,
    overwrite: bool = False,
    download: bool = True,
    model: Any = None,
    progress: Callable[[dict[str, Any]], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    instance_head: HeadTrainConfig | None = None,
) -> dict[str, Any]:
    """Fine-tune SAM 2 on ``stacks`` and write ``out`` (checkpoint, delta, model card).

    The resumable state is saved every ``config.checkpoint_every`` steps and on a stop into
    ``<out>.train-state/``; ``resume=True`` continues from it (same data, settings and seed give
    the weights of an uninterrupted run). ``model`` replaces the built one (tests pass a
    reduced-size model; it must hold the ``checkpoint`` weights). Returns the run's summary
    with ``"files"`` (absent when stopped before the end), the trained ``"model"`` and the
    ``"train"`` / ``"val"`` frames.

    ``instance_head``: then train an instance head on the fine-tuned model's features, on the
    same training frames, and write it to :func:`instance_head_path` (``files["instance_head"]``;
    its summary, with the held-out F1, is ``"instance_head"``). Its progress events carry
    ``"phase": "instance head"``; a stop during it keeps the written checkpoint and writes no
    head (``"instance_head_stopped": True``).
    """
    from napari_sam2.engine.weights.build import build_sam2, load_model_weights, resolve_device
    from napari_sam2.engine.weights.checkpoints import load_state_dict_file
    from napari_sam2.engine.weights.download import ensure_checkpoint

    config = config or TrainConfig()
    paths = output_paths(out)
    if instance_head is not None:
        paths["instance_head"] = instance_head_path(out)
    taken = [str(p) for p in paths.values() if p.exists()]
    if taken and not overwrite:  # checked before hours of training, not after
        raise AlreadyExistsError(
            f"{', '.join(taken)} already exist(s); choose another output or pass overwrite=True"
        )
    state_dir = state_dir_for(out)
    state_file = state_dir / STATE_FILE
    if state_file.exists() and not resume:
        raise AlreadyExistsError(
            f"{state_file} holds the state of an earlier run with this output; resume it (resume=True, "
            f"--resume) or delete {state_dir} to start afresh"
        )
    if resume and not state_file.exists():
        raise MissingFileError(f"resume: no saved state at {state_file}; run once without resume first")

    ckpt_path = ensure_checkpoint(config_name, checkpoint, download=download)
    base_sd = load_state_dict_file(ckpt_path)
    if model is None:
        model = build_sam2(config_name, ckpt_path, device=resolve_device(device))
    else:
        load_model_weights(model, base_sd, source=f"checkpoint {ckpt_path}")
    train, val = split_frames(stacks, val_fraction, by=split, block=block, seed=config.seed)
    trainer = Trainer(model, stacks, config, train=train, val=val, state_dir=state_dir)
    if resume:
        trainer.load_state(state_file)
    t0 = time.perf_counter()
    summary = trainer.run(progress=progress, should_stop=should_stop)
    summary["seconds"] = round(time.perf_counter() - t0, 2)
    summary.update(model=model, train=train, val=val)  # for what follows (the instance head), not saved
    if summary["stopped"]:
        summary["state"] = str(state_file)
        return summary
    by = split if split != "auto" else ("stack" if len(stacks) >= 3 else "time")
    card = {
        "config": model.config.name,
        "trainable": config.trainable,
        "steps": trainer.step_count,
        "seconds": summary["seconds"],
        "device": str(model.device),
        "amp": config.amp,
        "seed": config.seed,
        "first_loss": summary["first_loss"],
        "last_loss": summary["last_loss"],
        "val_iou_before": summary["val_iou_before"],
        "val_iou_after": summary["val_iou_after"],
        "validation": summary["validation"],
        "data": {
            "stacks": [
                {"name": s.name, "shape": list(s.frames.shape), "labelled": len(s.labelled)} for s in stacks
            ],
            "split": by,
            "train_frames": len(train),
            "val_frames": len(val),
        },
        "settings": asdict(config),
    }
    summary["files"] = save_trained(model, out, base_sd, card, base_checkpoint=ckpt_path, overwrite=overwrite)
    if instance_head is not None:
        _train_head(summary, stacks, instance_head, paths["instance_head"], overwrite, progress, should_stop)
    return summary


def _train_head(
    summary: dict[str, Any],
    stacks: Sequence[LabeledStack],
    config: HeadTrainConfig,
    path: Path,
    overwrite: bool,
    progress: Callable[[dict[str, Any]], None] | None,
    should_stop: Callable[[], bool] | None,
) -> None:
    """The instance head on the fine-tuned model (its features are the ones tracking will compute)."""
    from napari_sam2.engine.train.instance_head import train_instance_head

    def head_progress(info: dict[str, Any]) -> None:
        if progress is not None:
            progress({**info, "phase": "instance head"})
        if should_stop is not None and should_stop():
            raise _HeadStopped

    try:
        head, info = train_instance_head(
            summary["model"], stacks, summary["train"], config, val=summary["val"], progress=head_progress
        )
    except _HeadStopped:
        summary["instance_head_stopped"] = True
        return
    info["checkpoint"] = str(summary["files"]["checkpoint"])
    summary["files"]["instance_head"] = head.save(path, info, overwrite=overwrite)
    summary["instance_head"] = info
