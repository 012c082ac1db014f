"""Seeding from "segment everything": the generator protocol, the filters, one object per pixel."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from napari_sam2.engine.cells.seeding import (
    SeedFilter,
    Seeds,
    default_mask_generator,
    filter_masks,
    run_mask_generator,
    seed_objects,
)

H, W = 32, 40


def _box(y0, x0, y1, x1) -> np.ndarray:
    m = np.zeros((H, W), dtype=bool)
    m[y0:y1, x0:x1] = True
    return m


def _records(masks, scores):
    return [
        {"segmentation": m, "area": int(m.sum()), "predicted_iou": s, "stability_score": 0.9}
        for m, s in zip(masks, scores)
    ]


FRAME = np.zeros((H, W), dtype=np.uint16)


def test_generator_forms_are_equivalent():
    masks = [_box(2, 2, 8, 8), _box(10, 10, 20, 20)]
    scores = [0.9, 0.8]

    class WithGenerate:
        def generate(self, frame):
            return _records(masks, scores)

    for gen in (
        lambda f: _records(masks, scores),
        lambda f: (np.stack(masks), np.array(scores)),
        WithGenerate(),
    ):
        m, s = run_mask_generator(gen, FRAME)
        assert m.shape == (2, H, W) and m.dtype == bool
        np.testing.assert_array_equal(m, np.stack(masks))
        np.testing.assert_array_equal(s, scores)


def test_generator_gets_the_frame_as_stored_and_score_falls_back():
    seen = []

    def gen(frame):
        seen.append((frame.shape, frame.dtype))
        return [{"segmentation": _box(1, 1, 6, 6), "score": 0.7}, {"segmentation": _box(9, 9, 15, 15)}]

    frame = np.zeros((H, W, 2), dtype=np.float32)
    _, scores = run_mask_generator(gen, frame)
    assert seen == [((H, W, 2), np.float32)]
    np.testing.assert_array_equal(scores, [0.7, 1.0])  # "score", else 1


def test_generator_with_no_masks():
    masks, scores = run_mask_generator(lambda f: [], FRAME)
    assert masks.shape == (0, H, W) and scores.shape == (0,)
    assert len(seed_objects(FRAME, lambda f: [])) == 0


@pytest.mark.parametrize(
    "answer, match",
    [
        ([{"segmentation": {"size": [H, W], "counts": "x"}}], "output_mode='binary_mask'"),
        ((np.zeros((2, H, W), bool), np.zeros(3)), "2 masks but 3 scores"),
        ((np.zeros((2, H + 1, W), bool), np.zeros(2)), "expected \\(K, 32, 40\\)"),
    ],
)
def test_generator_answers_that_are_refused(answer, match):
    with pytest.raises(ValueError, match=match):
        run_mask_generator(lambda f: answer, FRAME)


def test_not_a_generator():
    with pytest.raises(TypeError, match="callable or have a generate"):
        run_mask_generator(42, FRAME)


def test_filters_area_score_border():
    masks = np.stack(
        [
            _box(5, 5, 10, 10),  # 25 px, fine
            _box(12, 5, 14, 7),  # 4 px: too small
            _box(0, 20, 6, 26),  # touches the top border
            _box(15, 15, 30, 35),  # 300 px: too large
            _box(20, 2, 25, 7),  # 25 px, low score
        ]
    )
    scores = np.array([0.9, 0.9, 0.9, 0.9, 0.2])
    f = SeedFilter(min_area=10, max_area=200, min_score=0.5, drop_border_touching=True)
    seeds = filter_masks(masks, scores, f)
    assert len(seeds) == 1
    np.testing.assert_array_equal(seeds.masks[0], masks[0])
    kept_border = filter_masks(
        masks, scores, SeedFilter(min_area=10, max_area=200, min_score=0.5, drop_border_touching=False)
    )
    assert len(kept_border) == 2
    np.testing.assert_array_equal(kept_border.masks[1], masks[2])


def test_one_object_per_pixel_best_score_first():
    a = _box(5, 5, 15, 15)  # 100 px
    b = _box(5, 12, 15, 22)  # 100 px, 30 of them on a
    dup = _box(6, 6, 15, 15)  # 81 px, all on a: a duplicate
    seeds = filter_masks(np.stack([b, a, dup]), np.array([0.8, 0.9, 0.95]), SeedFilter(min_area=10))
    # dup (best score) is taken first, so a loses 81 of 100 px -> dropped (> 50 % taken);
    # b keeps its 100 px minus the 27 px of dup it overlaps (rows 6..14, cols 12..14)
    assert len(seeds) == 2
    np.testing.assert_array_equal(seeds.masks[0], dup)
    np.testing.assert_array_equal(seeds.masks[1], b & ~dup)
    np.testing.assert_array_equal(seeds.scores, [0.95, 0.8])
    assert not (seeds.masks[0] & seeds.masks[1]).any()


def test_remainder_keeps_its_largest_piece_and_min_area():
    bar = _box(10, 10, 14, 30)  # 4 x 20 = 80 px
    cut = _box(6, 14, 18, 20)  # 72 px, taken first: 24 px of the bar, leaving 4 x 4 (left) and 4 x 10 (right)
    scores = np.array([0.9, 0.8])
    seeds = filter_masks(np.stack([cut, bar]), scores, SeedFilter(min_area=4))
    assert len(seeds) == 2
    np.testing.assert_array_equal(seeds.masks[1], _box(10, 20, 14, 30))
    # the largest piece (40 px) below min_area: the bar is dropped, the cut stays
    seeds = filter_masks(np.stack([cut, bar]), scores, SeedFilter(min_area=41))
    assert len(seeds) == 1
    np.testing.assert_array_equal(seeds.masks[0], cut)


def test_seeds_to_labels():
    seeds = Seeds(np.stack([_box(1, 1, 3, 3), _box(5, 5, 7, 7)]), np.array([1.0, 0.5]))
    labels = seeds.to_labels(first_id=7)
    assert labels.dtype == np.uint32
    assert set(np.unique(labels).tolist()) == {0, 7, 8}
    assert (labels == 8).sum() == 4


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"min_area": 0}, "min_area must be >= 1"),
        ({"min_area": 10, "max_area": 5}, "max_area \\(5\\) must be >= min_area"),
        ({"max_overlap": 1.0}, "max_overlap must be in"),
    ],
)
def test_filter_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SeedFilter(**kwargs)


def test_default_generator_names_what_is_missing(monkeypatch):
    monkeypatch.setitem(sys.modules, "napari_sam2.engine.segment.automatic_mask_generator", None)
    with pytest.raises(ImportError, match="SAM2AutomaticMaskGenerator.*pass your own mask generator"):
        default_mask_generator(object())


def test_default_generator_builds_the_real_class_lazily(monkeypatch):
    import types

    made = []

    class Fake:
        def __init__(self, model, **kwargs):
            made.append((model, kwargs))

    module = types.ModuleType("napari_sam2.engine.segment.automatic_mask_generator")
    module.SAM2AutomaticMaskGenerator = Fake
    monkeypatch.setitem(sys.modules, "napari_sam2.engine.segment.automatic_mask_generator", module)
    gen = default_mask_generator("model", points_per_side=16)
    assert isinstance(gen, Fake) and made == [("model", {"points_per_side": 16})]


def test_stack_contrast_is_given_to_generators_that_take_one():
    from napari_sam2.engine.cells.seeding import with_stack_contrast
    from napari_sam2.engine.frames.normalization import Normalizer

    stack = np.stack([np.full((H, W), 100 * (t + 1), dtype=np.uint16) for t in range(4)])
    stack[:, 5:9, 5:9] += 1000
    got = []

    class Ours:
        api_extensions = frozenset({"normalizer"})  # declares generate(image, normalizer=...)

        def generate(self, image, normalizer=None):
            got.append(normalizer)
            return []

    wrapped = with_stack_contrast(Ours(), stack)
    seed_objects(stack[0], wrapped)
    seed_objects(stack[3], wrapped)
    assert len(got) == 2 and got[0] is got[1] and isinstance(got[0], Normalizer)
    given = Normalizer.fit(stack)
    seed_objects(stack[1], with_stack_contrast(Ours(), stack, normalizer=given))
    assert got[-1] is given

    class Meta:  # generate(image) only: left as it is
        def generate(self, image):
            return []

    meta = Meta()
    assert with_stack_contrast(meta, stack) is meta

    def plain(frame):
        return []

    assert with_stack_contrast(plain, stack) is plain


def test_report_counts_what_each_filter_removed_and_says_what_to_change():
    masks = np.stack(
        [
            _box(5, 5, 10, 10),  # 25 px, fine
            _box(12, 5, 14, 7),  # 4 px: too small
            _box(0, 20, 6, 26),  # touches the top border
            _box(15, 15, 30, 35),  # 300 px: too large
            _box(20, 2, 25, 7),  # 25 px, low score
            _box(5, 5, 10, 10),  # a duplicate of the first
        ]
    )
    scores = np.array([0.9, 0.9, 0.9, 0.9, 0.2, 0.8])
    f = SeedFilter(min_area=10, max_area=200, min_score=0.5, drop_border_touching=True)
    report = filter_masks(masks, scores, f).report
    assert (
        report.produced,
        report.min_area,
        report.max_area,
        report.score,
        report.border,
        report.overlap,
    ) == (
        6,
        1,
        1,
        1,
        1,
        1,
    )
    nothing = filter_masks(masks[1:5], scores[1:5], f)
    assert len(nothing) == 0
    text = nothing.report.explain(3)
    assert text.startswith(
        "seeding kept no object on frame 3: nothing to track. Segment everything produced 4"
    )
    assert "min area 1, max area 1, score 1, border 1, overlap 0" in text
    assert "drop_border_touching=False; leave out --drop-border" in text and "--min-score" in text
    empty = filter_masks(np.zeros((0, 8, 8), bool), np.zeros(0), f).report
    assert "found no mask" in empty.explain(0) and "points_per_side" in empty.explain(0)


def test_border_cells_are_kept_by_default():
    assert SeedFilter().drop_border_touching is False
    seeds = filter_masks(np.stack([_box(0, 0, 6, 6)]), np.array([0.9]), SeedFilter(min_area=4))
    assert len(seeds) == 1
