"""Fine-tune SAM 2 from the viewer (no Qt): the part behind the widget's Train tab.

Pairs of an Image layer and the Labels layer of its corrected cells train the chosen model
variant, from the chosen checkpoint, with the engine's one call (:func:`~napari_sam2.engine.train.fine_tune`:
the model, then optionally an instance head on its features, as ``napari-sam2 train`` does).
It runs on the annotator's job runner, in a worker thread: the viewer stays responsive, and
the other jobs wait (they are refused as busy) until it ends.

- Every step is announced (``events.training``, a :class:`TrainProgress` with the loss, and the
  validation IoU every ``validate_every`` steps) and kept in :attr:`Training.curves`, from
  which the tab draws its plot.
- Cancel finishes the step, saves the resumable state beside the output and stops;
  ``train(resume=True)`` continues it to the weights an uninterrupted run would give.
- At the end the new checkpoint (and instance head) are used at once (``use_now``, on by
  default): the next preview, propagation or track-all runs them.
- Nothing is replaced silently: existing output files, and the saved state of a stopped run,
  are replaced only with ``overwrite=True`` (the tab asks first).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from napari_sam2.engine.track.session import SessionError, Status
from napari_sam2.engine.train.data import SPLITS
from napari_sam2.engine.train.trainer import TRAINABLE
from napari_sam2.errors import AlreadyExistsError

from .geometry import layer_data, layer_shape
from .jobs import in_thread
from .run_kinds import Run, RunContext, plural

__all__ = ["SPLITS", "TRAINABLE", "TrainCurves", "TrainProgress", "TrainSettings", "Training"]

HEAD_PHASE = "instance head"


@dataclass(frozen=True)
class TrainSettings:
    """The choices of the Train tab (the engine's defaults, as ``napari-sam2 train``)."""

    pairs: tuple[tuple[str, str], ...] = ()  # (Image layer, Labels layer) names
    output: str | None = None  # the checkpoint to write; delta, card and head go beside it
    steps: int = 1000
    trainable: str = "decoder"
    instance_head_steps: int = 0  # 0: no instance head
    split: str = "auto"
    val_fraction: float = 0.2
    block: int = 8
    validate_every: int = 100
    seed: int = 0
    use_now: bool = True  # use the trained model (and head) as soon as they are written


@dataclass(frozen=True)
class TrainProgress:
    """A job event: one step done. ``phase`` is ``"model"`` or ``"instance head"``; ``before``
    (first event of a run only) holds the curves' earlier points (see :class:`TrainCurves`)."""

    phase: str
    step: int
    steps: int
    loss: float
    val_iou: float | None = None
    before: Mapping[str, Any] | None = None

    @classmethod
    def of(cls, info: Mapping[str, Any]) -> TrainProgress:
        """From an engine progress dict (trainer or instance head)."""
        return cls(
            info.get("phase", "model"),
            int(info["step"]),
            int(info["steps"]),
            float(info["loss"]),
            info.get("val_iou"),
            info.get("before"),
        )


@dataclass
class TrainCurves:
    """The points of the last run's curves: ``(step, value)`` lists."""

    loss: list[tuple[int, float]] = field(default_factory=list)
    val_iou: list[tuple[int, float]] = field(default_factory=list)
    head_loss: list[tuple[int, float]] = field(default_factory=list)
    steps: int = 0  # the model's steps to train (the x range)

    def add(self, event: TrainProgress) -> None:
        if event.phase == HEAD_PHASE:
            self.head_loss.append((event.step, event.loss))
            return
        if event.before is not None:  # a run's first step: the validation before, a resumed run's past
            self.loss = [(int(s), float(v)) for s, v in event.before.get("loss", ())]
            self.val_iou = [(int(s), float(v)) for s, v in event.before.get("val_iou", ()) if v is not None]
        self.steps = event.steps
        self.loss.append((event.step, event.loss))
        if event.val_iou is not None:
            self.val_iou.append((event.step, float(event.val_iou)))


@dataclass(frozen=True)
class _Pair:
    """One training stack, read on the GUI thread: the image's data and a copy of the labels."""

    name: str
    image: Any
    labels: np.ndarray
    channel_axis: int | None
    channels: tuple[int, ...] | None
    labelled: int  # frames with at least one label


def _model(spec) -> Any:
    """The model to train; None lets fine_tune build the variant (tests return a small one)."""
    return None


class Training:
    """The Train part of the :class:`~napari_sam2.plugin.annotator.Annotator` (see the module doc).

    ``set_model(config_name, checkpoint)`` and ``set_cells(**changes)`` are the annotator's
    (the trained model and head are chosen through them)."""

    def __init__(
        self,
        viewer,
        store,
        status,
        events,
        model,
        runs,
        image,
        set_cells: Callable[..., None],
    ) -> None:
        self.viewer = viewer
        self._store, self._status, self._events = store, status, events
        self._model, self._runs, self._image, self._set_cells = model, runs, image, set_cells
        self.curves = TrainCurves()
        #: the last finished run's summary (steps, scores, ``files``), None before one
        self.result: dict[str, Any] | None = None

    # ---- settings
    @property
    def settings(self) -> TrainSettings:
        return self._store.value.training

    def set_training(self, **changes: Any) -> None:
        """Change the Train settings (the fields of :class:`TrainSettings`); bad values are
        refused with a SessionError naming them."""
        unknown = set(changes) - set(TrainSettings.__dataclass_fields__)
        if unknown:
            raise SessionError(f"unknown training setting(s) {sorted(unknown)}")
        if "pairs" in changes:
            changes["pairs"] = tuple((_name(i), _name(lab)) for i, lab in changes["pairs"])
        if changes.get("output") is not None:
            changes["output"] = str(changes["output"])
        new = replace(self.settings, **changes)
        for name in ("steps", "block", "validate_every"):
            if int(getattr(new, name)) < 1:
                raise SessionError(f"{name} must be 1 or more, got {getattr(new, name)}")
        if new.instance_head_steps < 0:
            raise SessionError(
                f"instance_head_steps must be 0 (no head) or more, got {new.instance_head_steps}"
            )
        if new.trainable not in TRAINABLE:
            raise SessionError(f"trainable={new.trainable!r}: choose one of {', '.join(TRAINABLE)}")
        if new.split not in SPLITS:
            raise SessionError(f"split={new.split!r}: choose one of {', '.join(SPLITS)}")
        if not 0.0 <= new.val_fraction < 1.0:
            raise SessionError(f"val_fraction must be at least 0 and below 1, got {new.val_fraction}")
        self._store.update(training=new)

    def add_pair(self, image, labels) -> None:
        """Train on ``image`` (an Image layer or its name) with ``labels`` (its Labels layer)."""
        pair = (_name(image), _name(labels))
        if pair not in self.settings.pairs:
            self.set_training(pairs=(*self.settings.pairs, pair))

    def remove_pair(self, index: int) -> None:
        pairs = list(self.settings.pairs)
        del pairs[index]
        self.set_training(pairs=tuple(pairs))

    # ---- what a run would replace
    def output_files(self, output: str | None = None) -> list[Path]:
        """The files of ``output`` (default: the setting) that exist: a run replaces them only
        with ``overwrite=True``."""
        from napari_sam2.engine.train.export import output_paths
        from napari_sam2.engine.train.run import instance_head_path

        output = output or self.settings.output
        if not output:
            return []
        paths = list(output_paths(output).values())
        if self.settings.instance_head_steps:
            paths.append(instance_head_path(output))
        return [p for p in paths if p.exists()]

    def saved_state(self, output: str | None = None) -> Path | None:
        """The saved state of a stopped run with ``output`` (it resumes), or None."""
        from napari_sam2.engine.train.run import STATE_FILE, state_dir_for

        output = output or self.settings.output
        state = state_dir_for(output) / STATE_FILE if output else None
        return state if state is not None and state.exists() else None

    # ---- the run
    def train(self, resume: bool = False, overwrite: bool = False, synchronous: bool | None = None) -> bool:
        """Train on the chosen pairs and write the output; False when refused (the status line
        and :attr:`Annotator.last_error` say why). ``resume``: continue the stopped run of this
        output; ``overwrite``: replace its existing files and, without ``resume``, discard a
        stopped run's saved state."""
        if self._runs.refused_busy():
            return False
        try:
            pairs, spec, out = self._check(resume, overwrite)
        except Exception as e:  # noqa: BLE001 - refused with its message
            self._status.refuse(e)
            return False
        s = self.settings
        run = TrainRun(RunContext(), self._runs.parts, self, spec.config_name)
        cancel = self._runs.runner.cancel_event
        job = _train_job(run, pairs, s, spec, out, resume, overwrite, cancel)
        frames = sum(p.labelled for p in pairs)
        self.curves = TrainCurves(steps=s.steps)
        self._status.say(
            f"Training {spec.config_name} on {plural(len(pairs), 'stack')} ({plural(frames, 'labelled frame')}) "
            f"for {plural(s.steps, 'step')}{', resumed' if resume else ''}…"
        )
        self._runs.start(run, job, synchronous, f"SAM 2: training {spec.config_name}")
        return True

    def _check(self, resume: bool, overwrite: bool) -> tuple[list[_Pair], Any, Path]:
        """Everything a run needs, checked on the GUI thread before anything starts."""
        from napari_sam2.engine.weights.checkpoints import checkpoint_status

        s = self.settings
        if not s.pairs:
            raise SessionError(
                "choose an image layer and the Labels layer of its corrected cells (Add pair) first"
            )
        pairs = [self._pair(image, labels) for image, labels in s.pairs]
        if not s.output:
            raise SessionError("choose where to save the trained model (Output, a .pt file)")
        spec = self._store.value.model
        status = checkpoint_status(spec.config_name, spec.checkpoint)
        if not status.ok:  # training starts from this checkpoint: no silent download in a worker
            hint = " Click 'Download' in the Model box." if status.state in ("missing", "wrong_size") else ""
            raise SessionError(status.message + hint)
        out = Path(s.output).expanduser()
        taken = self.output_files(str(out))
        if taken and not overwrite:
            raise AlreadyExistsError(
                f"{', '.join(str(p) for p in taken)} already exist{'s' if len(taken) == 1 else ''}: choose "
                "another output, or replace them (train(overwrite=True); the Train tab asks)"
            )
        state = self.saved_state(str(out))
        if resume and state is None:
            raise SessionError(f"there is no stopped run of {out.name} to resume; start without resume")
        if state is not None and not resume and not overwrite:
            raise AlreadyExistsError(
                f"a stopped run of {out.name} saved its state in {state.parent}: resume it "
                "(train(resume=True)), or start afresh with overwrite=True (its state is then discarded)"
            )
        return pairs, spec, out

    def _pair(self, image_name: str, labels_name: str) -> _Pair:
        from napari.layers import Image, Labels

        layers = self.viewer.layers
        for name, kind, what in ((image_name, Image, "an Image"), (labels_name, Labels, "a Labels")):
            if name not in layers:
                raise SessionError(f"there is no layer named {name!r} in the viewer (renamed or deleted?)")
            if not isinstance(layers[name], kind):
                raise SessionError(f"{name!r} is not {what} layer; choose {what} layer")
        image, labels = layers[image_name], layers[labels_name]
        shape = list(layer_shape(image))
        channel_axis, channels = None, None
        settings = self._store.value
        if image is self._image.layer and settings.channel_axis is not None:  # as the annotator sees it
            channel_axis, channels = settings.channel_axis, settings.channels
            del shape[channel_axis]
        elif image is self._image.layer:
            channels = settings.channels
        if len(shape) not in (2, 3):
            raise SessionError(
                f"{image_name!r} has shape {tuple(shape)}: training takes a time-lapse (T, Y, X) or one 2D "
                "image (with an RGB or channel axis set in the Image box)"
            )
        data = np.array(layer_data(labels))  # a copy: painting on while it trains changes nothing
        if tuple(data.shape) != tuple(shape):
            raise SessionError(
                f"the labels {labels_name!r} have shape {tuple(data.shape)} but the image {image_name!r} is "
                f"{tuple(shape)}: choose the Labels layer drawn on exactly this image"
            )
        flat = data.reshape((-1,) + data.shape[-2:])
        labelled = int(sum(bool(frame.any()) for frame in flat))
        if not labelled:
            raise SessionError(
                f"the Labels layer {labels_name!r} is empty: draw or correct some cells first (only frames "
                "with labels are trained on)"
            )
        pixels = layer_data(image)
        if len(shape) == 2:  # one 2D image: a stack of one frame (its channels, if any, move along)
            pixels, data = np.asarray(pixels)[None], data[None]
            channel_axis = None if channel_axis is None else channel_axis + 1
        return _Pair(image_name, pixels, data, channel_axis, channels, labelled)

    def record(self, event: TrainProgress) -> None:
        """A step of the running job (GUI thread): the curves, the status line, the announcement."""
        self.curves.add(event)
        if event.phase == HEAD_PHASE:
            text = f"Training the instance head: step {event.step} / {event.steps}, loss {event.loss:.3f}"
        else:
            val = f", validation IoU {event.val_iou:.3f}" if event.val_iou is not None else ""
            text = f"Training: step {event.step} / {event.steps}, loss {event.loss:.3f}{val}"
        self._status.say(text)
        self._events.training.emit(event)

    def finished(self, run: TrainRun) -> None:
        """After a run that wrote its checkpoint: keep its summary, use it now if asked, say so."""
        summary = run.summary or {}
        files = summary.get("files") or {}
        self.result = summary
        if "checkpoint" not in files:
            return
        before, after = summary.get("val_iou_before"), summary.get("val_iou_after")
        text = f"Trained {plural(summary['steps'], 'step')} in {_duration(summary.get('seconds', 0))}"
        if before is not None and after is not None:
            text += f": validation IoU {before:.3f} → {after:.3f}"
        text += f". Wrote {files['checkpoint'].name} (with its delta and model card)"
        head = files.get("instance_head")
        if head is not None:
            f1 = (summary.get("instance_head") or {}).get("val_f1")
            text += f" and {head.name}" + (f" (held-out F1 {f1:.3f})" if f1 is not None else "")
        elif summary.get("instance_head_stopped"):
            text += "; the instance head was cancelled (none written)"
        if self.settings.use_now:
            self._model.set_model(config_name=run.config_name, checkpoint=files["checkpoint"])
            if head is not None:
                self._set_cells(instance_head=str(head))
            text += ". Now in use: tracking runs the new model" + (
                ", All cells its instance head." if head is not None else "."
            )
        else:
            text += ". Load it in the Model box (Browse) to use it."
        self._status.say(text)


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


def _name(layer) -> str:
    return layer if isinstance(layer, str) else layer.name


def _train_job(
    run: TrainRun, pairs: list[_Pair], s: TrainSettings, spec, out: Path, resume, overwrite, cancel
):
    from napari_sam2.engine.train import TrainConfig, fine_tune, labeled_stack
    from napari_sam2.engine.train.instance_head import HeadTrainConfig
    from napari_sam2.engine.train.run import state_dir_for

    yield Status("Reading the labelled frames…")
    # with the channels the model sees when tracking (as the CLI's --channels)
    stacks = [
        labeled_stack(p.image, p.labels, name=p.name, channel_axis=p.channel_axis, channels=p.channels)
        for p in pairs
    ]
    config = TrainConfig(
        steps=s.steps,
        trainable=s.trainable,
        validate_every=s.validate_every,
        seed=s.seed,
        amp="bfloat16" if spec.precision == "bf16" else None,
    )
    head = HeadTrainConfig(steps=s.instance_head_steps, seed=s.seed) if s.instance_head_steps else None
    if overwrite and not resume and state_dir_for(out).exists():  # the user chose to start afresh
        shutil.rmtree(state_dir_for(out))
    yield Status(f"Loading {spec.config_name} to train it…")

    def work(emit):
        return fine_tune(
            stacks,
            out,
            config_name=spec.config_name,
            checkpoint=spec.checkpoint,
            device=spec.device,
            config=config,
            split=s.split,
            val_fraction=s.val_fraction,
            block=s.block,
            resume=resume,
            overwrite=overwrite,
            download=False,
            model=_model(spec),
            progress=lambda info: emit(TrainProgress.of(info)),
            should_stop=cancel.is_set,
            instance_head=head,
        )

    summary = yield from in_thread(work, "napari-sam2 train", cancel.set)
    for key in ("model", "train", "val"):  # the trained model is not kept: the checkpoint is
        summary.pop(key, None)
    run.summary = summary
    return "cancelled" if summary["stopped"] else "done"


class TrainRun(Run):
    """The training job's events (steps) and endings."""

    kind = "train"
    progress = True
    summary = None  # fine_tune's summary, set by the job (None: it did not end)

    def __init__(self, ctx: RunContext, parts, training: Training, config_name: str) -> None:
        super().__init__(ctx, parts)
        self.training = training
        self.config_name = config_name
        self._head_steps = training.settings.instance_head_steps

    def on_event(self, event: Any) -> None:
        if not isinstance(event, TrainProgress):
            super().on_event(event)
            return
        pbar = self.ctx.pbar
        if pbar is not None:  # one bar over the model's steps, then the head's
            model_steps = event.steps if event.phase != HEAD_PHASE else self.training.curves.steps
            self.set_total(model_steps + self._head_steps)
            done = event.step + (model_steps if event.phase == HEAD_PHASE else 0)
            if done > pbar.n:
                pbar.update(done - pbar.n)
        self.training.record(event)

    def cancelled(self) -> None:
        summary = self.summary or {}
        state = summary.get("state")
        where = f"; its state is saved in {Path(state).parent}" if state else ""
        self.parts.status.say(
            f"Training stopped after {plural(summary.get('steps', 0), 'step')}{where}. Start again and "
            "choose Resume to continue (train(resume=True))."
        )

    def done(self, outcome: str) -> None:
        self.training.finished(self)
