"""The instance head as a mask generator: every object of a frame in one head pass, reading the
tracker's image features on a tracked frame (no second encoder pass), and every-cell tracking
seeded and fed new cells by it.

The head is a stand-in that answers with the ground truth's maps (the frame recognised by its
features), so the masks are known; the model is the 128-pixel random-weight one, whose features
mean nothing but are computed, shared and counted for real.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_sam2.engine.cells.seeding import SeedFilter, tracker_features
from napari_sam2.engine.cells.track_all import TrackAllConfig, TrackAllRun
from napari_sam2.engine.cells.track_rules import DivisionRule
from napari_sam2.engine.frames.normalization import Normalizer, preprocess
from napari_sam2.engine.segment.instance_head import (
    InstanceHead,
    InstanceHeadGenerator,
    load_instance_head,
)
from napari_sam2.engine.track.events import FrameTracked, TrackStarted
from napari_sam2.engine.train.instance_head import distance_targets, instance_f1
from napari_sam2.errors import InputError, InputTypeError, MissingFileError

T, H, W = 4, 96, 96


def _disc(center, r):
    yy, xx = np.mgrid[:H, :W]
    return (yy - center[0]) ** 2 + (xx - center[1]) ** 2 <= r * r


def _movie():
    gt = np.zeros((T, H, W), np.int32)
    for f in range(T):
        gt[f][_disc((28, 24 + 2 * f), 12)] = 1
        gt[f][_disc((64, 62), 13)] = 2
        if f >= 2:  # a cell that appears on frame 2
            gt[f][_disc((72, 18), 11)] = 3
    rng = np.random.default_rng(0)
    image = rng.normal(100, 5, gt.shape).astype(np.float32) + 600 * (gt > 0)
    return image, gt


class GroundTruthHead(InstanceHead):
    """An instance head with a perfect eye: it recognises the frame by its image features
    (nearest of the frames' features, computed once here) and returns the logits of that
    frame's ground-truth maps on the head's grid."""

    def __init__(self, model, image, gt, normalizer):
        super().__init__()
        self.known, self.maps = [], []
        for frame, labels in zip(image, gt):
            x = preprocess(normalizer.to_rgb(frame), model.image_size, device=model.device)
            with torch.inference_mode():
                self.known.append(model.forward_image(x[None])[0].vision_feat.float().clone())
            self.maps.append(torch.from_numpy(distance_targets(labels)))
        self.calls = 0

    def forward_features(self, feats):
        self.calls += 1
        v = feats.vision_feat.float()
        t = int(np.argmin([float((v - k).abs().mean()) for k in self.known]))
        grid = feats.high_res[0].shape[-2:]
        maps = torch.nn.functional.interpolate(self.maps[t][None], size=grid, mode="bilinear")
        return torch.logit(maps.clamp(0.02, 0.98))


def _counting_forward_image(small_model, monkeypatch):
    from napari_sam2.model import SAM2Model

    counts = {"forward_image": 0}
    forward_image = SAM2Model.forward_image

    def counting(self, *args, **kwargs):
        counts["forward_image"] += 1
        return forward_image(self, *args, **kwargs)

    if "forward_image" in vars(small_model):
        monkeypatch.delitem(vars(small_model), "forward_image")
    monkeypatch.setattr(SAM2Model, "forward_image", counting)
    return counts


def test_one_frame_gives_the_objects_best_first_in_one_head_pass(small_model):
    image, gt = _movie()
    normalizer = Normalizer.fit(image)
    generator = InstanceHeadGenerator(small_model, GroundTruthHead(small_model, image, gt, normalizer))
    masks, scores = generator.generate(image[2], normalizer=normalizer)
    assert masks.shape == (3, H, W) and masks.dtype == bool
    labels = np.zeros((H, W), np.int32)
    for k, m in enumerate(masks, 1):
        labels[m] = k
    assert instance_f1(labels, gt[2], 0.8) == 1.0  # every cell, each matched at IoU > 0.8
    assert np.all(np.diff(scores) <= 0) and scores.min() > 0.5 and scores.max() <= 1.0
    assert (generator.encoder_passes, generator.head_passes) == (1, 1)


def test_a_tracked_frame_costs_one_head_pass_and_no_encoder_pass(small_model, monkeypatch):
    from napari_sam2.engine.predict.video_predictor import SAM2VideoPredictor

    image, gt = _movie()
    predictor = SAM2VideoPredictor(small_model)
    state = predictor.init_state(image)
    head = GroundTruthHead(small_model, image, gt, state.normalizer)
    generator = InstanceHeadGenerator(small_model, head)
    counts = _counting_forward_image(small_model, monkeypatch)
    with tracker_features(generator, predictor, state, 1):
        masks, _ = generator.generate(image[1], normalizer=state.normalizer)
        again, _ = generator.generate(image[1], normalizer=state.normalizer)
    assert counts["forward_image"] == 1  # the tracker's pass, then its kept features
    assert generator.encoder_passes == 0 and generator.head_passes == 2
    assert generator.feature_provider is None  # restored
    np.testing.assert_array_equal(masks, again)
    assert len(masks) == 2
    state.close()


def test_track_all_seeds_and_finds_new_cells_with_the_head_one_encoder_pass_per_frame(
    small_model, monkeypatch
):
    """Seeding on frame 0 and discovery on the others come from the head, on the tracker's
    features: one encoder pass per frame in all, the cell appearing on frame 2 found there."""
    from napari_sam2.engine.predict.video_predictor import SAM2VideoPredictor

    image, gt = _movie()
    predictor = SAM2VideoPredictor(small_model)
    head = GroundTruthHead(small_model, image, gt, Normalizer.fit(image))
    generator = InstanceHeadGenerator(small_model, head)
    counts = _counting_forward_image(small_model, monkeypatch)
    config = TrackAllConfig(
        reseed_every=0,
        discover_every_frame=True,
        seed_filter=SeedFilter(min_area=20),
        division=DivisionRule(enabled=False),
    )
    events = list(TrackAllRun(predictor, image, generator, config).events())
    started = [e for e in events if isinstance(e, TrackStarted)]
    assert [(e.frame, e.reason) for e in started][:2] == [(0, "seed"), (0, "seed")]
    assert sum(isinstance(e, FrameTracked) for e in events) == T
    assert counts["forward_image"] == T
    assert generator.encoder_passes == 0
    assert 1 <= generator.head_passes <= T  # the start frame, and frames with uncovered foreground
    # the cell appearing on frame 2 is found there (random weights track the others poorly, so
    # more may be "found" too; the first new one on frame 2 is the cell at (72, 18))
    on_2 = [e for e in started if e.frame == 2 and e.reason == "discovery"]
    assert on_2, [(e.frame, e.reason) for e in started]


def test_head_files_are_checked_against_the_model(small_model, tmp_path):
    with pytest.raises(MissingFileError, match="--instance-head-steps"):
        load_instance_head(tmp_path / "none.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(InputError, match="not an instance head file"):
        load_instance_head(tmp_path / "junk.pt")
    torch.save({"something": 1}, tmp_path / "other.pt")
    with pytest.raises(InputError, match="not an instance head file"):
        load_instance_head(tmp_path / "other.pt")
    p = InstanceHead(width=16).save(tmp_path / "s.pt", {"model": "sam2.1_hiera_s"})
    with pytest.raises(InputError, match="sam2.1_hiera_s.*sam2.1_hiera_t"):
        InstanceHeadGenerator(small_model, p)
    p = InstanceHead((256, 32, 32), width=16).save(tmp_path / "dims.pt", {})
    with pytest.raises(InputError, match="channels"):
        load_instance_head(p, small_model)
    ok = InstanceHead(width=16).save(tmp_path / "t.pt", {"model": "sam2.1_hiera_t"})
    generator = InstanceHeadGenerator(small_model, ok)
    with pytest.raises(InputTypeError, match="read the image first"):
        generator.generate("cells.tif")
    with pytest.raises(InputError, match="one frame"):
        generator.generate(np.zeros((2, 3, 8, 8)))
    with pytest.raises(InputTypeError):
        InstanceHeadGenerator(small_model, object())
