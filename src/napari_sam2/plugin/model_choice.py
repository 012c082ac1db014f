"""The annotator's model (no Qt): the variant, checkpoint, device, precision and compile
settings, or a predictor given from Python, and the engine's
:class:`~napari_sam2.engine.track.session.TrackingSession` that holds the loaded model."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

from napari_sam2.engine.track.session import ModelSpec, SessionError, TrackingSession
from napari_sam2.engine.weights.checkpoints import CheckpointStatus, checkpoint_status

from ..model.variants import VARIANTS, resolve_variant

__all__ = ["DEVICES", "ModelChoice"]

DEVICES = ("auto", "cpu", "cuda", "mps")


class ModelChoice:
    """The model the jobs run, and the session that holds it."""

    def __init__(self, store, events) -> None:
        self._store = store
        self._events = events
        self.session = TrackingSession()
        self._given = None  # a predictor given from Python, used instead of the settings

    def set_model(
        self,
        config_name: str | None = None,
        checkpoint: str | os.PathLike | None = None,
        device: str | None = None,
        precision: str | None = None,
        compile: bool | None = None,
    ) -> None:
        """See :meth:`Annotator.set_model <napari_sam2.plugin.annotator.Annotator.set_model>`."""
        spec = self._store.value.model
        if config_name is not None:
            try:
                spec = replace(spec, config_name=resolve_variant(config_name))
            except ValueError as e:
                raise SessionError(str(e)) from None
        if device is not None:
            if device not in DEVICES and not str(device).startswith("cuda:"):
                raise SessionError(f"unknown device {device!r}; choose one of {', '.join(DEVICES)}")
            spec = replace(spec, device=device)
        if checkpoint is not None:
            p = Path(checkpoint).expanduser()
            if not p.is_file():
                raise SessionError(f"the checkpoint file {p} does not exist")
            spec = replace(spec, checkpoint=str(p))
        if precision is not None:
            spec = replace(spec, precision=precision)
        if compile is not None:
            spec = replace(spec, compile=bool(compile))
        self._store.update(model=spec)
        self._events.checkpoint.emit(self.checkpoint_status())

    def use_predictor(self, predictor) -> None:
        """Use this predictor object (anything with the engine's video-predictor methods)."""
        self._given = predictor
        self.session.use_predictor(predictor)
        self._events.checkpoint.emit(self.checkpoint_status())

    def checkpoint_status(self) -> CheckpointStatus | None:
        """The checkpoint the model would load (None when a predictor was given)."""
        if self._given is not None:
            return None
        spec = self._store.value.model
        return checkpoint_status(spec.config_name, spec.checkpoint)

    @staticmethod
    def variants() -> tuple[str, ...]:
        return VARIANTS

    def spec_to_load(self) -> ModelSpec | None:
        """The model to load, after the one checkpoint check (None: a predictor was given)."""
        if self._given is not None:
            return None
        status = self.checkpoint_status()
        if not status.ok:
            hint = " With internet, click 'Download'." if status.state in ("missing", "wrong_size") else ""
            raise SessionError(status.message + hint)
        return self._store.value.model

    def reset(self) -> None:
        """Forget the engine's state; a given predictor stays in use."""
        self.session.close()
        if self._given is not None:
            self.session.use_predictor(self._given)
