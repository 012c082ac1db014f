"""Seeded synthetic microscopy data with ground truth.

Three generators, all deterministic for a given seed and fast enough for benchmarks
(a 400-frame 256x256 time-lapse takes a couple of seconds):

- :func:`synthetic_timelapse` -- 2D+t fluorescence-like time-lapse of elliptical cells
  with textured interiors drifting smoothly over an uneven background. One cell divides
  partway through (its daughters get new ids), and two cells drift into contact.
- :func:`synthetic_lineage_timelapse` -- the same kind of cells with enough events to score
  a tracker: several divisions (one of a daughter), cells entering and leaving the field,
  a pair in contact; returns the ground-truth lineage in the Cell Tracking Challenge's
  ``L B E P`` form besides the labels.
- :func:`synthetic_volume` -- a 3D stack of ellipsoidal blobs.

Both return ``(image, labels)``: ``image`` is ``uint16`` with Poisson (shot) and Gaussian
(read) noise, ``labels`` is the ``uint16`` ground truth (0 = background, ids stable over
time). :func:`make_timelapse_sample` and :func:`make_volume_sample` wrap them as napari
``LayerDataTuple`` lists for the npe2 ``sample_data`` contributions.

:func:`save_sample` writes a sample as TIFF files, to try the command line on it::

    python -m napari_sam2.plugin.sample_data lineage sample/
    napari-sam2 track-all sample/lineage.tif results/

Only numpy is used, so the generators work without napari or Qt.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

from napari_sam2.errors import AlreadyExistsError, InputError, NotAFolderError

__all__ = [
    "SAMPLES",
    "make_timelapse_sample",
    "make_volume_sample",
    "save_sample",
    "synthetic_timelapse",
    "synthetic_volume",
]

# Fractions of the normalised time s in [0, 1] at which the scripted events happen.
DIVISION_AT = 0.45  # the mother cell (id 1) splits into two new ids at this time
CONTACT_FROM, CONTACT_TO = 0.55, 0.8  # cells 2 and 3 overlap/touch during this span

_BACKGROUND = 900.0  # mean background level (photon counts, before the vignette)
_READ_NOISE = 25.0  # Gaussian read noise (counts)
_OFFSET = 100.0  # camera offset (counts)


def _smoothstep(x):
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def _background(shape, rng) -> np.ndarray:
    """Smooth uneven illumination: a tilted gradient times a vignette (float64, counts)."""
    h, w = shape
    yy = np.linspace(-1.0, 1.0, h)[:, None]
    xx = np.linspace(-1.0, 1.0, w)[None, :]
    gy, gx = rng.uniform(-0.25, 0.25, size=2)
    cy, cx = rng.uniform(-0.3, 0.3, size=2)
    gradient = 1.0 + gy * yy + gx * xx
    vignette = np.exp(-0.35 * ((yy - cy) ** 2 + (xx - cx) ** 2))
    return _BACKGROUND * gradient * vignette * 1.1


def _add_noise(expected: np.ndarray, rng) -> np.ndarray:
    """Shot noise on the expected photon counts plus camera read noise, as uint16."""
    counts = rng.poisson(expected).astype(np.float32)
    counts += rng.normal(_OFFSET, _READ_NOISE, size=expected.shape).astype(np.float32)
    return np.clip(np.rint(counts), 0, 65535).astype(np.uint16)


class _Cell:
    """An elliptical cell with a texture that moves and rotates with it."""

    def __init__(self, rng, radius: float, brightness: float):
        self.a = radius * rng.uniform(1.05, 1.35)  # semi-major axis (pixels)
        self.b = radius * rng.uniform(0.75, 0.95)  # semi-minor axis
        self.brightness = brightness
        self.angle0 = rng.uniform(0, np.pi)
        self.spin = rng.uniform(-0.6, 0.6)  # radians over the whole movie
        self.breath_phase = rng.uniform(0, 2 * np.pi)
        # texture: a few oriented cosines in cell-local units, plus a brighter nucleus
        k = 4
        self.tex_freq = rng.uniform(1.5, 5.0, size=k) / radius
        self.tex_dir = rng.uniform(0, 2 * np.pi, size=k)
        self.tex_phase = rng.uniform(0, 2 * np.pi, size=k)
        self.tex_amp = rng.uniform(0.04, 0.1, size=k)
        self.nuc_offset = rng.uniform(-0.25, 0.25, size=2)
        self.nuc_size = rng.uniform(0.35, 0.5)

    def axes_angle(self, s: float, stretch: float = 1.0, scale: float = 1.0):
        breath = 1.0 + 0.05 * np.sin(2 * np.pi * 1.5 * s + self.breath_phase)
        a = self.a * breath * stretch * scale
        b = self.b * breath / np.sqrt(stretch) * scale
        return a, b, self.angle0 + self.spin * s

    def extent(self, direction, a, b, angle) -> float:
        """Distance from the centre to the boundary along the unit vector ``direction``."""
        phi = np.arctan2(direction[0], direction[1]) - angle
        return a * b / np.hypot(b * np.cos(phi), a * np.sin(phi))


def _paint(image, labels, label_id, cell: _Cell, center, a, b, angle):
    """Draw one ellipse (soft-edged, textured) into ``image`` and its id into ``labels``."""
    h, w = labels.shape
    r = max(a, b) + 3
    y0, y1 = max(int(center[0] - r), 0), min(int(center[0] + r) + 2, h)
    x0, x1 = max(int(center[1] - r), 0), min(int(center[1] + r) + 2, w)
    if y0 >= y1 or x0 >= x1:
        return
    dy = np.arange(y0, y1, dtype=np.float64)[:, None] - center[0]
    dx = np.arange(x0, x1, dtype=np.float64)[None, :] - center[1]
    c, s = np.cos(angle), np.sin(angle)
    u = dx * c + dy * s  # along the major axis
    v = -dx * s + dy * c  # along the minor axis
    rho = np.sqrt((u / a) ** 2 + (v / b) ** 2)  # 1 on the boundary
    inside = rho <= 1.0
    # soft membrane-like edge: intensity falls off over ~1.5 px around rho = 1
    edge = 1.0 / (1.0 + np.exp((rho - 1.0) * min(a, b) / 0.7))
    tex = np.ones_like(rho)
    for f, d, p, amp in zip(cell.tex_freq, cell.tex_dir, cell.tex_phase, cell.tex_amp):
        tex += amp * np.cos(f * (u * np.cos(d) + v * np.sin(d)) + p)
    nu = (u / a - cell.nuc_offset[0]) / cell.nuc_size
    nv = (v / b - cell.nuc_offset[1]) / cell.nuc_size
    tex += 0.35 * np.exp(-(nu**2 + nv**2) * 2.0)
    patch = image[y0:y1, x0:x1]
    lab = labels[y0:y1, x0:x1]
    # alpha-composite: a later (upper) cell covers what lies beneath it
    patch *= 1.0 - edge
    patch += cell.brightness * tex * edge
    lab[inside] = label_id


def synthetic_timelapse(
    n_frames: int = 40,
    shape: tuple[int, int] = (256, 256),
    n_cells: int = 6,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """A seeded fluorescence-like time-lapse of drifting cells with ground truth.

    Parameters
    ----------
    n_frames : int
        Number of time points T.
    shape : (int, int)
        Frame size (H, W).
    n_cells : int
        Cells present in the first frame (>= 1). Cell 1 divides at 45% of the movie into
        two daughters with new ids ``n_cells + 1`` and ``n_cells + 2``; cells 2 and 3 (when
        ``n_cells >= 3``) drift together and touch between 55% and 80% of the movie.
    seed : int
        Seed of everything random (positions, sizes, textures, noise).

    Returns
    -------
    image : np.ndarray, uint16, (T, H, W)
        Background ~500-1500 counts with a smooth gradient and vignette, cells several
        thousand counts, Poisson + Gaussian noise.
    labels : np.ndarray, uint16, (T, H, W)
        Ground-truth instance labels, ids stable over time.
    """
    if n_frames < 1:
        raise InputError(f"n_frames must be >= 1, got {n_frames}")
    if n_cells < 1:
        raise InputError(f"n_cells must be >= 1, got {n_cells}")
    h, w = (int(shape[0]), int(shape[1]))
    rng = np.random.default_rng(seed)
    unit = min(h, w) / 256.0
    radius = 14.0 * unit

    background = _background((h, w), rng)
    cells = [_Cell(rng, radius, rng.uniform(2500, 5000)) for _ in range(n_cells)]
    # the daughters take after their mother, a bit smaller
    mother = cells[0]
    daughters = []
    for _ in range(2):
        d = _Cell(rng, radius * 0.78, mother.brightness * rng.uniform(0.95, 1.1))
        d.angle0 = mother.angle0 + mother.spin * DIVISION_AT + rng.uniform(-0.3, 0.3)
        daughters.append(d)

    def frac(y, x):
        return np.array([y * h, x * w], dtype=np.float64)

    # smooth drift for every cell: anchor + linear drift + gentle wobble (pixels)
    anchors = [frac(0.28, 0.28)]  # dividing cell, top-left
    if n_cells >= 2:
        anchors.append(frac(0.72, 0.25))  # left member of the touching pair
    if n_cells >= 3:
        anchors.append(frac(0.72, 0.64))  # right member; its path is scripted below
    free_slots = [(0.22, 0.74), (0.47, 0.52), (0.92, 0.5), (0.47, 0.9), (0.47, 0.1), (0.1, 0.5)]
    for k in range(len(anchors), n_cells):
        if k - 3 < len(free_slots) and k >= 3:
            y, x = free_slots[k - 3]
        else:  # more cells than slots (or n_cells == 2): anywhere, may overlap others
            y, x = rng.uniform(0.12, 0.88, size=2)
        anchors.append(frac(y, x))
    drift = rng.uniform(-8, 8, size=(n_cells, 2)) * unit
    wobble_amp = rng.uniform(1.5, 3.5, size=(n_cells, 2)) * unit
    wobble_phase = rng.uniform(0, 2 * np.pi, size=(n_cells, 2))
    wobble_freq = rng.uniform(0.7, 1.5, size=(n_cells, 2))
    if n_cells >= 2:
        drift[1] = np.array([rng.uniform(-4, 4), rng.uniform(8, 16)]) * unit  # towards cell 3
    contact_dir = np.array([rng.uniform(-0.25, 0.25), 1.0])
    contact_dir /= np.linalg.norm(contact_dir)
    split_dir_angle = mother.angle0 + mother.spin * DIVISION_AT  # daughters part along the long axis

    def centre(k, s):
        return (
            anchors[k]
            + drift[k] * s
            + wobble_amp[k] * np.sin(2 * np.pi * wobble_freq[k] * s + wobble_phase[k])
        )

    image = np.empty((n_frames, h, w), dtype=np.uint16)
    labels = np.zeros((n_frames, h, w), dtype=np.uint16)
    frame = np.empty((h, w), dtype=np.float64)
    for t in range(n_frames):
        s = t / max(n_frames - 1, 1)
        frame[...] = background
        lab = labels[t]
        for k in range(n_cells):
            cell = cells[k]
            if k == 0:
                if s < DIVISION_AT:
                    # the mother elongates as division approaches
                    stretch = 1.0 + 0.45 * _smoothstep((s - (DIVISION_AT - 0.15)) / 0.15)
                    a, b, ang = cell.axes_angle(s, stretch=stretch)
                    _paint(frame, lab, 1, cell, centre(0, s), a, b, ang)
                else:
                    q = _smoothstep((s - DIVISION_AT) / 0.25)
                    c0 = centre(0, s)
                    direction = np.array([np.sin(split_dir_angle), np.cos(split_dir_angle)])
                    for j, d in enumerate(daughters):
                        a, b, ang = d.axes_angle(s)
                        half = (0.85 + 0.9 * q) * d.extent(direction, a, b, ang)
                        sign = -1.0 if j == 0 else 1.0
                        _paint(frame, lab, n_cells + 1 + j, d, c0 + sign * half * direction, a, b, ang)
            elif k == 2:
                # scripted to approach cell 2 along contact_dir, overlap slightly, then part
                a1, b1, ang1 = cells[1].axes_angle(s)
                a, b, ang = cell.axes_angle(s)
                reach = cells[1].extent(contact_dir, a1, b1, ang1) + cell.extent(-contact_dir, a, b, ang)
                far = np.linalg.norm(anchors[2] - anchors[1]) / reach
                approach = _smoothstep(s / CONTACT_FROM)
                part = _smoothstep((s - CONTACT_TO) / (1.0 - CONTACT_TO + 1e-9))
                gap = far + (0.9 - far) * approach + 0.35 * part  # 0.9: boundaries overlap
                _paint(frame, lab, 3, cell, centre(1, s) + contact_dir * reach * gap, a, b, ang)
            else:
                a, b, ang = cell.axes_angle(s)
                _paint(frame, lab, k + 1, cell, centre(k, s), a, b, ang)
        image[t] = _add_noise(frame, rng)
    return image, labels


def synthetic_volume(
    shape: tuple[int, int, int] = (48, 256, 256),
    n_objects: int = 4,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """A seeded 3D stack of textured ellipsoids with ground truth.

    Voxels are treated as 3x deeper than wide (as in a typical confocal stack), so the
    objects look flattened along Z in voxel space. Brightness falls off with depth.

    Returns ``(image uint16 (Z, Y, X), labels uint16 (Z, Y, X))`` with ids ``1..n_objects``.
    """
    if n_objects < 0:
        raise InputError(f"n_objects must be >= 0, got {n_objects}")
    nz, ny, nx = (int(v) for v in shape)
    rng = np.random.default_rng(seed)
    z_step = 3.0  # voxel depth in units of the lateral pixel size
    unit = min(ny, nx) / 256.0
    radius = 26.0 * unit

    zz = np.linspace(0.0, 1.0, nz)[:, None, None]
    expected = np.broadcast_to(_background((ny, nx), rng)[None], (nz, ny, nx)).copy()
    expected *= 0.8 + 0.2 * (1.0 - zz)
    labels = np.zeros((nz, ny, nx), dtype=np.uint16)

    # centres in physical units (z in lateral pixels), kept apart by rejection sampling
    centres: list[np.ndarray] = []
    lo = np.array([0.25 * nz * z_step, 0.15 * ny, 0.15 * nx])
    hi = np.array([0.75 * nz * z_step, 0.85 * ny, 0.85 * nx])
    for _ in range(n_objects):
        for _attempt in range(200):
            c = rng.uniform(lo, hi)
            if all(np.linalg.norm(c - o) > 2.3 * radius for o in centres):
                break
        centres.append(c)

    for i, c in enumerate(centres, start=1):
        semi = radius * rng.uniform(0.6, 1.1, size=3)  # physical semi-axes
        q, _ = np.linalg.qr(rng.normal(size=(3, 3)))  # random rotation
        brightness = rng.uniform(2500, 5000)
        freq = rng.uniform(1.5, 4.0, size=3) / radius
        phase = rng.uniform(0, 2 * np.pi, size=3)
        r = semi.max() + 2
        z0, z1 = max(int((c[0] - r) / z_step), 0), min(int((c[0] + r) / z_step) + 2, nz)
        y0, y1 = max(int(c[1] - r), 0), min(int(c[1] + r) + 2, ny)
        x0, x1 = max(int(c[2] - r), 0), min(int(c[2] + r) + 2, nx)
        if z0 >= z1 or y0 >= y1 or x0 >= x1:
            continue
        pz = np.arange(z0, z1)[:, None, None] * z_step - c[0]
        py = np.arange(y0, y1)[None, :, None] - c[1]
        px = np.arange(x0, x1)[None, None, :] - c[2]
        # local (rotated) coordinates
        loc = [q[0, j] * pz + q[1, j] * py + q[2, j] * px for j in range(3)]
        rho = np.sqrt(sum((loc[j] / semi[j]) ** 2 for j in range(3)))
        inside = rho <= 1.0
        edge = 1.0 / (1.0 + np.exp((rho - 1.0) * semi.min() / 1.0))
        tex = 1.0 + sum(0.08 * np.cos(freq[j] * loc[j] + phase[j]) for j in range(3))
        tex = tex + 0.3 * np.exp(-2.5 * rho**2)
        block = expected[z0:z1, y0:y1, x0:x1]
        block *= 1.0 - edge
        block += brightness * tex * edge * (0.8 + 0.2 * (1.0 - zz[z0:z1]))
        labels[z0:z1, y0:y1, x0:x1][inside] = i

    return _add_noise(expected, rng), labels


def _layers(image: np.ndarray, labels: np.ndarray, name: str) -> list[tuple]:
    lo, hi = np.percentile(image[:: max(1, image.shape[0] // 8)], [0.5, 99.8])
    return [
        (image, {"name": name, "colormap": "gray", "contrast_limits": [float(lo), float(hi)]}, "image"),
        (labels, {"name": "ground truth", "opacity": 0.35, "visible": False}, "labels"),
    ]


def make_timelapse_sample() -> list[tuple]:
    """npe2 sample data: 40-frame synthetic time-lapse (image + ground-truth labels)."""
    image, labels = synthetic_timelapse()
    return _layers(image, labels, "synthetic time-lapse")


def make_volume_sample() -> list[tuple]:
    """npe2 sample data: 48-slice synthetic volume (image + ground-truth labels)."""
    image, labels = synthetic_volume()
    return _layers(image, labels, "synthetic volume")


# the samples save_sample writes (the keys of napari's File > Open Sample > SAM 2 menu)
SAMPLES = ("timelapse", "volume", "lineage")


def save_sample(which: str, folder: str | os.PathLike, overwrite: bool = False) -> list[Path]:
    """Write sample ``which`` ("timelapse", "volume" or "lineage") into ``folder`` as
    ``<which>.tif`` (the image, an ImageJ TIFF: T or Z, Y, X) and ``<which>_truth.tif`` (the
    ground-truth labels); "lineage" also as ``<which>_man_track.txt`` (its lineage, the Cell
    Tracking Challenge's ``L B E P`` rows). Files there already are replaced only with
    ``overwrite=True`` (else FileExistsError names them, and nothing is written).
    Returns the files written."""
    import tifffile

    if which not in SAMPLES:
        raise InputError(f"unknown sample {which!r}: choose one of {', '.join(SAMPLES)}")
    folder = Path(folder).expanduser()
    if folder.exists() and not folder.is_dir():
        raise NotAFolderError(f"{folder} is a file, not a folder: give a folder for the sample's files")
    names = [f"{which}.tif", f"{which}_truth.tif"] + (
        [f"{which}_man_track.txt"] if which == "lineage" else []
    )
    paths = [folder / n for n in names]
    existing = [p for p in paths if p.exists()]
    if existing and not overwrite:
        raise AlreadyExistsError(
            f"{', '.join(map(str, existing))} already exist{'s' if len(existing) == 1 else ''}: choose "
            "another folder, or replace them with overwrite=True (--overwrite)"
        )
    lineage = None
    if which == "lineage":
        from .sample_lineage import synthetic_lineage_timelapse

        image, labels, lineage = synthetic_lineage_timelapse()
    elif which == "volume":
        image, labels = synthetic_volume()
    else:
        image, labels = synthetic_timelapse()
    axes = "ZYX" if which == "volume" else "TYX"
    folder.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(paths[0], image, imagej=True, metadata={"axes": axes})
    tifffile.imwrite(paths[1], labels, imagej=True, metadata={"axes": axes})
    if lineage is not None:
        np.savetxt(paths[2], lineage, fmt="%d")
    return paths


def main(argv: list[str] | None = None) -> int:
    """``python -m napari_sam2.plugin.sample_data [timelapse|volume|lineage] [FOLDER] [--overwrite]``."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m napari_sam2.plugin.sample_data",
        description="Save a synthetic sample (image + ground truth) as TIFF files, to try the CLI on.",
    )
    parser.add_argument("sample", choices=SAMPLES, nargs="?", default="lineage")
    parser.add_argument(
        "folder", nargs="?", default="napari-sam2-sample", help="where (default: %(default)s)"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace the sample's files there")
    args = parser.parse_args(argv)
    try:
        paths = save_sample(args.sample, args.folder, overwrite=args.overwrite)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for p in paths:
        print(f"wrote {p}")
    command = "track-all" if args.sample == "lineage" else "track"
    print(f"try: napari-sam2 {command} {paths[0]} ... (napari-sam2 {command} --help)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
