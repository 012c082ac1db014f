"""The track graph as data: tracks, their parents, and one measured record per object and frame.

A *track* is one object followed through time under one id; it has at most one parent
(the track it divided from) and ends by being lost, by dividing, or with the stack. A
*record* is what is measured of a track on one frame, from the label stack (label = track
id) and the frame's intensities: area, centroid, bounding box, mean intensity, and the
model's score for the mask. A track may miss frames between its first and last (a short
loss); exporters that need continuous tracks (CTC) split it there.

No file I/O here: :mod:`napari_sam2.engine.cells.track_exports` writes and reads the formats.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

import numpy as np

from napari_sam2.errors import InputError, UnknownKeyError

__all__ = ["ObjectRecord", "Track", "TrackGraph", "consecutive_runs", "measure_frame"]


def consecutive_runs(frames: list[int]) -> list[tuple[int, int]]:
    """Sorted frame indices as runs of consecutive frames: ``[0, 1, 2, 5, 6] -> [(0, 2), (5, 6)]``."""
    runs: list[tuple[int, int]] = []
    for f in frames:
        if runs and f == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], f)
        else:
            runs.append((f, f))
    return runs


@dataclass(frozen=True)
class ObjectRecord:
    """One track on one frame.

    ``centroid`` is (y, x) in pixels; ``bbox`` is (min_row, min_col, max_row, max_col)
    with the max exclusive (scikit-image's convention); ``mean_intensity`` has one value
    per channel of the frame; ``score`` is the mean mask probability over the object's
    pixels (NaN when unknown, e.g. for imported labels).
    """

    track_id: int
    frame: int
    area: int
    centroid: tuple[float, float]
    bbox: tuple[int, int, int, int]
    mean_intensity: tuple[float, ...] = ()
    score: float = float("nan")


@dataclass
class Track:
    """One object's track: its id, parent and frames (``start``/``end`` inclusive; None while empty)."""

    track_id: int
    parent: int | None = None
    start: int | None = None
    end: int | None = None
    #: why it ended: "lost", "division", or "" (it lasted to the last frame tracked)
    ended_by: str = ""
    frames: list[int] = field(default_factory=list, repr=False)


class TrackGraph:
    """Tracks with parent links and per-frame records.

    Build it incrementally (``add_track``, ``add_record``) or from a label stack with
    :meth:`from_label_stack`. Iterating yields the tracks in the order they were added.
    """

    def __init__(self) -> None:
        self.tracks: dict[int, Track] = {}
        self._records: dict[tuple[int, int], ObjectRecord] = {}

    # ------------------------------------------------------------------ building
    def add_track(self, track_id: int, parent: int | None = None) -> Track:
        track_id = int(track_id)
        if track_id <= 0:
            raise InputError(f"track ids must be positive integers (0 is background), got {track_id}")
        if track_id in self.tracks:
            raise InputError(f"track {track_id} exists already")
        if parent is not None and int(parent) not in self.tracks:
            raise UnknownKeyError(f"parent track {parent} of track {track_id} is unknown")
        track = Track(track_id, None if parent is None else int(parent))
        self.tracks[track_id] = track
        return track

    def add_record(self, record: ObjectRecord) -> None:
        track = self.tracks.get(record.track_id)
        if track is None:
            raise UnknownKeyError(f"record for unknown track {record.track_id} (add the track first)")
        key = (record.track_id, record.frame)
        if key in self._records:
            raise InputError(f"track {record.track_id} already has a record on frame {record.frame}")
        self._records[key] = record
        frames = track.frames
        if not frames or record.frame > frames[-1]:
            frames.append(record.frame)
        else:
            frames.insert(int(np.searchsorted(frames, record.frame)), record.frame)
        track.start, track.end = frames[0], frames[-1]

    def remove_track(self, track_id: int) -> None:
        """Forget a track and its records (its children become roots)."""
        track = self.tracks.pop(int(track_id))
        for f in track.frames:
            del self._records[(track.track_id, f)]
        for other in self.tracks.values():
            if other.parent == track.track_id:
                other.parent = None

    # ------------------------------------------------------------------ queries
    def __iter__(self) -> Iterator[Track]:
        return iter(self.tracks.values())

    def __len__(self) -> int:
        return len(self.tracks)

    def __contains__(self, track_id: object) -> bool:
        return track_id in self.tracks

    def __getitem__(self, track_id: int) -> Track:
        return self.tracks[track_id]

    @property
    def num_records(self) -> int:
        return len(self._records)

    def record(self, track_id: int, frame: int) -> ObjectRecord | None:
        return self._records.get((track_id, frame))

    def records(self, track_id: int | None = None) -> list[ObjectRecord]:
        """A track's records by frame, or all records by (frame, track id)."""
        if track_id is not None:
            return [self._records[(track_id, f)] for f in self.tracks[track_id].frames]
        return sorted(self._records.values(), key=lambda r: (r.frame, r.track_id))

    def children(self, track_id: int) -> list[int]:
        return [t.track_id for t in self.tracks.values() if t.parent == track_id]

    def divisions(self) -> list[tuple[int, tuple[int, ...]]]:
        """``(parent, daughters)`` for every track with two or more children."""
        out = []
        for t in self.tracks.values():
            kids = self.children(t.track_id)
            if len(kids) >= 2:
                out.append((t.track_id, tuple(kids)))
        return out

    def root(self, track_id: int) -> int:
        """The first ancestor of a track (the lineage it belongs to)."""
        seen = set()
        while (parent := self.tracks[track_id].parent) is not None and track_id not in seen:
            seen.add(track_id)
            track_id = parent
        return track_id

    def segments(self, track_id: int) -> list[tuple[int, int]]:
        """The runs of consecutive frames of a track, ``[(first, last), ...]``."""
        return consecutive_runs(self.tracks[track_id].frames)

    def summary(self) -> dict[str, int]:
        return {
            "tracks": len(self.tracks),
            "records": len(self._records),
            "divisions": len(self.divisions()),
        }

    # ------------------------------------------------------------------ from data
    @classmethod
    def from_label_stack(
        cls,
        labels: np.ndarray,
        parents: Mapping[int, int | None] | None = None,
        image: np.ndarray | None = None,
        scores: Mapping[tuple[int, int], float] | None = None,
    ) -> TrackGraph:
        """Tracks and records measured from a label stack (T, H, W), label = track id.

        ``parents`` maps a track id to its parent's (0 or None: none; ids missing from the
        stack are dropped); ``image`` (T, H, W[, C]) gives the mean intensities;
        ``scores[(track, frame)]`` the scores (NaN where absent).
        """
        labels = np.asarray(labels)
        if labels.ndim != 3:
            raise InputError(f"labels must be (T, H, W), got shape {labels.shape}")
        graph = cls()
        per_frame = []
        for t in range(len(labels)):
            frame_image = None if image is None else np.asarray(image[t])
            per_frame.append(measure_frame(labels[t], t, frame_image, scores))
        ids = sorted({r.track_id for recs in per_frame for r in recs})
        parents = dict(parents or {})
        # parents before children, whatever the ids
        added: set[int] = set()

        def add(i: int, chain: tuple[int, ...] = ()) -> None:
            if i in added:
                return
            p = parents.get(i) or None
            if p is not None and (p not in ids or p in chain):
                p = None
            if p is not None:
                add(p, (*chain, i))
            graph.add_track(i, p)
            added.add(i)

        for i in ids:
            add(i)
        for recs in per_frame:
            for r in recs:
                graph.add_record(r)
        return graph

    def extend(self, records: Iterable[ObjectRecord]) -> None:
        for r in records:
            self.add_record(r)


def measure_frame(
    labels: np.ndarray,
    frame: int,
    image: np.ndarray | None = None,
    scores: Mapping[tuple[int, int], float] | Mapping[int, float] | None = None,
) -> list[ObjectRecord]:
    """Records of every label in one (H, W) label image.

    ``image`` is the frame (H, W) or (H, W, C) for the mean intensities; ``scores`` maps
    ``track id`` or ``(track id, frame)`` to a score.
    """
    from skimage.measure import regionprops

    labels = np.asarray(labels)
    if not labels.any():
        return []
    intensity = None
    if image is not None:
        intensity = np.asarray(image)
        if intensity.shape[:2] != labels.shape:
            raise InputError(f"image frame {intensity.shape} does not match labels {labels.shape}")
        intensity = intensity.astype(np.float64, copy=False)
    out = []
    for region in regionprops(labels.astype(np.int64, copy=False), intensity_image=intensity):
        tid = int(region.label)
        mean: tuple[float, ...] = ()
        if intensity is not None:
            mean = tuple(float(v) for v in np.atleast_1d(region.intensity_mean))
        score = float("nan")
        if scores is not None:
            score = float(scores.get((tid, frame), scores.get(tid, float("nan"))))  # type: ignore[arg-type]
        cy, cx = region.centroid
        out.append(
            ObjectRecord(
                track_id=tid,
                frame=int(frame),
                area=int(region.area),
                centroid=(float(cy), float(cx)),
                bbox=tuple(int(v) for v in region.bbox),  # type: ignore[arg-type]
                mean_intensity=mean,
                score=score,
            )
        )
    return out
