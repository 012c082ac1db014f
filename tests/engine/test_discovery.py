"""Discovery: new objects found only where the frame is not covered by tracked ones (engine/cells/discovery.py)."""

from __future__ import annotations

import numpy as np
import pytest
from fakes import FakePointPredictor, GroundTruthMaskGenerator, GroundTruthPredictor

from napari_sam2.engine.cells.discovery import (
    DiscoveryConfig,
    discover_objects,
    prompt_points,
    prompted_masks,
    uncovered_foreground,
)
from napari_sam2.engine.cells.seeding import SeedFilter
from napari_sam2.engine.cells.track_all import TrackAllConfig, TrackAllRun, TrackStarted
from napari_sam2.engine.cells.track_rules import DivisionRule


def disc(shape, center, r):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - center[0]) ** 2 + (xx - center[1]) ** 2 <= r * r


def scene(shape=(64, 64), cells=((16, 16, 5), (40, 44, 6), (50, 12, 4))):
    labels = np.zeros(shape, np.int32)
    for i, (y, x, r) in enumerate(cells, start=1):
        labels[disc(shape, (y, x), r)] = i
    return labels


class CountingGenerator:
    """GroundTruth-style generator for one frame: every label's mask; counts its calls."""

    def __init__(self, labels):
        self.labels = labels
        self.calls = 0

    def __call__(self, frame):
        self.calls += 1
        ids = [i for i in np.unique(self.labels) if i]
        return np.stack([self.labels == i for i in ids]), np.full(len(ids), 0.9)


# ----------------------------------------------------------------------------- pure functions


def test_uncovered_foreground_excludes_tracked_objects_their_rims_and_specks():
    labels = scene()
    image = (labels > 0) * 1000.0
    image[2, 60] = 1000.0  # a one-pixel speck: below min_area
    tracked = np.where(labels == 1, 7, 0)  # cell 1 tracked (id 7), cells 2 and 3 not
    tracked[disc(labels.shape, (16, 16), 4)] = 7  # the tracked mask is a bit smaller than the cell
    fg = uncovered_foreground(image, tracked, DiscoveryConfig(margin=2, smooth=0), min_area=8)
    assert not (fg & (labels == 1)).any()  # its rim is inside the margin
    assert fg[2, 60] == 0
    assert (fg == ((labels == 2) | (labels == 3))).all()


def test_dark_objects_are_found_from_the_tracked_ones():
    labels = scene()
    image = np.where(labels > 0, 100.0, 1000.0)  # dark cells on a bright background
    tracked = np.where(labels == 1, 1, 0)
    fg = uncovered_foreground(image, tracked, DiscoveryConfig(smooth=0), min_area=8)
    assert (fg == ((labels == 2) | (labels == 3))).all()


def test_one_prompt_per_uncovered_piece_and_a_grid_in_a_clump():
    labels = scene()
    uncovered = (labels == 2) | (labels == 3)
    pts = prompt_points(uncovered, np.where(labels == 1, 1, 0), DiscoveryConfig())
    assert len(pts) == 2
    assert {int(labels[int(y), int(x)]) for x, y in pts} == {2, 3}
    # a large uncovered region (a clump of untracked cells): points spaced by the tracked cell's size
    big = np.zeros((128, 128), bool)
    big[10:90, 10:90] = True
    tracked = np.zeros((128, 128), np.int32)
    tracked[100:110, 100:110] = 1  # one tracked cell, 10 x 10: spacing ~11 px
    pts = prompt_points(big, tracked, DiscoveryConfig())
    assert 30 <= len(pts) <= 64  # ~ (80 / 11) ** 2, capped by max_points
    assert big[pts[:, 1].astype(int), pts[:, 0].astype(int)].all()
    assert len(prompt_points(big, tracked, DiscoveryConfig(max_points=5))) == 5
    assert len(prompt_points(np.zeros((32, 32), bool))) == 0


def test_everything_tracked_prompts_nothing_and_never_calls_the_generator():
    labels = scene()
    gen = CountingGenerator(labels)
    found = discover_objects((labels > 0) * 1000.0, labels, gen, SeedFilter(min_area=8))
    assert len(found.points) == 0 and len(found) == 0
    assert gen.calls == 0


