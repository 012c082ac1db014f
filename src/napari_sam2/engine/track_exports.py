"""The track graph out (and back in): napari Tracks data, CSV, Cell Tracking Challenge, GEFF.

- :func:`tracks_layer_data` -- what napari's Tracks layer takes: ``(N, 4)`` rows
  ``track_id, t, y, x``, the division graph ``{child: [parent]}`` and per-row properties
  (napari itself is not imported).
- :func:`write_csv` / :func:`read_csv` -- one row per object and frame.
- :func:`write_ctc` / :func:`read_ctc` -- the CTC format: ``man_track.txt`` (one line
  ``L B E P`` per track: label, first frame, last frame, parent label or 0) and one 16-bit
  ``maskTTT.tif`` per frame. CTC requires every track to be present on every frame from B
  to E, so a track with gaps is written as several labels, each later piece having the
  piece before it as parent (the CTC way of writing a gap); labels above 65535 are
  renumbered.
- :func:`write_geff` / :func:`read_geff` -- the Graph Exchange File Format through the
  ``geff`` package: one node per object and frame (``t, y, x`` axes, the record's values as
  properties, ``track_id`` as the tracklet property and ``lineage_id``), edges from each
  record to the next one of its track and from a parent's last record to each daughter's
  first.
"""

from __future__ import annotations

import csv
import math
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from .lineage import ObjectRecord, TrackGraph, consecutive_runs

__all__ = [
    "ctc_tracks",
    "read_csv",
    "read_ctc",
    "read_geff",
    "tracks_layer_data",
    "write_csv",
    "write_ctc",
    "write_geff",
]

_CTC_MAX_LABEL = 65535


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


def write_csv(graph: TrackGraph, path: str | Path) -> Path:
    """One row per object and frame; ``parent_id`` is the track's parent (0: none)."""
    path = Path(path)
    n = _channels(graph)
    names = _intensity_names(n) if n else []
    tmp = path.with_name(path.name + ".part")
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
    tmp.replace(path)
    return path


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


# ====================================================================== CTC
def ctc_tracks(labels: Any, graph: TrackGraph) -> tuple[dict[tuple[int, int], int], np.ndarray]:
    """CTC labels and rows for a label stack and its graph.

    Returns ``segment_label[(track_id, first_frame_of_piece)]`` and the ``L B E P`` rows
    (int64, sorted by L). Presence is read from ``labels`` (T, H, W); parents from ``graph``.
    """
    present: dict[int, list[int]] = {}
    for t in range(len(labels)):
        for i in np.unique(np.asarray(labels[t]))[1:].tolist():
            present.setdefault(int(i), []).append(t)
    pieces: dict[int, list[tuple[int, int]]] = {}
    for i, frames in present.items():
        pieces[i] = consecutive_runs(frames)
    needed = sum(len(r) for r in pieces.values())
    if needed > _CTC_MAX_LABEL:
        raise ValueError(f"{needed} track pieces do not fit CTC's 16-bit labels (at most {_CTC_MAX_LABEL})")
    renumber = bool(present) and max(present) > _CTC_MAX_LABEL
    if renumber:  # compact, in order of appearance
        order = sorted(((runs[0][0], i) for i, runs in pieces.items()))
        first_label = {i: k + 1 for k, (_, i) in enumerate(order)}
    else:
        first_label = {i: i for i in pieces}
    next_label = max(first_label.values(), default=0) + 1
    seg_label: dict[tuple[int, int], int] = {}
    for i in sorted(pieces, key=lambda i: first_label[i]):
        for k, (b, _) in enumerate(pieces[i]):
            if k == 0:
                seg_label[(i, b)] = first_label[i]
            else:
                seg_label[(i, b)] = next_label
                next_label += 1
    rows = []
    for i, runs in pieces.items():
        for k, (b, e) in enumerate(runs):
            if k:  # the piece after a gap continues the piece before it
                parent_label = seg_label[(i, runs[k - 1][0])]
            else:
                parent = graph[i].parent if i in graph else None
                parent_label = 0
                # a parent must end before its child starts (else the link is not CTC, and dropped)
                if parent is not None and parent in pieces and pieces[parent][-1][1] < b:
                    parent_label = seg_label[(parent, pieces[parent][-1][0])]
            rows.append((seg_label[(i, b)], b, e, parent_label))
    table = np.asarray(sorted(rows), dtype=np.int64).reshape(-1, 4)
    return seg_label, table


