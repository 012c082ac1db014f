"""Fine-tune SAM 2 on labelled frames with prompts sampled as Meta trained it.

One step: a labelled frame is drawn, up to ``objects_per_step`` of its objects, a first
prompt (a noisy box or one click, one choice for the whole step) and then
``correction_clicks`` clicks drawn from the model's own errors, each decoder pass fed the
previous pass's logits (see :mod:`.prompts`); the losses of all passes are summed
(:mod:`.losses`) and AdamW takes one step (weight decay 0.1 except biases and norms,
gradient norm clipped to 0.1, learning rate on a cosine from ``lr`` to ``lr / 10``: the
SAM 2.1 fine-tuning config).

What trains (``TrainConfig.trainable``): ``"decoder"`` (default) the mask decoder and the
prompt encoder, the image encoder frozen and each frame encoded once; ``"lora"`` that plus
low-rank adapters on the encoder's attention (:mod:`.lora`); ``"memory"`` that plus the memory
modules, on clips of ``clip_length`` consecutive training frames: the first prompted (a click,
a box or its mask), the others tracked from memory, losses on every frame. ``amp`` runs the
passes in bfloat16 or float16 (with loss scaling) autocast; the weights stay float32.

Determinism: every step draws its randomness from ``numpy.random.default_rng([seed, step])``
and the learning rate is a function of the step, so a run resumed from a saved state
repeats exactly what the uninterrupted run would have done.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from napari_sam2.engine.train.data import FrameRef, LabeledStack, split_frames
from napari_sam2.engine.train.features import FrameStore, image_embedding
from napari_sam2.engine.train.lora import LoRALinear, add_lora
from napari_sam2.engine.train.losses import LossWeights, step_losses, total_loss, true_iou
from napari_sam2.engine.train.prompts import (
    PromptConfig,
    centre_click,
    correction_click,
    noisy_box,
    uniform_point,
)
from napari_sam2.errors import InputError
from napari_sam2.model import SAM2Model

#: what can be trained; "lora" trains the "decoder" set plus low-rank adapters on the encoder,
#: "memory" the "decoder" set plus the memory modules, on short clips (video)
TRAINABLE = ("decoder", "lora", "memory")
#: the parameters of tracking with memory: the memory attention and encoder, the temporal
#: encodings, the object pointer's projections and the no-object embeddings
MEMORY_PREFIXES = (
    "memory_attention.",
    "memory_encoder.",
    "maskmem_tpos_enc",
    "obj_ptr_proj.",
    "obj_ptr_tpos_proj.",
    "no_obj_ptr",
    "no_obj_embed_spatial",
    "mask_downsample.",
)
_AMP = {None: None, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class TrainConfig:
    steps: int = 1000
    lr: float = 1e-4
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.1
    grad_clip: float | None = 0.1
    objects_per_step: int = 4
    trainable: str = "decoder"
    lora_rank: int = 4
    clip_length: int = 3  # trainable="memory": frames per clip (the first prompted, the rest tracked)
    clip_prob_mask: float = 0.5  # trainable="memory": share of clips prompted with the mask itself
    amp: str | None = None  # "bfloat16" or "float16" (mixed precision), None for float32
    loss_resolution: str = (
        "high"  # "high": on the image_size grid as Meta; "low": the 256 logits (4x cheaper)
    )
    checkpoint_every: int = 100
    validate_every: int = 100
    max_val_objects: int = 32
    seed: int = 0
    prompts: PromptConfig = field(default_factory=PromptConfig)
    weights: LossWeights = field(default_factory=LossWeights)

    def __post_init__(self) -> None:
        if self.trainable not in TRAINABLE:
            raise InputError(
                f"trainable={self.trainable!r}: choose 'decoder' (mask decoder + prompt encoder, the default) "
                "'lora' (that plus low-rank adapters on the image encoder) or 'memory' (that plus the "
                "memory modules, trained on clips of consecutive labelled frames)"
            )
        if self.amp not in _AMP:
            raise InputError(f"amp={self.amp!r}: use None, 'bfloat16' or 'float16'")
        if self.loss_resolution not in ("high", "low"):
            raise InputError(f"loss_resolution={self.loss_resolution!r}: use 'high' or 'low'")
        for name in ("steps", "objects_per_step", "checkpoint_every", "validate_every", "max_val_objects"):
            if getattr(self, name) < 1:
                raise InputError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise InputError(f"lr must be > 0, got {self.lr}")


def select_trainable(model: SAM2Model, trainable: str, lora_rank: int = 4) -> list[str]:
    """Freeze everything, then unfreeze the chosen part; returns the trained parameters' names."""
    for p in model.parameters():
        p.requires_grad_(False)
    if trainable == "lora" and not any(isinstance(m, LoRALinear) for m in model.modules()):
        add_lora(model.image_encoder, lora_rank)
    names = []
    for name, p in model.named_parameters():
        decoder = name.startswith("sam_prompt_encoder.") or (
            name.startswith("sam_mask_decoder.")
            and not name.startswith(("sam_mask_decoder.conv_s0", "sam_mask_decoder.conv_s1"))
        )
        if (
            decoder
            or (trainable == "lora" and ".lora_" in name)
            or (trainable == "memory" and name.startswith(MEMORY_PREFIXES))
        ):
            p.requires_grad_(True)
            names.append(name)
    return names