def test_new_objects_are_the_untracked_cells_only():
    labels = scene()
    gen = CountingGenerator(labels)
    tracked = np.where(labels == 1, 5, 0)
    found = discover_objects((labels > 0) * 1000.0, tracked, gen, SeedFilter(min_area=8))
    assert gen.calls == 1 and len(found.points) == 2
    got = sorted(int(np.unique(labels[m])[0]) for m in found.masks)
    assert got == [2, 3]
    for m in found.masks:
        assert (m == (labels == labels[m][0])).all()  # the whole cell, nothing of the tracked one


def test_the_generator_is_prompted_at_the_uncovered_points_only(small_model):
    """The real generator class, its predictor replaced by a label-reading stand-in: the
    points reaching the decoder are exactly discovery's, and its own grid is restored."""
    from napari_sam2 import SAM2AutomaticMaskGenerator

    labels = scene().astype(np.uint16)
    gen = SAM2AutomaticMaskGenerator(small_model, points_per_side=8, crop_n_layers=1, box_nms_thresh=1.0)
    grids = [g.copy() for g in gen.point_grids]
    gen.predictor = FakePointPredictor()
    tracked = np.where(labels == 1, 1, 0)
    found = discover_objects(labels, tracked, gen, SeedFilter(min_area=8))
    batches = [c for c in gen.predictor.calls if c[0] == "predict_torch"]
    assert len(batches) == 1 and len(batches[0][1]) == len(found.points) == 2  # not 64 + crops
    assert sum(c[0] == "set_image" for c in gen.predictor.calls) == 1  # no crop layers
    assert sorted(int(labels[m][0]) for m in found.masks) == [2, 3]
    assert gen.crop_n_layers == 1 and all((a == b).all() for a, b in zip(gen.point_grids, grids))
    masks, scores = prompted_masks(gen, labels, np.zeros((0, 2)))
    assert masks.shape == (0, 64, 64) and len(scores) == 0


def test_background_masks_are_not_new_objects():
    labels = scene()
    image = (labels > 0) * 1000.0

    def background(frame):  # answers with a mask that holds the prompted cell and all the background
        return ((labels == 0) | (labels == 2))[None], np.array([0.99])

    tracked = np.where(labels != 2, labels, 0)
    found = discover_objects(image, tracked, background, SeedFilter(min_area=8, drop_border_touching=False))
    assert len(found.points) == 1 and found.generated == 1
    assert len(found) == 0  # mostly off the uncovered foreground: not a new object
    found = discover_objects(
        image,
        tracked,
        background,
        SeedFilter(min_area=8, drop_border_touching=False),
        DiscoveryConfig(min_foreground=0),
    )
    assert len(found) == 1  # the check is what rejected it


def test_discovery_config_rejects_bad_values():
    with pytest.raises(ValueError, match="max_points"):
        DiscoveryConfig(max_points=0)
    with pytest.raises(ValueError, match="polarity"):
        DiscoveryConfig(polarity="grey")


# ----------------------------------------------------------------------------- in track-all


def appearing_scene(T=8, appear=3, shape=(48, 48)):
    """Two cells drifting right; a third appears on frame ``appear`` (no re-seed would see it then)."""
    gt = np.zeros((T, *shape), np.int32)
    for t in range(T):
        gt[t][disc(shape, (12, 8 + t), 4)] = 1
        gt[t][disc(shape, (34, 10 + t), 4)] = 2
        if t >= appear:
            gt[t][disc(shape, (12, 36), 4)] = 3
    image = (gt > 0).astype(np.float32) * 1000 + np.arange(T, dtype=np.float32)[:, None, None]
    return image, gt


@pytest.mark.parametrize("reseed_every", [0, 10])
def test_a_cell_appearing_on_frame_k_is_tracked_from_frame_k(reseed_every):
    image, gt = appearing_scene(appear=3)
    config = TrackAllConfig(
        reseed_every=reseed_every,
        seed_filter=SeedFilter(min_area=10, drop_border_touching=False),
        division=DivisionRule(persist_frames=2),
    )
    gen = GroundTruthMaskGenerator(image, gt)
    run = TrackAllRun(GroundTruthPredictor(gt), image, gen, config)
    events = list(run.events())
    new = [e for e in events if isinstance(e, TrackStarted) and e.reason == "discovery"]
    assert [(e.frame, e.track_id) for e in new] == [(3, 3)]
    labels = run.result().labels
    assert ((labels == 3) == (gt == 3)).all()  # from its first frame on, exactly
    assert ((labels > 0) == (gt > 0)).all()
    # the generator ran on the start frame and only where something was uncovered (frame 3)
    assert gen.calls == [0, 3]
    # prompts: one on frame 3 (the new cell), none on the frames where all was tracked
    assert run.discovery_points == 1


