"""The training loop's mechanics on the tiny variant with the test weights (reduced input size)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from napari_sam2.engine.train import (
    PromptConfig,
    TrainConfig,
    Trainer,
    apply_delta,
    labeled_stack,
    save_trained,
)
from napari_sam2.engine.train.data import FrameRef
from napari_sam2.engine.train.export import load_delta

SMALL = dict(loss_resolution="low", objects_per_step=2, checkpoint_every=2, validate_every=2)


def _stack(cell_crop):
    img, lab = cell_crop
    return labeled_stack(img, lab, name="crop")


def _trained(model, trainer):
    params = dict(model.named_parameters())
    return {n: params[n].detach().clone() for n in trainer.trainable}


@pytest.mark.slow  # tens of seconds on a 2-core CPU
def test_resume_gives_the_weights_of_an_uninterrupted_run(make_model, cell_crop, tmp_path):
    stack = _stack(cell_crop)
    cfg = TrainConfig(steps=4, seed=5, prompts=PromptConfig(correction_clicks=2), **SMALL)
    split = dict(train=[FrameRef(0, 0), FrameRef(0, 1)], val=[FrameRef(0, 2)])

    full = Trainer(make_model(), [stack], cfg, **split)
    full.run()
    want = _trained(full.model, full)

    first = Trainer(make_model(), [stack], cfg, state_dir=tmp_path, **split)
    summary = first.run(should_stop=lambda: first.step_count == 3)
    assert summary["stopped"] and summary["steps"] == 3
    second = Trainer(make_model(), [stack], cfg, state_dir=tmp_path, **split)
    second.load_state(tmp_path / "train_state.pt")
    assert second.step_count == 3
    second.run()
    got = _trained(second.model, second)
    assert set(got) == set(want)
    changed = [n for n in want if not torch.equal(want[n], dict(make_model().named_parameters())[n])]
    assert changed, "training changed nothing"
    for n in want:
        assert torch.equal(got[n], want[n]), n
    assert [r.loss for r in second.history] == [r.loss for r in full.history]
    assert second.validation == full.validation

    # resuming with other settings is refused, naming the reason
    other = Trainer(
        make_model(), [stack], TrainConfig(steps=4, trainable="lora", **SMALL), state_dir=tmp_path, **split
    )
    with pytest.raises(ValueError, match="trained other parameters"):
        other.load_state(tmp_path / "train_state.pt")


def test_only_the_decoder_and_prompt_encoder_train_by_default(make_model, cell_crop):
    model = make_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    tr = Trainer(model, [_stack(cell_crop)], TrainConfig(steps=2, **SMALL), train=[FrameRef(0, 0)], val=[])
    tr.run()
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert changed
    assert all(k.startswith(("sam_mask_decoder.", "sam_prompt_encoder.")) for k in changed)
    assert not any(k.startswith(("sam_mask_decoder.conv_s0", "sam_mask_decoder.conv_s1")) for k in changed)
    assert tr.store.encoder_passes == 1  # frozen encoder: each frame encoded once


@pytest.mark.slow  # builds the official-size model too
def test_saved_checkpoint_loads_strictly_and_reproduces_outputs(
    make_model, cell_crop, tiny_checkpoint, tmp_path
):
    from train_support import reduced_model

    from napari_sam2.engine.weights.build import build_sam2
    from napari_sam2.engine.weights.checkpoints import load_state_dict_file

    model = make_model()
    stack = _stack(cell_crop)
    tr = Trainer(
        model, [stack], TrainConfig(steps=3, lr=1e-3, **SMALL), train=[FrameRef(0, 0)], val=[FrameRef(0, 2)]
    )
    summary = tr.run()
    base = load_state_dict_file(tiny_checkpoint)
    paths = save_trained(model, tmp_path / "tuned.pt", base, {"steps": tr.step_count, **summary})

    # the official variant, at its official size, loads it strictly (build_sam2 is strict)
    official = build_sam2("sam2.1_hiera_t", paths["checkpoint"])
    saved = load_state_dict_file(paths["checkpoint"])
    assert set(saved) == set(official.state_dict()) == set(base)
    # and the same network reloaded from it gives the trained model's outputs
    again = reduced_model(paths["checkpoint"])
    feats = tr.store.features(FrameRef(0, 2))
    pts = torch.tensor([[[30.0, 40.0]], [[100.0, 120.0]]])
    lbl = torch.ones(2, 1, dtype=torch.int32)
    with torch.no_grad():
        a = tr._heads(feats, pts, lbl, None, True)
        tr.model = again
        b = tr._heads(feats, pts, lbl, None, True)
    torch.testing.assert_close(a.low_res_multimasks, b.low_res_multimasks, rtol=0, atol=0)
    torch.testing.assert_close(a.ious, b.ious, rtol=0, atol=0)

    # the delta holds just what changed and rebuilds the checkpoint from the base
    delta = load_delta(paths["delta"])
    assert delta["tensors"] and all(
        k.startswith(("sam_mask_decoder.", "sam_prompt_encoder.")) for k in delta["tensors"]
    )
    rebuilt = apply_delta(base, delta)
    assert all(torch.equal(rebuilt[k], saved[k]) for k in saved)
    card = json.loads(paths["card_json"].read_text())
    assert (
        card["steps"] == 3
        and card["config"] == "sam2.1_hiera_t"
        and card["changed_tensors"] == len(delta["tensors"])
    )
    assert "Validation" in paths["card_md"].read_text()
    # nothing is silently overwritten
    with pytest.raises(FileExistsError, match="tuned.pt.*overwrite"):
        save_trained(model, tmp_path / "tuned.pt", base)


@pytest.mark.slow  # tens of seconds on a 2-core CPU
def test_lora_adapters_fold_into_official_weights(make_model, cell_crop, tiny_checkpoint, tmp_path):
    from train_support import reduced_model

    from napari_sam2.engine.frames.normalization import preprocess
    from napari_sam2.engine.train.export import official_state_dict
    from napari_sam2.engine.weights.checkpoints import load_state_dict_file

    model = make_model()
    stack = _stack(cell_crop)
    cfg = TrainConfig(steps=2, lr=1e-2, trainable="lora", prompts=PromptConfig(correction_clicks=0), **SMALL)
    tr = Trainer(model, [stack], cfg, train=[FrameRef(0, 0)], val=[])
    assert any(".lora_" in n for n in tr.trainable)
    tr.run()
    paths = save_trained(model, tmp_path / "lora.pt", load_state_dict_file(tiny_checkpoint))
    assert any(k.startswith("image_encoder.") for k in load_delta(paths["delta"])["tensors"])
    plain = reduced_model(paths["checkpoint"])
    x = preprocess(stack.image_rgb(1), model.image_size)[None]
    with torch.no_grad():
        a, b = model.forward_image(x)[0], plain.forward_image(x)[0]
    torch.testing.assert_close(a.vision_feat, b.vision_feat, rtol=1e-4, atol=1e-4)
    assert set(official_state_dict(model)) == set(plain.state_dict())


@pytest.mark.slow  # tens of seconds on a 2-core CPU
def test_memory_modules_train_on_clips(make_model, cell_crop):
    model = make_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = TrainConfig(steps=2, trainable="memory", clip_length=3, **SMALL)
    tr = Trainer(model, [_stack(cell_crop)], cfg, train=[FrameRef(0, t) for t in range(3)], val=[])
    assert tr.clips == [(FrameRef(0, 0), FrameRef(0, 1), FrameRef(0, 2))]
    tr.run()
    assert all(math.isfinite(r.loss) for r in tr.history)
    assert tr.decoder_passes == 6  # every frame of each clip
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert any(k.startswith("memory_attention.") for k in changed)
    assert any(k.startswith("memory_encoder.") for k in changed)
    assert not any(k.startswith("image_encoder.") for k in changed)
    with pytest.raises(ValueError, match="clips of 3 consecutive"):
        Trainer(make_model(), [_stack(cell_crop)], cfg, train=[FrameRef(0, 0), FrameRef(0, 2)], val=[])


@pytest.mark.parametrize("amp", ["bfloat16", "float16"])
def test_mixed_precision_trains(make_model, cell_crop, amp):
    model = make_model()
    cfg = TrainConfig(steps=2, amp=amp, prompts=PromptConfig(correction_clicks=1), **SMALL)
    tr = Trainer(model, [_stack(cell_crop)], cfg, train=[FrameRef(0, 0)], val=[])
    tr.run()
    assert all(math.isfinite(r.loss) for r in tr.history)
    assert (tr.scaler is not None) == (amp == "float16")  # loss scaling only where gradients underflow
    assert all(p.dtype == torch.float32 for p in model.parameters())  # weights stay float32


@pytest.mark.slow
def test_fine_tune_stops_and_resumes_to_the_same_checkpoint(make_model, cell_crop, tiny_checkpoint, tmp_path):
    from napari_sam2.engine.train import fine_tune
    from napari_sam2.engine.weights.checkpoints import load_state_dict_file

    stack = _stack(cell_crop)
    cfg = TrainConfig(steps=3, prompts=PromptConfig(correction_clicks=0), **SMALL)
    kw = dict(checkpoint=tiny_checkpoint, config=cfg, split="time", block=1, val_fraction=0.3)
    whole = fine_tune([stack], tmp_path / "whole.pt", model=make_model(), **kw)
    assert not whole["stopped"] and whole["files"]["checkpoint"].exists()

    calls = []
    part = fine_tune(
        [stack],
        tmp_path / "part.pt",
        model=make_model(),
        should_stop=lambda: len(calls) > 0,
        progress=calls.append,
        **kw,
    )
    assert part["stopped"] and part["steps"] == 1 and not (tmp_path / "part.pt").exists()
    with pytest.raises(FileExistsError, match="resume"):
        fine_tune([stack], tmp_path / "part.pt", model=make_model(), **kw)
    done = fine_tune([stack], tmp_path / "part.pt", model=make_model(), resume=True, **kw)
    assert done["steps"] == 3
    a, b = (
        load_state_dict_file(whole["files"]["checkpoint"]),
        load_state_dict_file(done["files"]["checkpoint"]),
    )
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_fine_tune_then_the_instance_head_in_one_call(make_model, cell_crop, tiny_checkpoint, tmp_path):
    # the chain of the CLI and the widget's Train tab: the head's file is refused before training,
    # trained on the fine-tuned model after it, and the first progress event carries the curves' start
    from napari_sam2.engine.train import fine_tune
    from napari_sam2.engine.train.instance_head import HeadTrainConfig, InstanceHead

    stack = _stack(cell_crop)
    cfg = TrainConfig(steps=2, prompts=PromptConfig(correction_clicks=0), **SMALL)
    kw = dict(checkpoint=tiny_checkpoint, config=cfg, split="time", block=1, val_fraction=0.3)
    head = HeadTrainConfig(steps=2, width=16)
    head_path = tmp_path / "t.instance-head.pt"
    head_path.write_bytes(b"mine")
    with pytest.raises(FileExistsError, match="instance-head.pt"):
        fine_tune([stack], tmp_path / "t.pt", model=make_model(), instance_head=head, **kw)
    assert head_path.read_bytes() == b"mine" and not (tmp_path / "t.pt").exists()
    head_path.unlink()
    events = []
    out = fine_tune(
        [stack], tmp_path / "t.pt", model=make_model(), instance_head=head, progress=events.append, **kw
    )
    assert out["files"]["instance_head"] == head_path and "val_f1" in out["instance_head"]
    assert InstanceHead.load(head_path)[1]["checkpoint"] == str(tmp_path / "t.pt")
    assert [e.get("phase") for e in events] == [None, None, "instance head", "instance head"]
    assert events[0]["before"] == {"loss": [], "val_iou": [(0, out["val_iou_before"])]}
    assert "before" not in events[1]
    # a stop during the head keeps the written checkpoint and writes no head
    events.clear()
    out = fine_tune(
        [stack],
        tmp_path / "u.pt",
        model=make_model(),
        instance_head=head,
        progress=events.append,
        should_stop=lambda: any(e.get("phase") for e in events),
        **kw,
    )
    assert out["instance_head_stopped"] and out["files"]["checkpoint"].exists()
    assert not (tmp_path / "u.instance-head.pt").exists() and "instance_head" not in out["files"]