def _param_groups(model: SAM2Model, names: Sequence[str], weight_decay: float) -> list[dict]:
    """Meta's rule: no weight decay on biases and LayerNorm parameters."""
    params = dict(model.named_parameters())
    no_decay_modules = {n for n, m in model.named_modules() if isinstance(m, torch.nn.LayerNorm)}
    decay, no_decay = [], []
    for n in names:
        owner = n.rsplit(".", 1)[0]
        (no_decay if n.endswith("bias") or owner in no_decay_modules else decay).append(params[n])
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


@dataclass
class Batch:
    """What one step trains on: a frame, its chosen objects' masks and first prompts."""

    ref: FrameRef
    ids: np.ndarray  # (N,) label ids
    gt: np.ndarray  # (N, S, S) bool masks on the model grid
    points: np.ndarray  # (N, P, 2) float32 (x, y) on the model grid
    labels: np.ndarray  # (N, P) int32
    rng: np.random.Generator  # continues the step's draws (correction clicks)


@dataclass
class StepRecord:
    step: int
    loss: float
    parts: dict[str, float]
    lr: float


class Trainer:
    """Trains ``model`` in place (build a fresh one for it); see the module doc."""

    def __init__(
        self,
        model: SAM2Model,
        stacks: Sequence[LabeledStack],
        config: TrainConfig | None = None,
        *,
        train: Sequence[FrameRef] | None = None,
        val: Sequence[FrameRef] | None = None,
        state_dir: str | os.PathLike | None = None,
    ) -> None:
        self.model = model.eval()  # no dropout or batch statistics in the heads; eval keeps steps repeatable
        self.config = config or TrainConfig()
        self.stacks = list(stacks)
        if train is None:
            train, val = split_frames(self.stacks, seed=self.config.seed)
        self.train_refs, self.val_refs = list(train), list(val or [])
        if not self.train_refs:
            raise InputError("no training frames: label some cells on at least one frame")
        self.trainable = select_trainable(model, self.config.trainable, self.config.lora_rank)
        self.store = FrameStore(model, self.stacks, cache_features=self.config.trainable != "lora")
        self.clips = self._clips() if self.config.trainable == "memory" else []
        self.optimizer = torch.optim.AdamW(
            _param_groups(model, self.trainable, self.config.weight_decay), lr=self.config.lr, foreach=True
        )
        self.state_dir = Path(state_dir) if state_dir is not None else None
        self.step_count = 0
        self.history: list[StepRecord] = []
        self.validation: list[tuple[int, float]] = []
        self.decoder_passes = 0
        # float16 gradients underflow without loss scaling (bfloat16 has float32's range: none needed)
        self.scaler = torch.amp.GradScaler(model.device.type) if self.config.amp == "float16" else None

    # ------------------------------------------------------------------ pieces
    def lr_at(self, step: int) -> float:
        c = self.config
        frac = min(step / max(c.steps, 1), 1.0)
        return c.lr * (c.min_lr_ratio + (1 - c.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * frac)))

    def _autocast(self):
        dtype = _AMP[self.config.amp]
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.model.device.type, dtype=dtype)

    def _heads(self, feats, coords, labels, mask_inputs, multimask):
        n = coords.shape[0]
        emb = image_embedding(self.model, feats).expand(n, -1, -1, -1)
        hr = [h.expand(n, -1, -1, -1) for h in feats.high_res]
        self.decoder_passes += 1
        with self._autocast():
            return self.model.sam_heads(
                emb, hr, coords, labels, mask_inputs=mask_inputs, multimask_output=multimask
            )

    # ------------------------------------------------------------------ clips (memory)
    def _clips(self) -> list[tuple[FrameRef, ...]]:
        """Runs of ``clip_length`` training frames of one stack, each at most 2 frames from the
        previous (a gap of one unlabelled frame is fine: tracking skips nothing but time)."""
        k = self.config.clip_length
        refs = sorted(self.train_refs, key=lambda r: (r.stack, r.t))
        clips = []
        for i in range(len(refs) - k + 1):
            run = refs[i : i + k]
            if all(b.stack == a.stack and 0 < b.t - a.t <= 2 for a, b in zip(run, run[1:])):
                clips.append(tuple(run))
        if not clips:
            raise InputError(
                f"trainable='memory' trains on clips of {k} consecutive labelled frames, and the training "
                "frames hold none: label consecutive frames of a movie, or lower clip_length"
            )
        return clips

    def _clip_step(self, step: int) -> StepRecord:
        """One clip: the first frame prompted (a click, a box or the mask), the others tracked
        from memory without prompts, as SAM 2's video training; losses on every frame."""
        from napari_sam2.model.memory_selection import MemoryEntry

        c, m, dev = self.config, self.model, self.model.device
        rng = np.random.default_rng([c.seed, step])
        clip = self.clips[int(rng.integers(len(self.clips)))]
        grids = [self.store.grid(r) for r in clip]
        ids = np.unique(grids[0])
        ids = ids[ids != 0]
        ids = np.sort(rng.choice(ids, min(c.objects_per_step, len(ids)), replace=False))
        n, k_len = len(ids), len(clip)
        for g in self.optimizer.param_groups:
            g["lr"] = self.lr_at(step)
        parts: dict[str, torch.Tensor] = {}
        cond: list[MemoryEntry] = []
        tracked: list[dict[int, MemoryEntry]] = [{} for _ in range(n)]
        with self._autocast():
            for k, ref in enumerate(clip):
                gt = grids[k][None] == ids[:, None, None]
                feats = self.store.features(ref, _AMP[c.amp])
                if k == 0:
                    coords = labels = mask_inputs = None
                    if rng.random() < c.clip_prob_mask:
                        mask_inputs = torch.from_numpy(gt[:, None]).to(dev, torch.float32)
                    elif rng.random() < c.prompts.prob_box:
                        coords = np.stack([noisy_box(g, rng, c.prompts) for g in gt])
                        labels = np.tile(np.array([[2, 3]], dtype=np.int32), (n, 1))
                    else:
                        coords = np.stack([uniform_point(g, rng)[None] for g in gt])
                        labels = np.ones((n, 1), dtype=np.int32)
                    if coords is not None:
                        coords, labels = torch.from_numpy(coords).to(dev), torch.from_numpy(labels).to(dev)
                    out, mem = m.track_step(
                        0, True, feats, coords, labels, mask_inputs, {}, {}, k_len, batch_size=n
                    )
                    cond = [MemoryEntry(mem[i : i + 1], out.obj_ptr[i : i + 1]) for i in range(n)]
                else:
                    selections = [
                        m.select_memories(k, {0: cond[i]}, tracked[i], k_len, False) for i in range(n)
                    ]
                    out, mem = m.track_selected(feats, selections, k_len)
                    for i in range(n):
                        tracked[i][k] = MemoryEntry(mem[i : i + 1], out.obj_ptr[i : i + 1])
                self.decoder_passes += 1
                logits = out.low_res_multimasks
                if c.loss_resolution == "high":
                    size = (m.image_size, m.image_size)
                    logits = torch.nn.functional.interpolate(
                        logits, size=size, mode="bilinear", align_corners=False
                    )
                losses = step_losses(logits, out.ious, out.object_score_logits, self._target(gt), c.weights)
                for key, v in losses.items():
                    parts[key] = parts.get(key, 0) + v / n
        return self._optimise(step, parts)

    def _target(self, gt: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(gt[:, None]).to(self.model.device, torch.float32)
        if self.config.loss_resolution == "low":
            s = self.model.sam_prompt_encoder.mask_input_size
            t = torch.nn.functional.interpolate(t, size=s, mode="nearest")
        return t

    # ------------------------------------------------------------------ training
    def sample_batch(self, step: int | None = None) -> Batch:
        """The frame, objects and first prompts of step ``step`` (the next step by default)."""
        c = self.config
        step = self.step_count if step is None else step
        rng = np.random.default_rng([c.seed, step])
        ref = self.train_refs[int(rng.integers(len(self.train_refs)))]
        grid = self.store.grid(ref)
        ids = np.unique(grid)
        ids = ids[ids != 0]
        ids = np.sort(rng.choice(ids, min(c.objects_per_step, len(ids)), replace=False))
        gt = grid[None] == ids[:, None, None]
        # one prompt kind per step for all objects of the frame, as Meta draws it per frame
        if rng.random() < c.prompts.prob_box:
            pts = np.stack([noisy_box(g, rng, c.prompts) for g in gt])
            lbls = np.tile(np.array([[2, 3]], dtype=np.int32), (len(ids), 1))
        else:
            pts = np.stack([uniform_point(g, rng)[None] for g in gt])
            lbls = np.ones((len(ids), 1), dtype=np.int32)
        return Batch(ref, ids, gt, pts, lbls, rng)

    def train_step(self, batch: Batch | None = None) -> StepRecord:
        """One optimisation step on ``batch`` (drawn for this step if None; a fixed batch is
        for overfitting checks, its correction clicks still drawn from its own generator)."""
        c, m, dev = self.config, self.model, self.model.device
        step = self.step_count
        if c.trainable == "memory" and batch is None:
            return self._clip_step(step)
        if batch is None:
            batch = self.sample_batch(step)
        ref, gt, rng, n = batch.ref, batch.gt, batch.rng, len(batch.ids)
        coords = torch.from_numpy(batch.points).to(dev)
        labels = torch.from_numpy(batch.labels).to(dev)
        target = self._target(gt)
        for g in self.optimizer.param_groups:
            g["lr"] = self.lr_at(step)
        feats = self.store.features(ref, _AMP[c.amp])
        parts: dict[str, torch.Tensor] = {}
        mask_inputs = None
        out = None
        for _ in range(1 + c.prompts.correction_clicks):
            if out is not None:  # a correction click from the previous pass's errors, as Meta trains
                from_gt = rng.random() < c.prompts.prob_correct_from_gt
                pred = (out.high_res_masks[:, 0] > 0).cpu().numpy()
                new = [correction_click(g, None if from_gt else p, rng) for g, p in zip(gt, pred)]
                xy = torch.from_numpy(np.stack([xy for xy, _ in new])[:, None].astype(np.float32)).to(dev)
                lab = torch.tensor([[lab] for _, lab in new], dtype=torch.int32, device=dev)
                coords, labels = torch.cat([coords, xy], 1), torch.cat([labels, lab], 1)
                mask_inputs = out.low_res_masks
            multimask = m.use_multimask(True, coords.shape[1])
            out = self._heads(feats, coords, labels, mask_inputs, multimask)
            logits = out.low_res_multimasks
            if c.loss_resolution == "high":  # Meta's losses are on the upsampled (image_size) logits
                size = (m.image_size, m.image_size)
                logits = torch.nn.functional.interpolate(
                    logits, size=size, mode="bilinear", align_corners=False
                )
            for key, v in step_losses(logits, out.ious, out.object_score_logits, target, c.weights).items():
                parts[key] = parts.get(key, 0) + v / n
        return self._optimise(step, parts)

    def _optimise(self, step: int, parts: dict[str, torch.Tensor]) -> StepRecord:
        c, m = self.config, self.model
        loss = total_loss(parts, c.weights)
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)  # clip the true gradients
        else:
            loss.backward()
        if c.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_([p for p in m.parameters() if p.requires_grad], c.grad_clip)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.step_count += 1
        rec = StepRecord(
            step, float(loss.detach()), {k: float(v.detach()) for k, v in parts.items()}, self.lr_at(step)
        )
        self.history.append(rec)
        return rec

    @torch.no_grad()
    def evaluate(self, refs: Sequence[FrameRef] | None = None) -> float | None:
        """Mean IoU over objects of one click at each object's centre (the best of the multimask
        output by predicted IoU, as the predictors choose), on the model's grid; None without frames."""
        refs = self.val_refs if refs is None else refs
        ious = []
        for ref in refs:
            grid = self.store.grid(ref)
            ids = np.unique(grid)
            ids = ids[ids != 0][: self.config.max_val_objects]
            if not len(ids):
                continue
            gt = grid[None] == ids[:, None, None]
            coords = torch.from_numpy(np.stack([centre_click(g) for g in gt])[:, None]).to(self.model.device)
            labels = torch.ones(len(ids), 1, dtype=torch.int32, device=self.model.device)
            feats = self.store.features(ref, _AMP[self.config.amp])
            out = self._heads(feats, coords, labels, None, self.model.use_multimask(True, 1))
            target = torch.from_numpy(gt[:, None]).to(self.model.device)
            ious.extend(true_iou(out.high_res_masks.float(), target.float())[:, 0].tolist())
        return float(np.mean(ious)) if ious else None

    def run(
        self,
        progress: Callable[[dict[str, Any]], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> dict[str, Any]:
        """Train up to ``config.steps`` (from where a loaded state left off); returns a summary.

        ``progress`` gets ``{"step", "steps", "loss", "val_iou"?}`` after each step, the first
        call also ``"before"``: ``{"loss": [(step, loss)...], "val_iou": [(step, iou)...]}`` of
        the steps done before this run (a resumed run's) and the validation before training, so
        that live curves start complete; ``should_stop`` is asked before each step: a stop saves
        the state (when a ``state_dir`` is set) so that :meth:`load_state` resumes it.
        """
        c = self.config
        if self.val_refs and not self.validation:
            self.validation.append((self.step_count, self.evaluate()))
        before: dict[str, Any] | None = {
            "loss": [(r.step + 1, r.loss) for r in self.history],
            "val_iou": list(self.validation),
        }
        stopped = False
        while self.step_count < c.steps:
            if should_stop is not None and should_stop():
                stopped = True
                break
            rec = self.train_step()
            info: dict[str, Any] = {"step": self.step_count, "steps": c.steps, "loss": rec.loss}
            if before is not None:
                info["before"], before = before, None
            if self.val_refs and (self.step_count % c.validate_every == 0 or self.step_count == c.steps):
                self.validation.append((self.step_count, self.evaluate()))
                info["val_iou"] = self.validation[-1][1]
            if self.state_dir is not None and self.step_count % c.checkpoint_every == 0:
                self.save_state(self.state_dir / "train_state.pt")
            if progress is not None:
                progress(info)
        if stopped and self.state_dir is not None:
            self.save_state(self.state_dir / "train_state.pt")
        return self.summary(stopped)

    def summary(self, stopped: bool = False) -> dict[str, Any]:
        return {
            "steps": self.step_count,
            "stopped": stopped,
            "first_loss": self.history[0].loss if self.history else None,
            "last_loss": self.history[-1].loss if self.history else None,
            "val_iou_before": self.validation[0][1] if self.validation else None,
            "val_iou_after": self.validation[-1][1] if self.validation else None,
            "validation": list(self.validation),
        }

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        params = dict(self.model.named_parameters())
        return {
            "step": self.step_count,
            "trainable": {n: params[n].detach().cpu().clone() for n in self.trainable},
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "config": asdict(self.config),
            "history": [asdict(r) for r in self.history],
            "validation": list(self.validation),
            "train": [(r.stack, r.t) for r in self.train_refs],
            "val": [(r.stack, r.t) for r in self.val_refs],
        }

    def save_state(self, path: str | os.PathLike) -> Path:
        """Write the resumable state atomically (a crash mid-write leaves the previous one)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        torch.save(self.state_dict(), tmp)
        tmp.replace(path)
        return path

    def load_state(self, path: str | os.PathLike) -> None:
        """Resume: trained tensors, optimizer moments, step, history; the split must be the same."""
        state = torch.load(Path(path), map_location="cpu", weights_only=False)
        if sorted(state["trainable"]) != sorted(self.trainable):
            raise InputError(
                f"{path} trained other parameters ({state['config'].get('trainable')!r}) than this run "
                f"({self.config.trainable!r}); resume with the same settings"
            )
        if state["train"] != [(r.stack, r.t) for r in self.train_refs]:
            raise InputError(
                f"{path} was trained on other frames than this run; resume with the same data and seed"
            )
        params = dict(self.model.named_parameters())
        with torch.no_grad():
            for n, v in state["trainable"].items():
                params[n].copy_(v)
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.step_count = int(state["step"])
        self.history = [StepRecord(**r) for r in state["history"]]
        self.validation = [tuple(v) for v in state["validation"]]
