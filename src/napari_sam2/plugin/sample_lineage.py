"""Seeded synthetic time-lapse with a known lineage: cells that divide (a daughter too),
enter and leave the field, and touch, with the ground-truth labels and the Cell Tracking
Challenge lineage table (numpy only). For the "Track all cells" workflow and its benchmark."""

from __future__ import annotations

import numpy as np

from napari_sam2.errors import InputError, StateError

from .sample_data import _add_noise, _background, _Cell, _layers, _paint, _smoothstep

__all__ = ["make_lineage_sample", "synthetic_lineage_timelapse"]

_GAP = 3.0  # pixels kept free between cells that are not scripted to touch (daughters too, at birth)


class _SimCell:
    """One cell of the lineage simulation: its look, position, velocity and fate."""

    def __init__(self, label: int, look: _Cell, pos, vel, born: int, parent: int = 0, scale0: float = 1.0):
        self.label, self.look, self.born, self.parent, self.scale0 = label, look, born, parent, scale0
        self.pos = np.asarray(pos, dtype=np.float64)
        self.vel = np.asarray(vel, dtype=np.float64)
        self.divide_at: int | None = None  # the daughters' first frame
        self.mode = "free"  # free | enter | leave
        self.leave_at = 0
        self.heading = np.zeros(2)  # unit vector in or out of the field (enter/leave)

    def geometry(self, t: int, s: float):
        growth = self.scale0 + (1.0 - self.scale0) * _smoothstep((t - self.born) / 12.0)
        stretch = 1.0
        if self.divide_at is not None:  # elongates over the 6 frames before it divides
            stretch = 1.0 + 0.6 * _smoothstep((t - (self.divide_at - 7)) / 6.0)
        return self.look.axes_angle(s, stretch=stretch, scale=growth)

    def reach(self, t: int, s: float) -> float:
        a, b, _ = self.geometry(t, s)
        return max(a, b) + 1.0  # a circle that holds the ellipse


def _lineage_from_labels(labels: np.ndarray, parents: dict[int, int]) -> np.ndarray:
    """CTC rows ``L B E P`` (int64) from a label stack; each id must be present in one run of frames."""
    present: dict[int, list[int]] = {}
    for t, lab in enumerate(labels):
        for i in np.unique(lab)[1:].tolist():
            present.setdefault(i, []).append(t)
    rows = []
    for i in sorted(present):
        frames = present[i]
        if frames[-1] - frames[0] + 1 != len(frames):  # a scripting error, never expected
            raise StateError(f"cell {i} vanishes and comes back: {frames}")
        parent = parents.get(i, 0)
        rows.append((i, frames[0], frames[-1], parent if parent in present else 0))
    return np.asarray(rows, dtype=np.int64).reshape(-1, 4)