def test_without_discovery_the_appearing_cell_waits_for_a_re_seed():
    image, gt = appearing_scene(appear=3)
    config = TrackAllConfig(
        reseed_every=5,
        seed_filter=SeedFilter(min_area=10, drop_border_touching=False),
        discover_every_frame=False,
    )
    run = TrackAllRun(GroundTruthPredictor(gt), image, GroundTruthMaskGenerator(image, gt), config)
    starts = [e for e in run.events() if isinstance(e, TrackStarted) and e.track_id == 3]
    assert [(e.frame, e.reason) for e in starts] == [(5, "reseed")]
    assert run.discovery_points == 0


def test_discovery_needs_a_generator():
    image, gt = appearing_scene()
    with pytest.raises(ValueError, match="discover_every_frame needs a mask generator"):
        TrackAllRun(
            GroundTruthPredictor(gt),
            image,
            None,
            TrackAllConfig(reseed_every=0, discover_every_frame=True),
            start_labels=gt[0],
        )
    # by default (None) it is simply off without a generator
    run = TrackAllRun(
        GroundTruthPredictor(gt), image, None, TrackAllConfig(reseed_every=0), start_labels=gt[0]
    )
    run.run()
    assert run.discovery_points == 0 and not (run.result().labels == 3).any()


def test_a_dim_cell_beside_bright_ones_is_foreground_from_its_first_frame():
    """Otsu's threshold falls between dim and bright cells: most of a dim cell, e.g. one
    just entering the field, would be under it (and under min_area: found frames late).
    The background threshold (level + 4 noise SDs, at least halfway to Otsu's) keeps it."""
    shape = (128, 128)
    bright = [(20, 20), (20, 60), (20, 100), (60, 20), (60, 60), (100, 20), (100, 100)]
    labels = np.zeros(shape, np.int32)
    for i, c in enumerate(bright, start=1):
        labels[disc(shape, c, 7)] = i
    dim = disc(shape, (100, 60), 5)
    rng = np.random.default_rng(0)
    image = rng.normal(900, 100, shape) + 3000.0 * (labels > 0) + 1100.0 * dim
    tracked = labels  # every bright cell is tracked; the dim one is new
    fg = uncovered_foreground(image, tracked, DiscoveryConfig(), min_area=16)
    assert (fg & dim).sum() >= 0.75 * dim.sum()  # all but its blurred rim
    assert not (fg & ~dim).any()  # neither the background's noise nor the tracked cells' rims
    otsu = uncovered_foreground(image, tracked, DiscoveryConfig(threshold="otsu"), min_area=16)
    assert (otsu & dim).sum() < 0.5 * dim.sum()  # what the first version saw
    found = discover_objects(image, tracked, CountingGenerator(labels + 8 * dim), SeedFilter(min_area=16))
    assert len(found) == 1 and (found.masks[0] == dim).all()
    with pytest.raises(ValueError, match="threshold"):
        DiscoveryConfig(threshold="triangle")


def test_a_sliver_entering_at_the_border_is_prompted_on_the_cell_not_its_rim():
    """A cell entering the field shows as a strip along the border, every pixel one deep:
    the innermost pixels tie, and the first in raster order is the smoothing's rim above
    the cell. The brightest of them is on the cell."""
    cell = np.zeros((64, 64), bool)
    cell[20:36, 63] = True  # 16 px on the right border
    uncovered = np.zeros((64, 64), bool)
    uncovered[17:39, 62:64] = True  # the cell and its blurred rim, 2 px wide
    likeness = np.where(cell, 1000.0, np.where(uncovered, 300.0, 0.0))
    ((x, y),) = prompt_points(uncovered, None, DiscoveryConfig())
    assert not cell[int(y), int(x)]  # without intensities: the rim (what discovery missed)
    ((x, y),) = prompt_points(uncovered, None, DiscoveryConfig(), likeness)
    assert cell[int(y), int(x)]
    # dark objects: discovery passes the negated frame, the same rule
    ((x, y),) = prompt_points(
        uncovered, None, DiscoveryConfig(), -np.where(cell, 10.0, np.where(uncovered, 700.0, 1000.0))
    )
    assert cell[int(y), int(x)]
