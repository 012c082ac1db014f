"""Cell Tracking Challenge files of a track graph: a RESULT folder (``res_track.txt`` +
``maskTTT.tif``, what the challenge's scorer reads) or a ground-truth TRA folder
(``man_track.txt`` + ``man_trackTTT.tif``), and reading either back.

``res_track.txt`` / ``man_track.txt`` hold one line ``L B E P`` per track (label, first frame,
last frame, parent label or 0); each ``maskTTT.tif`` is a 16-bit label image. CTC requires
every track to be present on every frame from B to E, so a track with gaps is written as
several labels, each later piece having the piece before it as parent (the CTC way of writing
a gap); labels above 65535 are renumbered. Imported through :mod:`.track_exports`.
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from napari_sam2.engine.cells.lineage import TrackGraph, consecutive_runs
from napari_sam2.engine.io._files import (
    OutputExistsError,
    OutputPathError,
    _temporary_sibling,
    check_output_path,
    discard_on_failure,
    make_folder,
    replace_owned_files,
)
from napari_sam2.errors import InputError, MissingFileError

__all__ = ["check_ctc", "ctc_tracks", "read_ctc", "write_ctc"]

_CTC_MAX_LABEL = 65535


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
        raise InputError(f"{needed} track pieces do not fit CTC's 16-bit labels (at most {_CTC_MAX_LABEL})")
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


#: The track file of each kind of CTC folder: a RESULT folder (what a tracker submits, read by
#: the challenge's scorer) and a ground-truth TRA folder (what the scorer compares it with).
_CTC_NAMES = {"result": ("res_track.txt", "mask"), "ground_truth": ("man_track.txt", "man_track")}


def _ctc_owned(kind: str) -> Any:
    """Whether a file name is one :func:`write_ctc` writes in a folder of ``kind``."""
    track_file, prefix = _CTC_NAMES[kind]
    pattern = re.compile(rf"{prefix}\d{{3,4}}\.tif")
    return lambda name: name == track_file or pattern.fullmatch(name) is not None


def _ctc_kind(ground_truth: bool) -> str:
    return "ground_truth" if ground_truth else "result"


def check_ctc(folder: str | Path, *, overwrite: bool = False, ground_truth: bool = False) -> Path:
    """Raise now what :func:`write_ctc` would raise for ``folder`` (an earlier output without
    ``overwrite``, a path that cannot be written); nothing is written."""
    folder = Path(folder).expanduser()
    if folder.exists() and not folder.is_dir():
        raise OutputPathError(f"{folder} is a file, not a folder; choose a folder for the CTC files", folder)
    if folder.is_dir():
        owned = _ctc_owned(_ctc_kind(ground_truth))
        old = sorted(p.name for p in folder.iterdir() if owned(p.name))
        if old and not overwrite:
            raise OutputExistsError(folder, f"already holds {old[0]} (an earlier output)")
        check_output_path(folder / "x")
    else:
        check_output_path(folder)
    return folder


def write_ctc(
    labels: Any, graph: TrackGraph, folder: str | Path, overwrite: bool = False, *, ground_truth: bool = False
) -> Path:
    """Write a Cell Tracking Challenge folder: a RESULT folder (``res_track.txt`` and one uint16
    ``maskTTT.tif`` per frame), or with ``ground_truth=True`` a TRA folder (``man_track.txt`` and
    ``man_trackTTT.tif``: name it ``<sequence>_GT/TRA``) for scoring against.

    Frame numbers have 3 digits, 4 when the stack has more than 1000 frames (CTC's rule). The
    files are built in a temporary folder and moved in once complete. Other files in ``folder``
    are never touched; earlier files of this kind (the track file, masks) are refused unless
    ``overwrite``, which replaces them all (masks of frames the new output lacks included).
    Folders and files get the user's umask.
    """
    import tifffile

    folder = check_ctc(folder, overwrite=overwrite, ground_truth=ground_truth)
    kind = _ctc_kind(ground_truth)
    track_file, prefix = _CTC_NAMES[kind]
    seg_label, table = ctc_tracks(labels, graph)
    T = len(labels)
    digits = 3 if T <= 1000 else 4
    if folder.is_dir():  # built inside, so that only the folder itself needs to be writable
        tmp = folder / f".ctc.part-{uuid.uuid4().hex[:8]}"
    else:
        make_folder(folder.parent)
        tmp = _temporary_sibling(folder, "")
    with discard_on_failure(tmp, folder):
        tmp.mkdir()  # plain mkdir: the user's umask (a tempfile.mkdtemp folder would be 0700)
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
            tifffile.imwrite(tmp / f"{prefix}{t:0{digits}d}.tif", out, photometric="minisblack")
        np.savetxt(tmp / track_file, table, fmt="%d", delimiter=" ")
        replace_owned_files(tmp, folder, _ctc_owned(kind), overwrite)
    return folder


def read_ctc(folder: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """``(labels (T, H, W) uint16, rows (N, 4) int64)`` of a CTC folder (``*_track.txt`` + masks),
    a result folder (``maskTTT.tif``) or a TRA folder (``man_trackTTT.tif``)."""
    import tifffile

    folder = Path(folder)
    tracks = sorted(folder.glob("*_track.txt"))
    if len(tracks) != 1:
        raise MissingFileError(f"expected one *_track.txt in {folder}, found {len(tracks)}")
    numbered = [(re.fullmatch(r"(?:mask|man_track)(\d+)\.tif", p.name), p) for p in folder.glob("*.tif")]
    masks = [p for _, p in sorted((int(m.group(1)), p) for m, p in numbered if m)]
    if not masks:
        raise MissingFileError(f"no maskTTT.tif (or man_trackTTT.tif) in {folder}")
    labels = np.stack([tifffile.imread(p) for p in masks])
    if tracks[0].stat().st_size == 0:  # no track at all (a blank result): loadtxt would warn
        return labels, np.zeros((0, 4), dtype=np.int64)
    rows = np.loadtxt(tracks[0], dtype=np.int64, ndmin=2).reshape(-1, 4)
    return labels, rows