def synthetic_lineage_timelapse(
    n_frames: int = 60,
    shape: tuple[int, int] = (256, 256),
    n_cells: int = 9,
    n_divisions: int = 4,
    n_entering: int = 3,
    n_leaving: int = 2,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A seeded time-lapse with the events a cell tracker is scored on, and its lineage.

    Cells drift with persistent random motion and keep a few pixels apart, except one
    scripted pair that comes into contact (boundaries touching, slightly overlapping) and
    parts again. ``n_divisions`` divisions happen between 20 % and 80 % of the movie, one of
    them a daughter's (a second generation); a mother elongates before it divides and its
    daughters are born a few pixels apart, on either side of where it was, and grow.
    ``n_entering`` cells glide in across the border, ``n_leaving`` glide out. As in Cell
    Tracking Challenge ground truth, a cell's label is present in every frame from its first
    to its last one, partial cells at the border included.

    Parameters
    ----------
    n_frames : int
        Number of time points T (>= 20, so that every scripted event fits).
    shape : (int, int)
        Frame size (H, W); at least 128 x 128.
    n_cells : int
        Cells in the first frame, including the contact pair and the ``n_leaving`` cells
        (so at least ``n_leaving + 2``).
    n_divisions, n_entering, n_leaving : int
        How many of each event (fewer divisions happen if too few cells can divide).
    seed : int
        Seed of everything random.

    Returns
    -------
    image : np.ndarray, uint16, (T, H, W)
        Fluorescence-like frames with noise, as :func:`synthetic_timelapse`.
    labels : np.ndarray, uint16, (T, H, W)
        Ground-truth instance labels; ids are assigned in order of appearance.
    tracks : np.ndarray, int64, (N, 4)
        One row per label: ``L B E P`` -- label, first frame, last frame, parent label
        (0 = none): the content of a CTC ``man_track.txt``.
    """
    h, w = (int(shape[0]), int(shape[1]))
    if n_frames < 20:
        raise InputError(f"n_frames must be >= 20 so that every scripted event fits, got {n_frames}")
    if min(h, w) < 128:
        raise InputError(f"shape must be at least 128 x 128, got {h} x {w}")
    if min(n_divisions, n_entering, n_leaving) < 0:
        raise InputError("n_divisions, n_entering and n_leaving must be >= 0")
    if n_cells < n_leaving + 2:
        raise InputError(f"n_cells must be >= n_leaving + 2 (the contact pair), got {n_cells}")
    rng = np.random.default_rng(seed)
    T = n_frames
    unit = min(h, w) / 256.0
    radius = 11.0 * unit
    size = np.array([h, w], dtype=np.float64)
    background = _background((h, w), rng)
    cells: list[_SimCell] = []
    parents: dict[int, int] = {}

    def new_cell(pos, vel, born, parent=0, scale0=1.0, look=None) -> _SimCell:
        look = look or _Cell(rng, radius, rng.uniform(2500, 5000))
        cell = _SimCell(len(cells) + 1, look, pos, vel, born, parent, scale0)
        cells.append(cell)
        parents[cell.label] = parent
        return cell

    # -- the first frame: contact pair, leavers (near distinct edges), then the rest
    pair_y = h * rng.uniform(0.6, 0.75)
    pair = [
        new_cell((pair_y, w * 0.4), (0, 0), 0),
        new_cell((pair_y + rng.uniform(-4, 4) * unit, w * 0.6), (0, 0), 0),
    ]
    edges = [np.array(e, dtype=np.float64) for e in ((-1, 0), (0, 1), (1, 0), (0, -1))]
    for k in range(n_leaving):
        out = edges[(k + int(rng.integers(4))) % 4]
        along = rng.uniform(0.25, 0.75, size=2) * size
        pos = np.where(out != 0, np.where(out > 0, size - 2.6 * radius, 2.6 * radius), along)
        cell = new_cell(pos, (0, 0), 0)
        cell.mode, cell.heading = "leave", out
        cell.leave_at = int(rng.uniform(0.25, 0.6) * T)
    while len(cells) < n_cells:
        for _attempt in range(500):
            pos = rng.uniform(2.5 * radius, size - 2.5 * radius)
            if all(np.linalg.norm(pos - c.pos) > 3.4 * radius for c in cells):
                break
        new_cell(pos, rng.normal(0, 0.5, 2) * unit, 0)

    # -- who divides when: free cells nearest the centre, spread over the movie
    free = sorted((c for c in cells[2:] if c.mode == "free"), key=lambda c: np.linalg.norm(c.pos - size / 2))
    n_first = min(len(free), max(n_divisions - 1, 0) if n_divisions > 1 else n_divisions)
    times = np.linspace(0.2, 0.55, max(n_first, 1))[:n_first] * T
    for cell, t_div in zip(free[:n_first], times):
        cell.divide_at = max(int(round(t_div)), 8)
    second_gen = n_divisions - n_first  # divisions left for a daughter
    enter_at = sorted(int(v) for v in rng.uniform(0.15, 0.7, size=n_entering) * T)
    contact = (int(0.25 * T), int(0.45 * T), int(0.65 * T))  # approach, hold, release

    image = np.empty((T, h, w), dtype=np.uint16)
    labels = np.zeros((T, h, w), dtype=np.uint16)
    frame = np.empty((h, w), dtype=np.float64)
    alive = list(cells)
    for t in range(T):
        s = t / (T - 1)
        # -- events: divisions, then entries
        for mother in [c for c in alive if c.divide_at == t]:
            _, _, ang = mother.geometry(t - 1, (t - 1) / (T - 1))
            axis = np.array([np.sin(ang), np.cos(ang)])
            alive.remove(mother)
            for sign in (-1.0, 1.0):
                look = _Cell(rng, radius * 0.9, mother.look.brightness * rng.uniform(0.95, 1.1))
                look.angle0 = ang - look.spin * s + rng.uniform(-0.2, 0.2)  # along the mother's axis
                d = new_cell(mother.pos, mother.vel + sign * 0.6 * unit * axis, t, mother.label, 0.75, look)
                d.pos = mother.pos + sign * (d.reach(t, s) + _GAP / 2 + 0.5) * axis
                alive.append(d)
                if second_gen > 0 and sign < 0 and t + max(14, int(0.25 * T)) <= 0.8 * T:
                    d.divide_at, second_gen = t + max(14, int(0.25 * T)), second_gen - 1
        while enter_at and enter_at[0] == t:
            enter_at.pop(0)
            inward = edges[int(rng.integers(4))]
            along = rng.uniform(0.3, 0.7, size=2) * size
            cell = new_cell((0, 0), (0, 0), t)
            start = np.where(inward > 0, -cell.reach(t, s), size + cell.reach(t, s))
            cell.pos = np.where(inward != 0, start, along)
            cell.mode, cell.heading = "enter", inward
            alive.append(cell)
        # -- motion
        for c in alive:
            r = c.reach(t, s)
            if c.mode == "enter":
                c.vel = c.heading * 2.5 * unit
                if np.all((c.pos > r + 4) & (c.pos < size - r - 4)):
                    c.mode = "free"
            elif c.mode == "leave" and t >= c.leave_at:
                c.vel = c.heading * 2.5 * unit
            else:
                c.vel = 0.8 * c.vel + rng.normal(0, 0.35, 2) * unit
                speed = np.linalg.norm(c.vel)
                if speed > 1.2 * unit:
                    c.vel *= 1.2 * unit / speed
                # stay in the field (a leaver until it leaves)
                c.vel += 0.4 * unit * ((c.pos < r + 6).astype(float) - (c.pos > size - r - 6))
        if contact[0] <= t < contact[2]:
            a, b = pair
            gap = b.pos - a.pos
            dist = np.linalg.norm(gap)
            line = gap / max(dist, 1e-9)
            ra, rb = (c.geometry(t, s) for c in pair)
            touch = 0.95 * (a.look.extent(line, *ra) + b.look.extent(-line, *rb))
            step = float(np.clip((dist - touch) / 2, 0.0, 1.5 * unit))
            a.vel, b.vel = line * step, -line * step
        for c in alive:
            c.pos = c.pos + c.vel
        # -- keep apart (the contact pair only while it is not scripted together)
        reach = {c.label: c.reach(t, s) for c in alive}
        together = {pair[0].label, pair[1].label} if contact[0] <= t < contact[2] else set()
        for _ in range(2):
            for i, a in enumerate(alive):
                for b in alive[i + 1 :]:
                    if a.label in together and b.label in together:
                        continue
                    gap = b.pos - a.pos
                    dist = np.hypot(gap[0], gap[1])
                    need = reach[a.label] + reach[b.label] + _GAP
                    if dist >= need:
                        continue
                    line = gap / dist if dist > 1e-9 else np.array([0.0, 1.0])
                    push = min((need - dist) / 2, 1.5 * unit)
                    # a cell gliding in is never pushed back out (its label must not blink)
                    pa, pb = (push, push)
                    if a.mode == "enter":
                        pa, pb = 0.0, 2 * push
                    elif b.mode == "enter":
                        pa, pb = 2 * push, 0.0
                    a.pos, b.pos = a.pos - pa * line, b.pos + pb * line
        # -- leavers that are fully out are gone
        alive = [c for c in alive if np.all((c.pos > -reach[c.label]) & (c.pos < size + reach[c.label]))]
        # -- paint
        frame[...] = background
        for c in sorted(alive, key=lambda c: c.label):
            a, b, ang = c.geometry(t, s)
            _paint(frame, labels[t], c.label, c.look, c.pos, a, b, ang)
        image[t] = _add_noise(frame, rng)
    return image, labels, _lineage_from_labels(labels, parents)


def make_lineage_sample() -> list[tuple]:
    """npe2 sample data: 60 frames of dividing, entering and leaving cells (image + ground truth),
    for the "Track all cells" workflow."""
    image, labels, _ = synthetic_lineage_timelapse()
    return _layers(image, labels, "synthetic dividing cells")
