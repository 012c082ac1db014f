"""The predictor Protocols: ours satisfy them and declare their extensions; a predictor
with only Meta's API is used without them."""

import numpy as np
import pytest

from napari_sam2.engine.predict.protocols import (
    EXTENSION_NEED_OUTPUT,
    EXTENSION_NORMALIZER,
    EXTENSION_REFINE,
    ImagePredictor,
    MaskGenerator,
    VideoPredictor,
    extensions_of,
)


def test_our_classes_satisfy_the_protocols_and_declare_their_extensions():
    from napari_sam2.engine.predict.image_predictor import SAM2ImagePredictor
    from napari_sam2.engine.predict.video_predictor import SAM2VideoPredictor
    from napari_sam2.engine.segment.automatic_mask_generator import SAM2AutomaticMaskGenerator
    from napari_sam2.engine.segment.tiled_mask_generator import TiledMaskGenerator

    assert issubclass(SAM2VideoPredictor, VideoPredictor)
    assert issubclass(SAM2ImagePredictor, ImagePredictor)
    assert issubclass(SAM2AutomaticMaskGenerator, MaskGenerator)
    assert issubclass(TiledMaskGenerator, MaskGenerator)
    assert extensions_of(SAM2VideoPredictor) == {EXTENSION_REFINE, EXTENSION_NEED_OUTPUT}
    assert extensions_of(SAM2AutomaticMaskGenerator) == {EXTENSION_NORMALIZER}
    assert extensions_of(TiledMaskGenerator) == {EXTENSION_NORMALIZER}


def test_an_object_without_the_methods_is_not_a_predictor():
    class Half:
        def init_state(self, frames):
            return {}

    assert not isinstance(Half(), VideoPredictor)
    assert not isinstance(object(), ImagePredictor)
    assert not isinstance(lambda frame: [], MaskGenerator)


class MetaOnly:
    """Meta's video predictor API and nothing more: no refine, no need_output."""

    def __init__(self):
        self.calls = []

    def init_state(self, frames, **kwargs):
        return {"n": len(frames)}

    def reset_state(self, state):
        self.calls.append(("reset",))

    def add_new_points_or_box(
        self,
        state,
        frame_idx,
        obj_id,
        points=None,
        labels=None,
        clear_old_points=True,
        normalize_coords=True,
        box=None,
    ):
        self.calls.append(("points", frame_idx, obj_id))
        return frame_idx, [obj_id], np.zeros((1, 1, 4, 4), np.float32)

    def add_new_mask(self, state, frame_idx, obj_id, mask):
        return frame_idx, [obj_id], np.zeros((1, 1, 4, 4), np.float32)

    def propagate_in_video(self, state, start_frame_idx=None, max_frame_num_to_track=None, reverse=False):
        yield from ()

    def clear_all_prompts_in_frame(self, state, frame_idx, obj_id):
        self.calls.append(("clear", frame_idx, obj_id))
        return frame_idx, [obj_id], np.zeros((1, 1, 4, 4), np.float32)

    def remove_object(self, state, obj_id, strict=False):
        return [], []


def test_a_meta_api_predictor_gets_no_extension_keywords():
    from napari_sam2.engine.track.session import TrackingSession, _clear

    meta = MetaOnly()
    assert isinstance(meta, VideoPredictor) and extensions_of(meta) == frozenset()
    session = TrackingSession()
    session.use_predictor(meta)
    assert session._refine_kw is False
    # a TypeError here would mean need_output=False was passed to Meta's signature
    out = _clear(meta, {}, 2, 7)
    assert out[0] == 2 and meta.calls[-1] == ("clear", 2, 7)


@pytest.mark.parametrize("declared", [(), ("refine",), ("refine", "need_output")])
def test_extensions_are_read_from_the_declaration_only(declared):
    class Declared:
        api_extensions = frozenset(declared)

    assert extensions_of(Declared()) == frozenset(declared)
