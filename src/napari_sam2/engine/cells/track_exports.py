"""The track graph out (and back in): one export function, and each format's writer and reader.

- :func:`export_tracking` -- every output of a tracking run into one folder: ``ctc/`` (a
  Cell Tracking Challenge RESULT folder), ``tracks.geff``, ``tracks.csv``, ``labels.tif``;
  used by the CLI's ``track-all``, the widget and scripts. :func:`check_export` raises, before
  any work, what it would raise.
- :func:`tracks_layer_data` -- what napari's Tracks layer takes: ``(N, 4)`` rows
  ``track_id, t, y, x``, the division graph ``{child: [parent]}`` and per-row properties
  (napari itself is not imported).
- :func:`write_csv` / :func:`read_csv` -- one row per object and frame.
- :func:`write_ctc` / :func:`read_ctc` -- the CTC format (:mod:`.track_ctc`): ``res_track.txt``
  + one 16-bit ``maskTTT.tif`` per frame (or a ground-truth TRA folder).
- :func:`write_geff` / :func:`read_geff` -- the Graph Exchange File Format through the
  ``geff`` package: one node per object and frame (``t, y, x`` axes, the record's values as
  properties, ``track_id`` as the tracklet property and ``lineage_id``), edges from each
  record to the next one of its track and from a parent's last record to each daughter's
  first.

Every writer follows one rule: an existing output is replaced only with ``overwrite=True``
(else :class:`OutputExistsError`, a ``FileExistsError`` naming the path), replacing only the
files it writes itself; a path that cannot be written raises :class:`OutputPathError` naming it.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_sam2.engine.cells.lineage import ObjectRecord, TrackGraph
from napari_sam2.engine.cells.track_ctc import check_ctc, ctc_tracks, read_ctc, write_ctc
from napari_sam2.engine.io._files import (
    OutputError,
    OutputExistsError,
    OutputPathError,
    _atomic,
    check_output_path,
    make_folder,
)
from napari_sam2.errors import InputError, MissingDependencyError

if TYPE_CHECKING:
    from napari_sam2.engine.io.metadata import SourceMetadata

__all__ = [
    "EXPORT_FORMATS",
    "EXPORT_NAMES",
    "OutputError",
    "OutputExistsError",
    "OutputPathError",
    "check_ctc",
    "check_export",
    "ctc_tracks",
    "export_paths",
    "export_tracking",
    "read_csv",
    "read_ctc",
    "read_geff",
    "tracks_layer_data",
    "write_csv",
    "write_ctc",
    "write_geff",
]

#: What :func:`export_tracking` can write, and the name of each output in its folder.
EXPORT_FORMATS = ("ctc", "geff", "csv", "labels")
EXPORT_NAMES = {"ctc": "ctc", "geff": "tracks.geff", "csv": "tracks.csv", "labels": "labels.tif"}


# ====================================================================== one export
def export_paths(destination: str | Path, formats: Iterable[str] | str = EXPORT_FORMATS) -> dict[str, Path]:
    """``{format: path}`` of each output in ``destination``; ``formats`` as names or ``"ctc,csv"``."""
    if isinstance(formats, str):
        formats = formats.split(",")
    wanted = list(dict.fromkeys(str(f).strip().lower() for f in formats if str(f).strip()))
    unknown = [f for f in wanted if f not in EXPORT_FORMATS]
    if unknown or not wanted:
        raise InputError(
            f"unknown export format(s) {unknown or list(formats)!r}; choose from {', '.join(EXPORT_FORMATS)}"
        )
    folder = Path(destination).expanduser()
    return {f: folder / EXPORT_NAMES[f] for f in wanted}


def check_export(
    destination: str | Path,
    formats: Iterable[str] | str = EXPORT_FORMATS,
    *,
    overwrite: bool = False,
    extra: Iterable[str] = (),
) -> dict[str, Path]:
    """Raise now what :func:`export_tracking` would raise, before any frame is tracked.

    Checks the format names, that ``destination`` is (or can be made) a folder you can write
    to, that the ``geff`` package is there when GEFF is asked for, and that no output exists
    yet unless ``overwrite`` (for ``ctc/``: no earlier CTC file in it; other files are fine).
    ``extra``: names of further files the caller will write into ``destination`` (same rule).
    Returns :func:`export_paths`. Raises ValueError, ImportError, :class:`OutputExistsError`,
    :class:`OutputPathError`.
    """
    paths = export_paths(destination, formats)
    folder = Path(destination).expanduser()
    if folder.exists() and not folder.is_dir():
        raise OutputPathError(f"{folder} is a file, not a folder; choose a folder for the exports", folder)
    check_output_path(folder / EXPORT_NAMES["csv"])  # the folder itself: creatable and writable
    if "geff" in paths:
        try:
            import geff  # noqa: F401
        except ImportError as exc:
            raise MissingDependencyError(
                f"writing GEFF needs the geff package (pip install geff): {exc}"
            ) from exc
    for fmt, path in paths.items():
        if fmt == "ctc":
            check_ctc(path, overwrite=overwrite)
        elif fmt == "labels":
            from napari_sam2.engine.io.labels_out import check_writable

            check_writable(path, overwrite=overwrite)
        elif path.exists() and not overwrite:
            raise OutputExistsError(path)
    for name in extra:
        if (folder / name).exists() and not overwrite:
            raise OutputExistsError(folder / name)
    return paths


def export_tracking(
    labels: Any,
    graph: TrackGraph,
    destination: str | Path,
    formats: Iterable[str] | str = EXPORT_FORMATS,
    *,
    overwrite: bool = False,
    metadata: SourceMetadata | None = None,
) -> dict[str, Path]:
    """Write a tracking run's outputs into the folder ``destination``; returns ``{format: path}``.

    Args:
        labels: the label stack (T, Y, X), label = track id (``TrackAllResult.labels``).
        graph: its :class:`TrackGraph` (``TrackAllResult.graph``).
        destination: the folder (created if needed; other files in it are left alone).
        formats: any of ``"ctc"`` (``ctc/``: ``res_track.txt`` + ``maskTTT.tif``), ``"geff"``
            (``tracks.geff``), ``"csv"`` (``tracks.csv``), ``"labels"`` (``labels.tif``, ImageJ).
        overwrite: replace earlier outputs of these names (in ``ctc/`` only the CTC files);
            without it an existing output raises :class:`OutputExistsError` and nothing is written.
        metadata: the tracked input's ``SourceMetadata``: pixel size and units for
            ``labels.tif`` and the GEFF axes; its axes without channels must be the labels' (T, Y, X).

    Everything :func:`check_export` checks is checked before the first file is written; each
    output appears complete or not at all.
    """
    paths = check_export(destination, formats, overwrite=overwrite)
    make_folder(Path(destination).expanduser())
    written: dict[str, Path] = {}
    for fmt, path in paths.items():
        if fmt == "ctc":
            written[fmt] = write_ctc(labels, graph, path, overwrite=overwrite)
        elif fmt == "geff":
            written[fmt] = write_geff(graph, path, overwrite=overwrite, metadata=metadata)
        elif fmt == "csv":
            written[fmt] = write_csv(graph, path, overwrite=overwrite)
        else:
            from napari_sam2.engine.io.labels_out import write_labels

            written[fmt] = write_labels(
                path, np.asarray(labels), metadata, name="tracks", overwrite=overwrite
            )
    return written


def _channels(graph: TrackGraph) -> int:
    return max((len(r.mean_intensity) for r in graph.records()), default=0)


def _intensity_names(n: int) -> list[str]:
    return ["mean_intensity"] if n == 1 else [f"mean_intensity_{c}" for c in range(n)]


# ====================================================================== napari Tracks
def tracks_layer_data(graph: TrackGraph) -> tuple[np.ndarray, dict[int, list[int]], dict[str, np.ndarray]]:
    """``(data, graph, properties)`` for ``napari.layers.Tracks`` / ``viewer.add_tracks``.

    ``data`` is float (N, 4): track_id, t, y, x, sorted by track then frame.
    """
    rows = sorted(graph.records(), key=lambda r: (r.track_id, r.frame))
    data = np.array([(r.track_id, r.frame, *r.centroid) for r in rows], dtype=np.float64).reshape(-1, 4)
    division_graph = {
        t.track_id: [t.parent] for t in graph if t.parent is not None and graph[t.parent].frames and t.frames
    }
    n = _channels(graph)
    props: dict[str, np.ndarray] = {
        "area": np.array([r.area for r in rows], dtype=np.int64),
        "score": np.array([r.score for r in rows], dtype=np.float64),
    }
    for c, name in enumerate(_intensity_names(n)):
        props[name] = np.array(
            [r.mean_intensity[c] if c < len(r.mean_intensity) else np.nan for r in rows], dtype=np.float64
        )
    return data, division_graph, props


# ====================================================================== CSV
_CSV_FIXED = [
    "track_id",
    "frame",
    "parent_id",
    "area",
    "centroid_y",
    "centroid_x",
    "bbox_min_row",
    "bbox_min_col",
    "bbox_max_row",
    "bbox_max_col",
]


def write_csv(graph: TrackGraph, path: str | Path, *, overwrite: bool = False) -> Path:
    """One row per object and frame; ``parent_id`` is the track's parent (0: none).

    An existing ``path`` is replaced only with ``overwrite=True`` (else :class:`OutputExistsError`).
    """
    return _atomic(Path(path).expanduser(), overwrite, ".csv", lambda tmp: _write_csv_rows(graph, tmp))


def _write_csv_rows(graph: TrackGraph, tmp: Path) -> None:
    n = _channels(graph)
    names = _intensity_names(n) if n else []
    with tmp.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([*_CSV_FIXED, *names, "score"])
        for r in graph.records():
            parent = graph[r.track_id].parent or 0
            writer.writerow(
                [r.track_id, r.frame, parent, r.area, *(f"{v:.3f}" for v in r.centroid), *r.bbox]
                + [f"{v:.6g}" for v in r.mean_intensity]
                + [""] * (len(names) - len(r.mean_intensity))
                + ["" if math.isnan(r.score) else f"{r.score:.6g}"]
            )


def read_csv(path: str | Path) -> TrackGraph:
    """A :class:`TrackGraph` from a file of :func:`write_csv`."""
    with Path(path).open(newline="") as f:
        rows = list(csv.DictReader(f))
    graph = TrackGraph()
    parents = {int(r["track_id"]): int(r["parent_id"]) for r in rows}
    intensity = sorted((k for k in (rows[0] if rows else {}) if k.startswith("mean_intensity")), key=_natural)

    def add(i: int) -> None:
        if i in graph:
            return
        p = parents.get(i) or None
        if p is not None and p in parents:
            add(p)
        graph.add_track(i, p if p in parents else None)

    for i in parents:
        add(i)
    for r in rows:
        graph.add_record(
            ObjectRecord(
                track_id=int(r["track_id"]),
                frame=int(r["frame"]),
                area=int(r["area"]),
                centroid=(float(r["centroid_y"]), float(r["centroid_x"])),
                bbox=tuple(int(r[k]) for k in _CSV_FIXED[6:10]),  # type: ignore[arg-type]
                mean_intensity=tuple(float(r[k]) for k in intensity if r[k] != ""),
                score=float(r["score"]) if r["score"] else float("nan"),
            )
        )
    return graph


def _natural(name: str) -> tuple:
    tail = name.rsplit("_", 1)[-1]
    return (len(name), int(tail) if tail.isdigit() else -1, name)


# ====================================================================== GEFF
def write_geff(
    graph: TrackGraph,
    path: str | Path,
    overwrite: bool = False,
    *,
    metadata: SourceMetadata | None = None,
    **axis_kwargs: Any,
) -> Path:
    """Write the graph as a GEFF zarr group (see the module doc); needs the ``geff`` package.

    ``metadata`` (the tracked input's ``SourceMetadata``) gives the axes their units and pixel
    size; ``axis_kwargs`` (``axis_units``, ``axis_scales``...) go to ``geff.write``. An existing
    ``path`` is replaced only with ``overwrite=True`` (else :class:`OutputExistsError`); the
    group is written beside it and moved in place once complete.
    """
    try:
        import geff
        import networkx as nx
        from geff_spec import Axis, GeffMetadata
    except ImportError as exc:
        raise MissingDependencyError(
            f"writing GEFF needs the geff package (pip install geff): {exc}"
        ) from exc

    path = Path(path).expanduser()
    if path.exists() and not overwrite:  # before building the graph
        raise OutputExistsError(path)
    n = _channels(graph)
    names = _intensity_names(n) if n else []
    g = nx.DiGraph()
    node_of: dict[tuple[int, int], int] = {}
    for node, r in enumerate(graph.records()):
        node_of[(r.track_id, r.frame)] = node
        props = {
            "t": r.frame,
            "y": r.centroid[0],
            "x": r.centroid[1],
            "track_id": r.track_id,
            "lineage_id": graph.root(r.track_id),
            "area": r.area,
            "score": r.score,
            "bbox_min_row": r.bbox[0],
            "bbox_min_col": r.bbox[1],
            "bbox_max_row": r.bbox[2],
            "bbox_max_col": r.bbox[3],
        }
        for c, name in enumerate(names):
            props[name] = r.mean_intensity[c] if c < len(r.mean_intensity) else float("nan")
        g.add_node(node, **props)
    for track in graph:
        frames = track.frames
        for a, b in zip(frames, frames[1:]):
            g.add_edge(node_of[(track.track_id, a)], node_of[(track.track_id, b)])
        if track.parent is not None and frames and graph[track.parent].frames:
            g.add_edge(node_of[(track.parent, graph[track.parent].end)], node_of[(track.track_id, frames[0])])
    metadata = GeffMetadata(
        geff_version=geff.__version__,
        directed=True,
        axes=[
            Axis(
                name=a,
                type="time" if a == "t" else "space",
                unit=metadata.unit_of(a) if metadata is not None else None,
                scale=metadata.scale_of(a) if metadata is not None else None,
            )
            for a in "tyx"
        ],
        node_props_metadata={},
        edge_props_metadata={},
        track_node_props={"tracklet": "track_id", "lineage": "lineage_id"},
        extra={"napari_sam2": {"parents": {str(t.track_id): t.parent or 0 for t in graph}}},
    )
    return _atomic(
        path, overwrite, ".geff", lambda tmp: geff.write(g, str(tmp), metadata=metadata, **axis_kwargs)
    )


def read_geff(path: str | Path) -> TrackGraph:
    """A :class:`TrackGraph` from a GEFF written by :func:`write_geff` (or one with the same props)."""
    import geff

    g, metadata = geff.read(str(path))
    tracklet = (metadata.track_node_props or {}).get("tracklet", "track_id")
    nodes = dict(g.nodes(data=True))
    track_of = {n: int(d[tracklet]) for n, d in nodes.items()}
    parents: dict[int, int | None] = dict.fromkeys(track_of.values())
    for a, b in g.edges:
        if track_of[a] != track_of[b]:
            parents[track_of[b]] = track_of[a]
    graph = TrackGraph()

    def add(i: int) -> None:
        if i in graph:
            return
        p = parents[i]
        if p is not None:
            add(p)
        graph.add_track(i, p)

    for i in sorted(parents):
        add(i)
    names = sorted(
        (k for k in next(iter(nodes.values()), {}) if k.startswith("mean_intensity")), key=_natural
    )
    for d in sorted(nodes.values(), key=lambda d: (int(d["t"]), int(d[tracklet]))):
        graph.add_record(
            ObjectRecord(
                track_id=int(d[tracklet]),
                frame=int(d["t"]),
                area=int(d.get("area", 0)),
                centroid=(float(d["y"]), float(d["x"])),
                bbox=tuple(
                    int(d.get(k, 0)) for k in ("bbox_min_row", "bbox_min_col", "bbox_max_row", "bbox_max_col")
                ),  # type: ignore[arg-type]
                mean_intensity=tuple(float(d[k]) for k in names),
                score=float(d.get("score", float("nan"))),
            )
        )
    return graph
