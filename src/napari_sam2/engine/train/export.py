"""What a training run leaves behind: an official checkpoint, the changed tensors, a model card.

- ``<name>.pt``: ``{"model": state_dict}`` with exactly the official keys of the variant
  (LoRA adapters folded into the encoder's weights), so :func:`~napari_sam2.engine.weights.build.build_sam2`
  and Meta's own ``build_sam2`` load it strictly as that variant. Before it is written, it is
  loaded strictly into a fresh model of the variant: a file that would not load is never made.
- ``<name>.delta.pt``: only the tensors that differ from the base checkpoint (the mask
  decoder and prompt encoder by default: ~4 MB for tiny instead of ~150 MB), with the base's
  name and SHA-256, to share; :func:`apply_delta` rebuilds the full checkpoint from the base.
- ``<name>.card.json`` / ``<name>.card.md``: the model card (data, split, settings, steps,
  time, validation before and after).

Nothing is overwritten: existing files raise :class:`FileExistsError` unless ``overwrite``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from napari_sam2.engine.train.lora import merged_state_dict
from napari_sam2.engine.weights.build import load_model_weights
from napari_sam2.errors import AlreadyExistsError, InputError
from napari_sam2.model import SAM2Model, load_config

DELTA_FORMAT = "napari-sam2-delta/1"


def official_state_dict(model: SAM2Model) -> dict[str, torch.Tensor]:
    """The model's weights under the official keys (adapters folded in), float32 on the CPU."""
    return {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in merged_state_dict(model).items()}


def changed_tensors(
    state_dict: Mapping[str, torch.Tensor], base: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """The entries of ``state_dict`` that differ from ``base`` (bitwise), or are absent from it."""
    return {k: v for k, v in state_dict.items() if k not in base or not torch.equal(v, base[k].to(v.dtype))}


def _check_free(paths: list[Path], overwrite: bool) -> None:
    taken = [str(p) for p in paths if p.exists()]
    if taken and not overwrite:
        raise AlreadyExistsError(
            f"{', '.join(taken)} already exist(s); choose another output name or pass overwrite=True "
            "(--overwrite on the command line) to replace them"
        )


def output_paths(out: str | os.PathLike) -> dict[str, Path]:
    """The files a run named ``out`` (``model.pt`` or ``model``) writes."""
    p = Path(out).expanduser()
    stem = p.with_suffix("") if p.suffix == ".pt" else p
    return {
        "checkpoint": stem.with_suffix(".pt"),
        "delta": stem.parent / f"{stem.name}.delta.pt",
        "card_json": stem.parent / f"{stem.name}.card.json",
        "card_md": stem.parent / f"{stem.name}.card.md",
    }


def save_trained(
    model: SAM2Model,
    out: str | os.PathLike,
    base_state_dict: Mapping[str, torch.Tensor],
    card: dict[str, Any] | None = None,
    *,
    base_checkpoint: str | os.PathLike | None = None,
    overwrite: bool = False,
) -> dict[str, Path]:
    """Write the checkpoint, the delta and the model card of a trained ``model``; returns their paths.

    ``base_state_dict`` is the checkpoint training started from (the delta is taken against it).
    """
    paths = output_paths(out)
    _check_free(list(paths.values()), overwrite)
    sd = official_state_dict(model)
    # strict load into a fresh model of the variant, at its official size: what build_sam2 will do
    load_model_weights(SAM2Model(load_config(model.config.name)), sd, source="the trained weights")
    delta = changed_tensors(sd, base_state_dict)
    base_info: dict[str, Any] = {"config": model.config.name}
    if base_checkpoint is not None:
        from napari_sam2.engine.weights.checkpoints import sha256_file

        base_info.update(path=str(base_checkpoint), sha256=sha256_file(Path(base_checkpoint)))
    paths["checkpoint"].parent.mkdir(parents=True, exist_ok=True)
    _atomic_save({"model": sd}, paths["checkpoint"])
    _atomic_save({"format": DELTA_FORMAT, "base": base_info, "tensors": delta}, paths["delta"])
    card = dict(card or {})
    card.setdefault("config", model.config.name)
    card["base_checkpoint"] = base_info
    card["changed_tensors"] = len(delta)
    card["changed_parameters"] = int(sum(v.numel() for v in delta.values()))
    card["files"] = {k: p.name for k, p in paths.items()}
    paths["card_json"].write_text(json.dumps(card, indent=2, default=str) + "\n")
    paths["card_md"].write_text(card_markdown(card))
    return paths


def _atomic_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    tmp.replace(path)


def load_delta(path: str | os.PathLike) -> dict[str, Any]:
    """A delta file: ``{"format", "base": {"config", "path"?, "sha256"?}, "tensors": {...}}``."""
    p = Path(path).expanduser()
    obj = torch.load(p, map_location="cpu", weights_only=True)
    if not isinstance(obj, dict) or obj.get("format") != DELTA_FORMAT:
        raise InputError(f"{p} is not a napari-sam2 delta file (expected format {DELTA_FORMAT!r})")
    return obj


def apply_delta(
    base_state_dict: Mapping[str, torch.Tensor], delta: Mapping[str, Any] | str | os.PathLike
) -> dict[str, torch.Tensor]:
    """The full state dict: the base checkpoint with the delta's tensors put in."""
    d = load_delta(delta) if isinstance(delta, (str, os.PathLike)) else delta
    tensors = d["tensors"]
    unknown = sorted(set(tensors) - set(base_state_dict))
    if unknown:
        raise InputError(
            f"the delta holds {len(unknown)} tensors the base checkpoint lacks (e.g. {unknown[:3]}); "
            f"it was made from a '{d['base'].get('config')}' checkpoint"
        )
    out = dict(base_state_dict)
    out.update(tensors)
    return out


def card_markdown(card: Mapping[str, Any]) -> str:
    """The model card as Markdown, for people (the JSON is for programs)."""

    def fmt(v: Any) -> str:
        return f"{v:.4f}" if isinstance(v, float) else str(v)

    lines = [f"# Fine-tuned SAM 2 model: {card.get('config', '?')}", ""]
    base = card.get("base_checkpoint", {})
    lines += [f"- base checkpoint: {base.get('path', '(official)')} (sha256 {base.get('sha256', '?')})"]
    for key in (
        "trainable",
        "steps",
        "seconds",
        "device",
        "amp",
        "seed",
        "changed_tensors",
        "changed_parameters",
    ):
        if key in card:
            lines.append(f"- {key.replace('_', ' ')}: {fmt(card[key])}")
    data = card.get("data")
    if data:
        lines += ["", "## Data", ""]
        for s in data.get("stacks", []):
            lines.append(f"- {s['name']}: {s['shape']} frames, {s['labelled']} labelled")
        lines.append(
            f"- split: by {data.get('split')}, {data.get('train_frames')} training frames, "
            f"{data.get('val_frames')} validation frames"
        )
    val = card.get("validation")
    if val:
        lines += ["", "## Validation (mean IoU of one click at each object's centre, held-out frames)", ""]
        lines.append(f"- before: {fmt(card.get('val_iou_before'))}, after: {fmt(card.get('val_iou_after'))}")
        lines += ["", "| step | IoU |", "|---:|---:|"] + [f"| {s} | {fmt(v)} |" for s, v in val]
    if "settings" in card:
        lines += [
            "",
            "## Settings",
            "",
            "```json",
            json.dumps(card["settings"], indent=2, default=str),
            "```",
        ]
    return "\n".join(lines) + "\n"
