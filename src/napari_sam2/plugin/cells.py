"""Track all cells (no Qt): segment everything on a frame -> review the seeds -> track every
cell with divisions -> the lineage, as layers and files.

1. :meth:`CellsMixin.segment_everything` runs SAM 2's automatic mask generator on the current
   frame (tiled for large fields of view), keeps one object per mask after the user's filters
   (:class:`~napari_sam2.engine.seeding.SeedFilter`), and writes the seeds into a Labels layer
   ``SAM2 seeds [image]``: the user deletes, merges or paints them there with napari's tools.
2. :meth:`CellsMixin.track_all_cells` starts a :class:`~napari_sam2.engine.track_all.TrackAllRun`
   from the seeds on that frame: all objects propagated together, new cells found by
   re-seeding every N frames, lost cells ended, divisions recorded. Final frames are written
   into ``SAM2 tracks [image]`` (a user's edits of it are kept, as in every output layer).
3. At the end the track graph becomes a napari Tracks layer ``SAM2 lineage [image]`` (with the
   division graph), and :meth:`CellsMixin.export_tracks` writes CTC, GEFF and CSV.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..engine.seeding import SeedFilter, default_mask_generator, seed_objects, with_stack_contrast
from ..engine.session import SessionError, Status
from ..engine.track_all import (
    Division,
    Finished,
    FrameTracked,
    TrackAllConfig,
    TrackAllRun,
    TrackEnded,
    TrackStarted,
)
from ..engine.track_all import Status as TrackStatus
from .geometry import StackGeometry, layer_data
from .layers import find_layer, keep_selection, layer_transforms, role_metadata, unique_name

__all__ = ["CellSettings", "CellsMixin", "SeedsFound"]

EXPORT_FORMATS = ("ctc", "geff", "csv")


@dataclass(frozen=True)
class CellSettings:
    """The choices of the "Track all cells" workflow."""

    seeds: SeedFilter = field(default_factory=SeedFilter)
    reseed_every: int = 10
    lost_after: int = 3
    divisions: bool = True
    tile_size: int = 0  # 0: one generator pass over the whole frame; else tiles of this size
    points_per_side: int = 32


@dataclass(frozen=True)
class SeedsFound:
    """A job event: the seeds of one frame, as a label image (1 .. K)."""

    frame: int
    labels: np.ndarray


class CellsMixin:
    """The "Track all cells" workflow of the :class:`~napari_sam2.plugin.annotator.Annotator`."""

    _mask_generator_given: Any = None
    track_graph = None

    # ---- settings
    def set_cells(self, **changes: Any) -> None:
        """Change the workflow's settings: ``min_area``, ``max_area``, ``min_score``,
        ``drop_border_touching`` (the seed filter), ``reseed_every``, ``lost_after``,
        ``divisions``, ``tile_size``, ``points_per_side``."""
        cells = self.settings.cells
        seed_keys = {"min_area", "max_area", "min_score", "drop_border_touching", "max_overlap"}
        seed_changes = {k: v for k, v in changes.items() if k in seed_keys}
        other = {k: v for k, v in changes.items() if k not in seed_keys}
        unknown = set(other) - {f for f in CellSettings.__dataclass_fields__ if f != "seeds"}
        if unknown:
            raise SessionError(f"unknown setting(s) {sorted(unknown)} of the cell workflow")
        try:
            seeds = replace(cells.seeds, **seed_changes) if seed_changes else cells.seeds
            cells = replace(cells, seeds=seeds, **other)
            TrackAllConfig(reseed_every=cells.reseed_every, lost_after=cells.lost_after)
        except ValueError as e:
            raise SessionError(str(e)) from None
        self._update(cells=cells)

    def use_mask_generator(self, generator: Any) -> None:
        """Segment everything with this generator (a callable frame -> masks, or anything with
        ``generate``) instead of SAM 2's automatic mask generator on the chosen model."""
        self._mask_generator_given = generator

    # ---- layers
    def seeds_layer(self, create: bool = False):
        """The Labels layer of the seeds (the objects found on the seeding frame)."""
        return self._cells_layer("seeds", create)

    def tracks_layer(self, create: bool = False):
        """The Labels layer the track-all run writes (track id per pixel)."""
        return self._cells_layer("tracks", create)

    def lineage_layer(self):
        """The Tracks layer of the last run (None before one finished)."""
        from napari.layers import Tracks

        image = self.image_layer
        return None if image is None else find_layer(self.viewer, "lineage", image, Tracks)

    def _cells_layer(self, role: str, create: bool):
        from napari.layers import Labels

        from .output_layers import OUTPUT_DTYPE, shared_channel_labels

        image = self.image_layer
        geom = self.geometry(quiet=True)
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

    # ---- the generator
    def _generator(self, model: Any, frames: Any, geom: StackGeometry):
        cells = self.settings.cells
        generator = self._mask_generator_given
        if generator is None:
            if model is None:
                raise SessionError(
                    "segment everything needs SAM 2's model: choose a model (a given predictor has none), "
                    "or give a mask generator (use_mask_generator)"
                )
            if cells.tile_size:
                from ..engine.tiled_mask_generator import TiledMaskGenerator

                generator = TiledMaskGenerator(
                    model,
                    tile_size=cells.tile_size,
                    output_mode="binary_mask",
                    points_per_side=cells.points_per_side,
                )
            else:
                generator = default_mask_generator(model, points_per_side=cells.points_per_side)
        # every frame seen with the stack's contrast, as tracking sees it
        return with_stack_contrast(generator, frames, None, self.channels(geom))

    # ---- jobs
    def segment_everything(
        self, frame: int | None = None, synchronous: bool | None = None
    ) -> np.ndarray | None:
        """Segment everything on ``frame`` (default: the current one) and write the seeds into
        the seeds layer; returns the seed labels of that frame when run synchronously."""
        if self._busy_refusal():
            return None
        try:
            geom, _, open_session = self._prepare(need_prompts=False)
            frame = self.current_frame() if frame is None else self._check_frame(geom, frame)
        except Exception as e:  # noqa: BLE001 - refused with its message
            self._refuse(e)
            return None
        data, channels = layer_data(self.image_layer), self.channels(geom)
        cells = self.settings.cells

        def job():
            yield from open_session()
            frames = geom.frames(data, channels)
            yield Status(f"Segmenting everything on frame {frame}…")
            model = getattr(self.session.predictor, "model", None)
            generator = self._generator(model, frames, geom)
            seeds = seed_objects(np.asarray(frames[frame]), generator, cells.seeds)
            yield SeedsFound(frame, seeds.to_labels())
            return "done"

        self._start("segment", job(), geom, synchronous, "SAM 2: segment everything")
        layer = self.seeds_layer()
        if layer is None or not (self.synchronous if synchronous is None else synchronous):
            return None
        return np.array(layer.data[geom.output_index(frame)])

    def track_all_cells(self, frame: int | None = None, synchronous: bool | None = None):
        """Track every cell from the seeds on ``frame`` (default: the current frame); returns the
        tracks layer when run synchronously."""
        if self._busy_refusal():
            return None
        try:
            geom, _, open_session = self._prepare(need_prompts=False)
            if not geom.can_propagate:
                raise SessionError("tracking needs a stack with a time or z axis: this is a single 2D image")
            frame = self.current_frame() if frame is None else self._check_frame(geom, frame)
            seeds = self.seeds_layer()
            start = None if seeds is None else np.array(seeds.data[geom.output_index(frame)])
            if start is None or not start.any():
                raise SessionError(
                    f"there are no seeds on frame {frame}: click 'Segment everything' first (or paint seeds "
                    "into the seeds layer)"
                )
        except Exception as e:  # noqa: BLE001 - refused with its message
            self._refuse(e)
            return None
        data, channels = layer_data(self.image_layer), self.channels(geom)
        cells = self.settings.cells
        config = TrackAllConfig(
            start_frame=frame, reseed_every=cells.reseed_every, lost_after=cells.lost_after
        )
        if not cells.divisions:
            config = replace(config, division=replace(config.division, enabled=False))
        config = replace(config, seed_filter=cells.seeds)
        cancel = self.runner.cancel_event

        def job():
            yield from open_session()
            frames = geom.frames(data, channels)
            model = getattr(self.session.predictor, "model", None)
            generator = self._generator(model, frames, geom) if config.reseed_every else None
            run = TrackAllRun(self.session.predictor, frames, generator, config, start_labels=start)
            events = run.events()
            try:
                for event in events:
                    if cancel.is_set():
                        run.cancel()
                    yield event
            finally:
                events.close()
            self._track_result = run.result()
            return "cancelled" if run.result().cancelled else "done"

        self.track_graph = None
        self._start("track-all", job(), geom, synchronous, "SAM 2: tracking all cells")
        return self.tracks_layer() if (self.synchronous if synchronous is None else synchronous) else None

    def _cells_event(self, geom: StackGeometry, event: Any) -> bool:
        """Handle the events of the cell jobs; False for events that are not theirs."""
        if isinstance(event, SeedsFound):
            layer = self.seeds_layer(create=True)
            plane = np.zeros(layer.data[geom.output_index(event.frame)].shape, layer.data.dtype)
            plane[:] = event.labels
            self.outputs.writer.forget_plane(layer, geom, event.frame)
            layer.data[geom.output_index(event.frame)] = plane
            layer.refresh()
            self._status(
                f"{int(event.labels.max())} object(s) on frame {event.frame}. Check them in "
                f"'{layer.name}' (delete, merge or paint labels), then click 'Track all cells'."
            )
        elif isinstance(event, FrameTracked):
            layer = self.tracks_layer(create=True)
            self.outputs.in_use.add(layer.unique_id)
            self.outputs.writer.write_plane(layer, geom, event.frame, event.labels)
            self._frames_done.add(event.frame)
            if self._pbar is not None:
                self._pbar.total = event.total
                self._pbar.update(1)
            self.events.frame_written.emit(event.frame)
        elif isinstance(event, TrackStatus):
            self._status(event.message)
        elif isinstance(event, TrackStarted | TrackEnded | Division):
            pass  # in the graph at the end
        elif isinstance(event, Finished):
            self._status(
                f"Tracked {event.frames_done} frame(s): "
                + ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in event.summary.items())
            )
        else:
            return False
        return True

    def _cells_finished(self, geom: StackGeometry) -> None:
        """After a track-all run: the lineage as a napari Tracks layer."""
        result = getattr(self, "_track_result", None)
        if result is None:
            return
        self.track_graph = result.graph
        self._track_labels = result.labels
        self._show_lineage(geom, result.graph)

    def _show_lineage(self, geom: StackGeometry, graph) -> None:
        from napari.layers import Tracks

        from ..engine.track_exports import tracks_layer_data

        data, parents, properties = tracks_layer_data(graph)
        if not len(data):
            return
        if geom.frame_axis != 0 or geom.held or geom.channel_axis is not None:
            self._status(
                self.last_status + " (the lineage layer needs time as the image's first axis and no held "
                "or channel axis; export the tracks instead)"
            )
            return
        image = self.image_layer
        old = self.lineage_layer()
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

    def export_tracks(
        self, folder: str | Path, formats: tuple[str, ...] = EXPORT_FORMATS, overwrite: bool = False
    ) -> list[Path]:
        """Write the last run's tracks into ``folder``: ``ctc/`` (Cell Tracking Challenge:
        man_track.txt + one 16-bit mask TIFF per frame), ``tracks.geff`` and ``tracks.csv``."""
        from ..engine import track_exports as ex

        if self.track_graph is None:
            raise SessionError("there are no tracks yet: run 'Track all cells' first")
        bad = set(formats) - set(EXPORT_FORMATS)
        if bad:
            raise SessionError(
                f"unknown export format(s) {sorted(bad)}; choose from {', '.join(EXPORT_FORMATS)}"
            )
        folder = Path(folder).expanduser()
        folder.mkdir(parents=True, exist_ok=True)
        written = []
        if "ctc" in formats:
            written.append(
                ex.write_ctc(self._track_labels, self.track_graph, folder / "ctc", overwrite=overwrite)
            )
        if "geff" in formats:
            written.append(ex.write_geff(self.track_graph, folder / "tracks.geff", overwrite=overwrite))
        if "csv" in formats:
            path = folder / "tracks.csv"
            if path.exists() and not overwrite:
                raise SessionError(f"{path} exists; choose another folder or allow overwriting")
            written.append(ex.write_csv(self.track_graph, path))
        self._status(f"Tracks written to {folder}: " + ", ".join(p.name for p in written))
        return written
