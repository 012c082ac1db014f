"""What every-frame discovery costs in image encodings: none of its own.

Discovery prompts the mask generator on frames the tracker has just encoded; it must read
the tracker's features of that frame (``tracker_features``), so that a track-all run with
discovery on encodes each frame exactly once. Pinned by counting the image encoder's forward
calls (a forward pre-hook), never by timing, on the 128-pixel random-weight model: its masks
mean nothing, the counts do.
"""

from __future__ import annotations

import numpy as np
import pytest

from napari_sam2.engine.cells.discovery import DiscoveryConfig
from napari_sam2.engine.cells.seeding import SeedFilter
from napari_sam2.engine.cells.track_all import TrackAllConfig, TrackAllRun, TrackStarted
from napari_sam2.engine.cells.track_rules import DivisionRule

T, H, W = 5, 64, 64


def _disc(center, r):
    yy, xx = np.mgrid[:H, :W]
    return (yy - center[0]) ** 2 + (xx - center[1]) ** 2 <= r * r


def _movie():
    """One cell given on frame 0 (top left), one never given (bottom right), one appearing on
    frame 2 (top right): there is uncovered foreground on every frame, so discovery prompts."""
    rng = np.random.default_rng(0)
    image = rng.normal(100, 5, (T, H, W)).astype(np.float32)
    for f in range(T):
        image[f][_disc((14, 12 + f), 7)] += 600
        image[f][_disc((48, 46), 7)] += 600
        if f >= 2:
            image[f][_disc((14, 50), 6)] += 600
    start = _disc((14, 12), 7).astype(np.int32)
    return image, start


@pytest.mark.slow
def test_discovery_adds_no_encoder_pass(small_model):
    """Discovery on frames 1, 2 and 4, a full re-seed on frame 3: T frames, T encoder passes."""
    from napari_sam2.engine.predict.video_predictor import SAM2VideoPredictor
    from napari_sam2.engine.segment.automatic_mask_generator import SAM2AutomaticMaskGenerator

    passes = []
    hook = small_model.image_encoder.register_forward_pre_hook(lambda module, args: passes.append(1))
    try:
        generator = SAM2AutomaticMaskGenerator(
            small_model, points_per_side=2, pred_iou_thresh=0.0, stability_score_thresh=0.0
        )
        set_image = generator.predictor.set_image
        with_features = []

        def spy(image, normalizer=None, features=None):
            # every generator call in the run must be served the tracker's features
            with_features.append(generator.predictor.feature_provider is not None)
            return set_image(image, normalizer, features)

        generator.predictor.set_image = spy
        image, start = _movie()
        config = TrackAllConfig(
            reseed_every=3,
            discover_every_frame=True,
            seed_filter=SeedFilter(min_area=4, max_overlap=0.99, drop_border_touching=False),
            division=DivisionRule(enabled=False),
            discovery=DiscoveryConfig(max_points=4),
        )
        run = TrackAllRun(SAM2VideoPredictor(small_model), image, generator, config, start_labels=start)
        events = list(run.events())
    finally:
        hook.remove()
    # discovery did prompt the generator (else this test would prove nothing), and so did the re-seed ...
    assert run.discovery_points > 0
    assert len(with_features) >= 2 and all(with_features)
    # ... and the run encoded each of the T frames once: tracking's passes, nothing more
    assert len(passes) == T
    assert run.result().last_frame == T - 1
    assert any(isinstance(e, TrackStarted) for e in events)
