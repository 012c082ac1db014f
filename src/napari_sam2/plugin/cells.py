"""Track all cells (no Qt): segment everything on a frame -> review the seeds -> track every
cell with divisions -> the lineage, as layers and files.

1. :meth:`CellsWorkflow.segment_everything` runs SAM 2's automatic mask generator on the current
   frame (tiled for large fields of view), keeps one object per mask after the user's filters
   (:class:`~napari_sam2.engine.cells.seeding.SeedFilter`), and writes the seeds into a Labels layer
   ``SAM2 seeds [image]``: the user deletes, merges or paints them there with napari's tools.
   Running it again on a frame whose seeds the user edited is refused unless asked
   (``replace_edited=True``; the widget asks); the new seeds are one undo step.
2. :meth:`CellsWorkflow.track_all_cells` starts a :class:`~napari_sam2.engine.cells.track_all.TrackAllRun`
   from the seeds on that frame: all objects propagated together, new cells found by
   re-seeding every N frames, lost cells ended, divisions recorded. Final frames are written
   into ``SAM2 tracks [image]`` (a user's edits of it are kept, as in every output layer).
3. At the end the track graph becomes a napari Tracks layer ``SAM2 lineage [image]`` (with the
   division graph), and :meth:`CellsWorkflow.export_tracks` writes CTC, GEFF and CSV.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from napari_sam2.engine.cells.seeding import NoSeedsError, SeedFilter, default_mask_generator, segment_frame
from napari_sam2.engine.cells.track_all import TrackAllConfig, TrackAllRun
from napari_sam2.engine.track.events import Division, Finished, FrameTracked, Status, TrackEnded, TrackStarted
from napari_sam2.engine.track.session import SessionError
from napari_sam2.errors import AlreadyExistsError

from .geometry import StackGeometry, layer_data
from .layers import find_layer, keep_selection, layer_transforms, role_metadata, unique_name
from .run_kinds import Run, RunContext, plural

__all__ = ["CellSettings", "CellsWorkflow", "SeedsFound", "export_tracks_asking"]

EXPORT_FORMATS = ("ctc", "geff", "csv")


@dataclass(frozen=True)
class CellSettings:
    """The choices of the "Track all cells" workflow."""

    # cells touching the border are kept: the Cell Tracking Challenge's ground truth tracks
    # cells entering the field (the same default as the engine and the CLI)
    seeds: SeedFilter = field(default_factory=lambda: SeedFilter(drop_border_touching=False))
    reseed_every: int = 10
    lost_after: int = 3
    divisions: bool = True
    tile_size: int = 0  # 0: one generator pass over the whole frame; else tiles of this size
    points_per_side: int = 32
    # an instance head file (napari-sam2 train --instance-head-steps): seeds and new cells come
    # from its one pass per frame instead of segment everything's point grid; None: the grid
    instance_head: str | None = None


@dataclass(frozen=True)
class NoSeeds:
    """A job event: segment everything kept no object on ``frame``; ``message`` says how
    many masks each filter removed and what to change."""

    frame: int
    message: str


@dataclass(frozen=True)
class SeedsFound:
    """A job event: the seeds of one frame, as a label image (1 .. K)."""

    frame: int
    labels: np.ndarray


class CellsWorkflow:
    """The "Track all cells" part of the :class:`~napari_sam2.plugin.annotator.Annotator`:
    its settings, seeds, tracks and lineage layers, its two runs and the export."""

    def __init__(self, viewer, store, status, image, model, runs, outputs) -> None:
        self.viewer = viewer
        self._store, self._status, self._image = store, status, image
        self._model, self._runs, self._outputs = model, runs, outputs
        self._generator_given: Any = None
        #: the track graph and the track-id labels of the last run (None before one)
        self.track_graph = None
        self.track_labels = None

    # ---- settings
    def set_cells(self, **changes: Any) -> None:
        """Change the workflow's settings: ``min_area``, ``max_area``, ``min_score``,
        ``drop_border_touching`` (the seed filter), ``reseed_every``, ``lost_after``,
        ``divisions``, ``tile_size``, ``points_per_side``, ``instance_head`` (a head file's path, or
        None for segment everything)."""
        cells = self._store.value.cells
        seed_keys = {"min_area", "max_area", "min_score", "drop_border_touching", "max_overlap"}
        seed_changes = {k: v for k, v in changes.items() if k in seed_keys}
        other = {k: v for k, v in changes.items() if k not in seed_keys}
        unknown = set(other) - {f for f in CellSettings.__dataclass_fields__ if f != "seeds"}
        if unknown:
            raise SessionError(f"unknown setting(s) {sorted(unknown)} of the cell workflow")
        if other.get("instance_head") is not None:
            other["instance_head"] = self._checked_head(other["instance_head"])
        try:
            seeds = replace(cells.seeds, **seed_changes) if seed_changes else cells.seeds
            cells = replace(cells, seeds=seeds, **other)
            TrackAllConfig(reseed_every=cells.reseed_every, lost_after=cells.lost_after)
        except ValueError as e:
            raise SessionError(str(e)) from None
        self._store.update(cells=cells)

    @staticmethod
    def _checked_head(path: Any) -> str:
        """The instance head file's path, once it is known to be one (its variant is checked
        against the model when the cells are found)."""
        from napari_sam2.engine.segment.instance_head import load_instance_head

        try:
            load_instance_head(path)
        except (OSError, ValueError, RuntimeError) as exc:
            raise SessionError(str(exc)) from exc
        return str(Path(path).expanduser())

    def use_mask_generator(self, generator: Any) -> None:
        """Segment everything with this generator (a callable frame -> masks, or anything with
        ``generate``) instead of SAM 2's automatic mask generator on the chosen model."""
        self._generator_given = generator

    # ---- layers
    def seeds_layer(self, create: bool = False):
        """The Labels layer of the seeds (the objects found on the seeding frame)."""
        return self._layer("seeds", create, self._image.layer, self._image.geometry(quiet=True))

    def tracks_layer(self, create: bool = False):
        """The Labels layer the track-all run writes (track id per pixel)."""
        return self._layer("tracks", create, self._image.layer, self._image.geometry(quiet=True))

    def lineage_layer(self):
        """The Tracks layer of the last run (None before one finished)."""
        from napari.layers import Tracks

        image = self._image.layer
        return None if image is None else find_layer(self.viewer, "lineage", image, Tracks)

    def _layer(self, role: str, create: bool, image, geom: StackGeometry | None):
        """The ``role`` Labels layer of ``image`` (a run passes the image it started on)."""
        from napari.layers import Labels

        from .output_layers import OUTPUT_DTYPE, shared_channel_labels

        if image is None or geom is None:
            return None
        layer = find_layer(self.viewer, role, image, Labels)
        if layer is not None and tuple(layer.data.shape) == geom.shape:
            return layer
        if not create:
            return None
        data = (
            shared_channel_labels(geom.shape, geom.channel_axis, np.uint32)
            if geom.channel_axis is not None
            else np.zeros(geom.shape, dtype=np.uint32 if role == "tracks" else OUTPUT_DTYPE)
        )
        layer = Labels(
            data,
            name=unique_name(self.viewer, f"SAM2 {role} [{image.name}]"),
            metadata=role_metadata(role, image),
            opacity=0.6,
            **layer_transforms(image),
        )
        with keep_selection(self.viewer):
            self.viewer.add_layer(layer)
        return layer

    def seeds_edited(self, frame: int | None = None) -> bool:
        """Whether the seeds of ``frame`` (default: the current one) were changed by hand
        (painted, merged, deleted) since segment everything wrote them."""
        geom = self._image.geometry(quiet=True)
        layer = self.seeds_layer()
        if geom is None or layer is None:
            return False
        frame = self._image.current_frame() if frame is None else int(frame)
        return self._outputs.writer.plane_edited(layer, geom, frame)

    # ---- the generator
    def _generator(self, model: Any):
        """The mask generator as given or built; the engine gives it the tracking session's
        contrast mapping (one fit per session) and the tracker's image features."""
        cells = self._store.value.cells
        generator = self._generator_given
        if cells.instance_head:  # the user's choice in the panel wins over a scripted generator
            if model is None:
                raise SessionError(
                    "the instance head reads SAM 2's image features: choose a model (a given predictor has none)"
                )
            from napari_sam2.engine.segment.instance_head import InstanceHeadGenerator

            try:  # the file and its variant are checked here, before any frame is computed
                generator = InstanceHeadGenerator(model, cells.instance_head)
            except (OSError, ValueError) as exc:
                raise SessionError(str(exc)) from exc
        if generator is None:
            if model is None:
                raise SessionError(
                    "segment everything needs SAM 2's model: choose a model (a given predictor has none), "
                    "or give a mask generator (use_mask_generator)"
                )
            if cells.tile_size:
                from napari_sam2.engine.segment.tiled_mask_generator import TiledMaskGenerator

                generator = TiledMaskGenerator(
                    model,
                    tile_size=cells.tile_size,
                    output_mode="binary_mask",
                    points_per_side=cells.points_per_side,
                )
            else:
                generator = default_mask_generator(model, points_per_side=cells.points_per_side)
        return generator

    # ---- runs
    def segment_everything(
        self, frame: int | None = None, synchronous: bool | None = None, replace_edited: bool = False
    ) -> np.ndarray | None:
        """Segment everything on ``frame`` (default: the current one) and write the seeds into
        the seeds layer (one undo step); returns the seed labels of that frame when run
        synchronously. Seeds of that frame edited by hand are replaced only with
        ``replace_edited=True`` (else a SessionError says so, and nothing runs)."""
        if self._runs.refused_busy():
            return None
        try:
            ctx = self._runs.prepare(need_prompts=False)
            geom = ctx.geom
            frame = self._image.current_frame() if frame is None else self._image.check_frame(geom, frame)
        except Exception as e:  # noqa: BLE001 - refused with its message
            self._status.refuse(e)
            return None
        if not replace_edited and self.seeds_edited(frame):
            raise SessionError(
                f"the seeds on frame {frame} in '{self.seeds_layer().name}' were edited by hand; to replace "
                "them with new ones call segment_everything(replace_edited=True) (Ctrl+Z on the seeds layer "
                "brings them back), or segment another frame"
            )
        data, channels, cells = layer_data(ctx.image), self._image.channels(geom), self._store.value.cells
        session = self._model.session

        def job():
            # on the clicks' tracking session: its frames, contrast mapping and image features
            yield from ctx.open_session()
            yield Status(f"Segmenting everything on frame {frame}…")
            generator = self._generator(getattr(session.predictor, "model", None))
            try:
                seeds = segment_frame(
                    session, frame, generator, cells.seeds, frames=geom.frames(data, channels)
                )
            except NoSeedsError as e:  # every mask filtered away: say why, change nothing
                yield NoSeeds(frame, str(e))
                return "nothing"
            yield SeedsFound(frame, seeds.to_labels())
            return "done"

        self._runs.start(
            SegmentRun(ctx, self._runs.parts, self), job(), synchronous, "SAM 2: segment everything"
        )
        layer = self.seeds_layer()
        if layer is None or not (self._runs.runner.synchronous if synchronous is None else synchronous):
            return None
        return np.array(layer.data[geom.output_index(frame)])

    def track_all_cells(self, frame: int | None = None, synchronous: bool | None = None):
        """Track every cell from the seeds on ``frame`` (default: the current frame); returns the
        tracks layer when run synchronously."""
        if self._runs.refused_busy():
            return None
        try:
            ctx = self._runs.prepare(need_prompts=False)
            geom = ctx.geom
            if not geom.can_propagate:
                raise SessionError("tracking needs a stack with a time or z axis: this is a single 2D image")
            frame = self._image.current_frame() if frame is None else self._image.check_frame(geom, frame)
            seeds = self.seeds_layer()
            start = None if seeds is None else np.array(seeds.data[geom.output_index(frame)])
            if start is None or not start.any():
                raise SessionError(
                    f"there are no seeds on frame {frame}: click 'Segment everything' first (or paint seeds "
                    "into the seeds layer)"
                )
        except Exception as e:  # noqa: BLE001 - refused with its message
            self._status.refuse(e)
            return None
        data, channels, cells = layer_data(ctx.image), self._image.channels(geom), self._store.value.cells
        config = TrackAllConfig(
            start_frame=frame, reseed_every=cells.reseed_every, lost_after=cells.lost_after
        )
        if not cells.divisions:
            config = replace(config, division=replace(config.division, enabled=False))
        config = replace(config, seed_filter=cells.seeds)
        run = TrackAllCellsRun(ctx, self._runs.parts, self)
        session, cancel = self._model.session, self._runs.runner.cancel_event

        def job():
            # the run drives the clicks' tracking session: one video state, one contrast fit
            yield from ctx.open_session()
            frames = geom.frames(data, channels)
            generator = (
                self._generator(getattr(session.predictor, "model", None)) if config.reseed_every else None
            )
            result = yield from self._track(session, frames, generator, config, start, cancel)
            run.result = result
            return "cancelled" if result.cancelled else "done"

        self.track_graph = self.track_labels = None
        self._runs.start(run, job(), synchronous, "SAM 2: tracking all cells")
        return (
            self.tracks_layer()
            if (self._runs.runner.synchronous if synchronous is None else synchronous)
            else None
        )

    @staticmethod
    def _track(session, frames, generator, config: TrackAllConfig, start: np.ndarray, cancel):
        """The one call into the engine's every-cell tracking, on the open ``session`` (the
        clicks'): its events, then its result."""
        run = TrackAllRun(session, frames, generator, config, start_labels=start)
        events = run.events()
        try:
            for event in events:
                if cancel.is_set():
                    run.cancel()
                yield event
        finally:
            events.close()
        return run.result()

    def finished(self, run: TrackAllCellsRun) -> None:
        """After a track-all run (done or cancelled): keep its graph, show the lineage."""
        if run.result is None:
            return
        self.track_graph = run.result.graph
        self.track_labels = run.result.labels
        self._show_lineage(run.ctx, run.result.graph)

    def _show_lineage(self, ctx: RunContext, graph) -> None:
        from napari.layers import Tracks

        from napari_sam2.engine.cells.track_exports import tracks_layer_data

        data, parents, properties = tracks_layer_data(graph)
        if not len(data):
            return
        geom, image = ctx.geom, ctx.image
        if geom.frame_axis != 0 or geom.held or geom.channel_axis is not None:
            self._status.say(
                self._status.text + " (the lineage layer needs time as the image's first axis and no held "
                "or channel axis; export the tracks instead)"
            )
            return
        old = find_layer(self.viewer, "lineage", image, Tracks)
        with keep_selection(self.viewer):
            if old is not None:
                self.viewer.layers.remove(old)
            layer = Tracks(
                data,
                graph=parents,
                properties=properties,
                name=unique_name(self.viewer, f"SAM2 lineage [{image.name}]"),
                metadata=role_metadata("lineage", image),
                scale=image.scale,
                translate=image.translate,
            )
            self.viewer.add_layer(layer)

    # ---- export
    def export_tracks(
        self, folder: str | Path, formats: tuple[str, ...] = EXPORT_FORMATS, overwrite: bool = False
    ) -> list[Path]:
        """Write the last run's tracks into ``folder``: ``ctc/`` (Cell Tracking Challenge:
        the track file + one 16-bit mask TIFF per frame), ``tracks.geff`` and ``tracks.csv``.
        An existing output is replaced only with ``overwrite=True``: else FileExistsError
        names them all, before anything is written."""
        from napari_sam2.engine.cells.track_exports import check_export, export_tracking

        if self.track_graph is None:
            raise SessionError("there are no tracks yet: run 'Track all cells' first")
        bad = set(formats) - set(EXPORT_FORMATS)
        if bad:
            raise SessionError(
                f"unknown export format(s) {sorted(bad)}; choose from {', '.join(EXPORT_FORMATS)}"
            )
        folder = Path(folder).expanduser()
        # every output that exists, named at once (the engine names the first), before writing
        existing = []
        for fmt in formats:
            try:
                check_export(folder, [fmt], overwrite=overwrite)
            except FileExistsError as e:
                existing.append(Path(getattr(e, "path", None) or e.filename or folder))
        if existing:
            raise AlreadyExistsError(
                f"{', '.join(str(p) for p in existing)} already exist{'s' if len(existing) == 1 else ''}"
            )
        # the one export function of the widget, the CLI and the API
        written = list(
            export_tracking(
                self.track_labels, self.track_graph, folder, formats, overwrite=overwrite
            ).values()
        )
        self._status.say(f"Tracks written to {folder}: " + ", ".join(p.name for p in written))
        return written