def write_ctc(labels: Any, graph: TrackGraph, folder: str | Path, overwrite: bool = False) -> Path:
    """Write ``man_track.txt`` and ``maskTTT.tif`` (uint16) for every frame into ``folder``.

    Frame numbers have 3 digits, 4 when the stack has more than 1000 frames (CTC's rule).
    The folder is written complete or not at all (built beside it, then moved in place).
    """
    import tifffile

    folder = Path(folder)
    if folder.exists() and any(folder.iterdir()) and not overwrite:
        raise FileExistsError(f"{folder} is not empty; pass overwrite=True to replace it")
    seg_label, table = ctc_tracks(labels, graph)
    T = len(labels)
    digits = 3 if T <= 1000 else 4
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        pieces_by_track: dict[int, list[int]] = {}
        for i, b in seg_label:
            pieces_by_track.setdefault(i, []).append(b)
        for starts in pieces_by_track.values():
            starts.sort()
        for t in range(T):
            frame = np.asarray(labels[t])
            ids = np.unique(frame)
            lut = np.zeros(len(ids), dtype=np.uint16)
            for k, i in enumerate(ids.tolist()):
                if i:
                    starts = pieces_by_track[int(i)]
                    b = starts[int(np.searchsorted(starts, t, side="right")) - 1]
                    lut[k] = seg_label[(int(i), b)]
            out = lut[np.searchsorted(ids, frame)]
            tifffile.imwrite(tmp / f"mask{t:0{digits}d}.tif", out, photometric="minisblack")
        np.savetxt(tmp / "man_track.txt", table, fmt="%d", delimiter=" ")
        if folder.exists():
            shutil.rmtree(folder)
        tmp.replace(folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def read_ctc(folder: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """``(labels (T, H, W) uint16, rows (N, 4) int64)`` of a CTC folder (``*_track.txt`` + masks)."""
    import tifffile

    folder = Path(folder)
    tracks = sorted(folder.glob("*_track.txt"))
    if len(tracks) != 1:
        raise FileNotFoundError(f"expected one *_track.txt in {folder}, found {len(tracks)}")
    masks = sorted(folder.glob("mask*.tif"), key=lambda p: int(p.stem[4:]))
    if not masks:
        raise FileNotFoundError(f"no mask*.tif in {folder}")
    labels = np.stack([tifffile.imread(p) for p in masks])
    rows = np.loadtxt(tracks[0], dtype=np.int64, ndmin=2).reshape(-1, 4)
    return labels, rows


# ====================================================================== GEFF
def write_geff(graph: TrackGraph, path: str | Path, overwrite: bool = False, **axis_kwargs: Any) -> Path:
    """Write the graph as a GEFF zarr group (see the module doc); needs the ``geff`` package.

    ``axis_kwargs`` (``axis_units``, ``axis_scales``...) go to ``geff.write``.
    """
    try:
        import geff
        import networkx as nx
        from geff_spec import Axis, GeffMetadata
    except ImportError as exc:
        raise ImportError(f"writing GEFF needs the geff package (pip install geff): {exc}") from exc

    path = Path(path)
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
        axes=[Axis(name="t", type="time"), Axis(name="y", type="space"), Axis(name="x", type="space")],
        node_props_metadata={},
        edge_props_metadata={},
        track_node_props={"tracklet": "track_id", "lineage": "lineage_id"},
        extra={"napari_sam2": {"parents": {str(t.track_id): t.parent or 0 for t in graph}}},
    )
    geff.write(g, str(path), metadata=metadata, overwrite=overwrite, **axis_kwargs)
    return path


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
