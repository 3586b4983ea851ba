"""Fine-tuning with added inputs (glide_minimal/finetune.py): the inpainting model starts as the text model,
the inpainting upsampler as the upsampler, the augmentation-level embedding changes nothing at init."""
from __future__ import annotations

import re

import pytest
import torch

from conftest import randomize_, tiny_text_config
from glide_minimal import pretrained
from glide_minimal.checkpoint import CheckpointError
from glide_minimal.finetune import init_from_pretrained, transfer_weights
from glide_minimal.models import build_model


def inputs(cfg, n: int = 2, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Random x_t, t, caption tokens and (where the model takes them) low-res, aug level, image and mask."""
    g = torch.Generator().manual_seed(seed)
    size = cfg.model.image_size
    x, t = torch.randn(n, 3, size, size, generator=g), torch.randint(0, 50, (n,), generator=g)
    kwargs = {"tokens": torch.randint(1, 20, (n, 12), generator=g), "mask": torch.ones(n, 12, dtype=torch.bool)}
    if cfg.model.super_res:
        kwargs["low_res"] = torch.randn(n, 3, size // 4, size // 4, generator=g)
    if cfg.model.aug_level_embed:
        kwargs["aug_level"] = torch.randint(0, 50, (n,), generator=g)
    if cfg.model.inpaint:
        kwargs["inpaint_image"] = torch.randn(n, 3, size, size, generator=g)
        kwargs["inpaint_mask"] = (torch.rand(n, 1, size, size, generator=g) > 0.5).float()
    return x, t, kwargs


def trained(overrides: dict | None = None) -> tuple[torch.nn.Module, object]:
    """A model of the tiny text config (+ overrides) with every weight perturbed, as after training."""
    cfg = tiny_text_config(overrides)
    torch.manual_seed(0)
    return randomize_(build_model(cfg)).eval(), cfg


def run(model, x, t, kwargs, drop: tuple[str, ...] = ()) -> torch.Tensor:
    with torch.no_grad():
        return model(x, t, **{k: v for k, v in kwargs.items() if k not in drop})


@pytest.mark.parametrize("source, target", [
    ({}, {"model.inpaint": True}),  # text -> inpainting base (GLIDE section 4.3)
    ({"model.super_res": True}, {"model.super_res": True, "model.inpaint": True}),  # upsampler -> inpainting upsampler
    ({"model.super_res": True}, {"model.super_res": True, "model.aug_level_embed": True}),  # + the augmentation level
    ({}, {"model.attention_resolutions": [16, 8]}),  # + self-attention at 16 px
])
def test_fine_tuned_model_starts_as_its_source_whatever_the_new_inputs(source, target):
    src, src_cfg = trained(source)
    cfg = tiny_text_config(target)
    torch.manual_seed(1)
    model = build_model(cfg).eval()
    fresh = transfer_weights(src.state_dict(), src_cfg.model, model)
    assert fresh  # something was added
    x, t, kwargs = inputs(cfg)
    new_inputs = ("inpaint_image", "inpaint_mask", "aug_level")
    expected = run(src, x, t, kwargs, drop=new_inputs)  # no source here has any of them
    torch.testing.assert_close(run(model, x, t, kwargs), expected, rtol=0, atol=1e-5)
    other = {**kwargs, **{k: v.flip(0) for k, v in kwargs.items() if k in new_inputs}}
    torch.testing.assert_close(run(model, x, t, other), expected, rtol=0, atol=1e-5)  # the new inputs do nothing yet


def test_new_input_channels_are_zero_and_low_res_channels_move_after_the_inpaint_ones():
    src, src_cfg = trained({"model.super_res": True})
    model = build_model(tiny_text_config({"model.super_res": True, "model.inpaint": True}))
    transfer_weights(src.state_dict(), src_cfg.model, model)
    old, new = src.input_blocks[0][0].weight, model.input_blocks[0][0].weight  # [C_out, 6, 3, 3] -> [C_out, 10, 3, 3]
    assert torch.equal(new[:, :3], old[:, :3])  # x_t
    assert not new[:, 3:7].any()  # image * mask and mask: zero
    assert torch.equal(new[:, 7:], old[:, 3:])  # low_res, now last (the released order)
    assert torch.equal(model.input_blocks[0][0].bias, src.input_blocks[0][0].bias)


def test_new_weights_learn():
    """Zero weights are not stuck: the first step's gradient reaches the new input channels."""
    src, src_cfg = trained()
    cfg = tiny_text_config({"model.inpaint": True})
    model = build_model(cfg)
    transfer_weights(src.state_dict(), src_cfg.model, model)
    x, t, kwargs = inputs(cfg)
    model(x, t, **kwargs).square().mean().backward()
    assert model.input_blocks[0][0].weight.grad[:, 3:7].abs().sum() > 0


@pytest.mark.parametrize("source, target, message", [
    ({}, {"model.model_channels": 32, "model.num_head_channels": 32},
     "model.model_channels is 16 in the source but 32 here"),
    ({"model.inpaint": True}, {}, "the source model has inputs this one lacks (model.inpaint)"),
    ({"model.attention_resolutions": [16, 8]}, {}, "lacks the source's [16]: fine-tuning can add attention"),
])
def test_fine_tuning_across_architectures_is_an_error(source, target, message):
    src, src_cfg = trained(source)
    with pytest.raises(CheckpointError, match=re.escape(message)):
        transfer_weights(src.state_dict(), src_cfg.model, build_model(tiny_text_config(target)))


def test_init_from_a_published_checkpoint(tmp_path, monkeypatch):
    src, src_cfg = trained()
    pretrained.publish("tiny-text", src.state_dict(), src_cfg.to_dict(), record={"command": "pytest"},
                       dtype=torch.float32, root=tmp_path)
    monkeypatch.setenv("GLIDE_MINIMAL_CHECKPOINTS", str(tmp_path))
    cfg = tiny_text_config({"model.inpaint": True, "train.init_from": "tiny-text"})
    model = build_model(cfg).eval()
    assert init_from_pretrained(model, cfg.train.init_from) == ["input_blocks.0.0.weight"]
    x, t, kwargs = inputs(cfg)
    torch.testing.assert_close(run(model, x, t, kwargs), run(src, x, t, kwargs, drop=("inpaint_image", "inpaint_mask")),
                               rtol=0, atol=1e-5)
    with pytest.raises(KeyError, match="unknown checkpoint 'tiny-txet'"):
        init_from_pretrained(model, "tiny-txet")


def test_trainer_starts_from_train_init_from(tmp_path, monkeypatch):
    from glide_minimal.train import Trainer

    src, src_cfg = trained()
    pretrained.publish("tiny-text", src.state_dict(), src_cfg.to_dict(), record={"command": "pytest"},
                       dtype=torch.float32, root=tmp_path / "ckpts")
    monkeypatch.setenv("GLIDE_MINIMAL_CHECKPOINTS", str(tmp_path / "ckpts"))
    trainer = Trainer(tiny_text_config({"model.inpaint": True, "train.init_from": "tiny-text"}), tmp_path / "run",
                      progress=False)
    for model in (trainer.model, trainer.ema):  # the EMA starts from the fine-tuning start, not a fresh init
        weight = model.input_blocks[0][0].weight
        assert torch.equal(weight[:, :3], src.input_blocks[0][0].weight) and not weight[:, 3:].any()
        assert torch.equal(model.out[2].weight, src.out[2].weight)


def test_a_word_level_text_model_grows_its_vocabulary_and_context():
    """Chapter 4's curriculum: the canonical-caption model starts the varied-caption one, word by word."""
    from glide_minimal.models.text import get_tokenizer

    src, src_cfg = trained()  # tokenizer shapesworld, text_ctx 12
    cfg = tiny_text_config({"model.tokenizer": "shapesworld-varied", "model.text_ctx": 20})
    torch.manual_seed(1)
    model = build_model(cfg).eval()
    fresh = transfer_weights(src.state_dict(), src_cfg.model, model)
    assert set(fresh) == {"text_encoder.token_embedding.weight", "text_encoder.positional_embedding",
                          "text_encoder.padding_embedding"}
    old, new = get_tokenizer("shapesworld", 12), get_tokenizer("shapesworld-varied", 20)
    old_rows, new_rows = src.text_encoder.token_embedding.weight, model.text_encoder.token_embedding.weight
    for word in ("red", "circle", "top", "on"):  # found by the word: the ids differ between the vocabularies
        assert torch.equal(new_rows[new.ids[word]], old_rows[old.ids[word]])
    assert old.ids["top"] != new.ids["top"]
    assert torch.equal(new_rows[0], old_rows[0])  # padding
    for key in ("positional_embedding", "padding_embedding"):
        before, after = getattr(src.text_encoder, key), getattr(model.text_encoder, key)
        assert torch.equal(after[:11], before[:11]) and torch.equal(after[-1], before[-1])  # the pooled slot last
        assert not torch.equal(after[11], before[11])  # the positions between keep their init
    # Everything else is the source's: the U-Net body reads the same weights.
    assert torch.equal(model.input_blocks[1][0].in_layers[2].weight, src.input_blocks[1][0].in_layers[2].weight)


@pytest.mark.parametrize("target, message", [
    ({"model.tokenizer": "shapesworld-varied", "model.text_ctx": 8}, "model.text_ctx can grow, not shrink"),
    ({"model.tokenizer": "bpe", "model.text_vocab_size": 300, "model.tokenizer_file": "x.json"},
     "only between word-level vocabularies"),
])
def test_a_text_model_cannot_shrink_its_context_or_leave_word_level_vocabularies(target, message):
    src, src_cfg = trained()
    with pytest.raises(CheckpointError, match=re.escape(message)):
        transfer_weights(src.state_dict(), src_cfg.model, build_model(tiny_text_config(target)))


def test_a_vocabulary_that_lacks_source_words_is_an_error():
    src, src_cfg = trained({"model.tokenizer": "shapesworld-varied", "model.text_ctx": 20})
    with pytest.raises(CheckpointError, match="lacks words the source model knows: .*little"):
        transfer_weights(src.state_dict(), src_cfg.model, build_model(tiny_text_config()))


def test_a_second_stage_starts_from_the_first_stages_export(tmp_path, monkeypatch):
    """scripts/train_ch4.sh and train_ch7.sh: stage 1 is trained, exported outside the store with
    publish_checkpoint.py --export, and stage 2 names that file in train.init_from; its MANIFEST record keeps
    the path and the file's sha256."""
    import subprocess
    import sys
    from pathlib import Path

    from glide_minimal.checkpoint import load_tensors
    from glide_minimal.train import Trainer

    root = Path(__file__).resolve().parents[1]
    steps = {"train.max_steps": 2, "train.ckpt_every": 2, "train.batch_size": 4, "train.log_every": 1}
    Trainer(tiny_text_config(steps), tmp_path / "stage1", progress=False, device="cpu").run()
    export = tmp_path / "stage1" / "export" / "stage1.safetensors"
    script = [sys.executable, str(root / "scripts" / "publish_checkpoint.py"), "--run", str(tmp_path / "stage1")]
    done = subprocess.run([*script, "--export", str(export)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "exported" in done.stdout and export.exists()
    bad = subprocess.run([*script, "--export", str(tmp_path / "x.pt")], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "--export takes a .safetensors path, got" in bad.stderr
    stage2 = Trainer(tiny_text_config({**steps, "train.init_from": str(export)}), tmp_path / "stage2",
                     progress=False, device="cpu")
    exported, _ = load_tensors(export)
    for name, tensor in stage2.model.state_dict().items():  # the second stage starts where the first ended
        assert torch.equal(tensor, exported[name].float()), name
    stage2.run()
    monkeypatch.setenv("GLIDE_MINIMAL_CHECKPOINTS", str(tmp_path / "store"))
    pretrained.publish_run(tmp_path / "stage2", "tiny-stage2", "pytest", root=tmp_path / "store")
    record = pretrained.entry("tiny-stage2", tmp_path / "store")
    assert record["init_from"] == str(export)
    assert record["init_from_sha256"] == pretrained.sha256_file(export)