def export_tracks_asking(
    export: Callable[..., list[Path]], folder: str | Path, ask: Callable[[str], bool]
) -> list[Path] | None:
    """Export through ``export(folder, overwrite=...)``; when outputs exist already, ``ask``
    (given what exists) decides whether they are replaced. None when the user said no.
    (The one place the widget's export goes through: the engine's export call lives in
    :meth:`CellsWorkflow.export_tracks`.)"""
    try:
        return export(folder)
    except FileExistsError as e:
        if not ask(str(e)):
            return None
    return export(folder, overwrite=True)


class _CellsRun(Run):
    """A run of the cell workflow: after a deleted layer, only status lines pass."""

    def __init__(self, ctx: RunContext, parts, workflow: CellsWorkflow) -> None:
        super().__init__(ctx, parts)
        self.workflow = workflow

    def on_event(self, event: Any) -> None:
        if self.ctx.stop_reason is not None and not isinstance(event, Status):
            return
        if not self.cell_event(event):
            super().on_event(event)

    def cell_event(self, event: Any) -> bool:  # pragma: no cover - each run has its own
        return False


class SegmentRun(_CellsRun):
    kind = "segment"

    def cell_event(self, event: Any) -> bool:
        if isinstance(event, NoSeeds):
            self.parts.status.say(f"{event.message} Your seeds are unchanged.")
            self.parts.status.alert(event.message)
            return True
        if not isinstance(event, SeedsFound):
            return False
        geom = self.ctx.geom
        layer = self.workflow._layer("seeds", True, self.ctx.image, geom)
        # the whole plane is replaced (the user agreed, or had not edited it): one undo step
        self.parts.outputs.writer.replace_plane(layer, geom, event.frame, event.labels)
        n = int(len(np.unique(event.labels[event.labels > 0])))
        self.parts.status.say(
            f"{plural(n, 'object')} on frame {event.frame}. Check them in '{layer.name}' (delete, merge or "
            "paint labels), then click 'Track all cells'."
        )
        return True


class TrackAllCellsRun(_CellsRun):
    kind = "track-all"
    progress = True
    result = None  # the engine's TrackAllResult, set by the job (None: not finished)

    def cell_event(self, event: Any) -> bool:
        ctx, p = self.ctx, self.parts
        if isinstance(event, FrameTracked):
            layer = self.workflow._layer("tracks", True, ctx.image, ctx.geom)
            p.outputs.in_use.add(layer.unique_id)
            p.outputs.writer.write_plane(layer, ctx.geom, event.frame, event.labels)
            self.set_total(event.total)
            self.frame_tracked(event.frame)
            p.status.say(f"{p.status.text}, {plural(event.cells, 'cell')}, {plural(event.tracks, 'track')}")
            p.events.frame_written.emit(event.frame)
        elif isinstance(event, TrackStarted | TrackEnded | Division):
            pass  # in the graph at the end
        elif isinstance(event, Finished):
            p.status.say(
                f"Tracked {plural(event.frames_done, 'frame')}: "
                + ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in event.summary.items())
            )
        else:
            return False
        return True

    def cancelled(self) -> None:
        self.workflow.finished(self)
        super().cancelled()

    def done(self, outcome: str) -> None:
        self.workflow.finished(self)
