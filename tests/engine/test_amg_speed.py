"""Segment everything's fast path: the same records, bit for bit, and the work it does per image.

The two-stage decoder (tokens for every point, masks only for outputs whose predicted IoU
passes, the first two-way block's image side made once per image) must give exactly the
records of the reference path (``predict_torch`` on each batch, then the filters: Meta's
order), which the AMG goldens check against Meta.
"""

import numpy as np
import pytest
import torch

from napari_sam2 import SAM2AutomaticMaskGenerator


def _image() -> np.ndarray:
    """A few bright discs and a bar on a dark, noisy background (uint8 RGB, non-square)."""
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[:72, :96]
    img = rng.normal(30, 8, (72, 96))
    for cy, cx, r in ((20, 20, 9), (50, 30, 12), (30, 70, 10)):
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = 200
    img[60:66, 50:90] = 150
    return np.repeat(np.clip(img, 0, 255).astype(np.uint8)[..., None], 3, axis=2)


def _records(model, reference: bool, **kwargs):
    gen = SAM2AutomaticMaskGenerator(model, output_mode="uncompressed_rle", **kwargs)
    if reference:
        gen._decodes_in_two_stages = lambda: False  # every mask drawn, then filtered
    return gen.generate(_image()), gen


def _assert_same(ours, ref):
    assert len(ours) == len(ref)
    for a, b in zip(ours, ref):
        assert a.keys() == b.keys()
        for key in a:
            assert a[key] == b[key], key  # exact: RLE counts, floats, boxes, points


def _row_max_ious(model, **kwargs) -> np.ndarray:
    """Each point's best predicted IoU (nothing filtered), to place a threshold between them."""
    gen = SAM2AutomaticMaskGenerator(model, pred_iou_thresh=0.0, stability_score_thresh=0.0,
                                     box_nms_thresh=1.0, **kwargs)  # fmt: skip
    records = gen.generate(_image())
    best: dict[tuple, float] = {}
    for r in records:
        key = tuple(r["point_coords"][0])
        best[key] = max(best.get(key, 0.0), r["predicted_iou"])
    return np.array(sorted(best.values()))


def test_two_stage_path_gives_the_reference_records_exactly(small_model):
    extra = dict(points_per_side=6, points_per_batch=16)  # batches of 16, 16 and 4
    best = _row_max_ious(small_model, **extra)
    thresh = float(np.median(best))  # about half the points have no output that passes
    kwargs = dict(pred_iou_thresh=thresh, stability_score_thresh=0.0, box_nms_thresh=1.0, **extra)
    ours, gen = _records(small_model, reference=False, **kwargs)
    ref, _ = _records(small_model, reference=True, **kwargs)
    assert len(ref) > 0
    _assert_same(ours, ref)
    # masks were drawn only for the points with an output above the threshold
    assert 0 < gen.upscaled_points < 36


def test_two_stage_path_with_meta_s_default_filters(small_model):
    kwargs = dict(points_per_side=5, points_per_batch=7)
    ours, gen = _records(small_model, reference=False, **kwargs)
    ref, _ = _records(small_model, reference=True, **kwargs)
    _assert_same(ours, ref)
    assert gen.upscaled_points <= 25


class _Counter:
    def __init__(self):
        self.calls = 0

    def wrap(self, fn):
        def counted(*args, **kwargs):
            self.calls += 1
            return fn(*args, **kwargs)

        return counted


@pytest.mark.parametrize("crop_n_layers, crops", [(0, 1), (1, 5)])
def test_encoder_and_per_image_decoder_work_run_once_per_image(
    small_model, monkeypatch, crop_n_layers, crops
):
    model = small_model
    decoder = model.sam_mask_decoder
    encoder, prepare, tokens = _Counter(), _Counter(), _Counter()
    monkeypatch.setitem(vars(model), "forward_image", encoder.wrap(model.forward_image))
    monkeypatch.setattr(decoder, "prepare_image", prepare.wrap(decoder.prepare_image))
    monkeypatch.setattr(decoder, "decode_tokens", tokens.wrap(decoder.decode_tokens))
    # the first block's image-side key projection: per image, never per batch or per point
    image_keys = []
    hook = decoder.transformer.layers[0].cross_attn_token_to_image.k_proj.register_forward_hook(
        lambda mod, args, out: image_keys.append(args[0].shape)
    )
    try:
        gen = SAM2AutomaticMaskGenerator(model, points_per_side=3, points_per_batch=4, crop_n_layers=crop_n_layers,
                                         pred_iou_thresh=0.0, stability_score_thresh=0.0)  # fmt: skip
        gen.generate(_image())
    finally:
        hook.remove()
    batches_per_crop = 3  # 9 points in batches of 4, 4 and 1
    assert encoder.calls == crops
    assert prepare.calls == crops
    assert len(image_keys) == crops and all(s[0] == 1 for s in image_keys)  # one image, not a copy per point
    assert tokens.calls == crops * batches_per_crop


def test_reference_path_still_serves_m2m_and_single_output(small_model, monkeypatch):
    """Where the filtered IoU is not the decoder's first answer, nothing is prepared ahead."""
    decoder = small_model.sam_mask_decoder
    prepare = _Counter()
    monkeypatch.setattr(decoder, "prepare_image", prepare.wrap(decoder.prepare_image))
    for kwargs in (dict(use_m2m=True), dict(multimask_output=False)):
        gen = SAM2AutomaticMaskGenerator(small_model, points_per_side=2, pred_iou_thresh=0.0, **kwargs)
        gen.generate(_image())
        assert gen.upscaled_points == 0
    assert prepare.calls == 0


def test_prepare_image_refuses_a_batch(small_model):
    decoder = small_model.sam_mask_decoder
    c, (h, w) = 256, small_model.sam_prompt_encoder.image_embedding_size
    with pytest.raises(ValueError, match="batch 1"):
        decoder.prepare_image(torch.zeros(2, c, h, w), torch.zeros(1, c, h, w), torch.zeros(1, c, h, w))


def test_in_place_upscaling_gives_the_module_s_numbers(small_model):
    """The decoder's in-place upscaling (no autograd) against the modules run out of place."""
    decoder = small_model.sam_mask_decoder
    torch.manual_seed(1)
    c, (h, w) = 256, small_model.sam_prompt_encoder.image_embedding_size
    n = 5
    tokens = decoder.decode_tokens(
        torch.randn(1, c, h, w),
        small_model.sam_prompt_encoder.get_dense_pe(),
        torch.randn(n, 2, c),
        torch.randn(1, c, h, w).expand(n, -1, -1, -1),
        repeat_image=True,
    )
    high_res = [torch.randn(1, c // 8, 4 * h, 4 * w), torch.randn(1, c // 4, 2 * h, 2 * w)]
    with torch.enable_grad():
        assert not decoder._can_upscale_in_place(tokens.image_tokens, high_res)
        ref = decoder.upscale_masks(tokens, high_res)
    with torch.no_grad():
        assert decoder._can_upscale_in_place(tokens.image_tokens, high_res)
        fast = decoder.upscale_masks(tokens, high_res)
        rows = torch.tensor([1, 3])
        subset = decoder.upscale_masks(tokens, high_res, rows)
    assert torch.equal(fast, ref.detach())
    assert torch.equal(subset, ref.detach()[rows])
