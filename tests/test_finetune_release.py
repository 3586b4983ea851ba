"""Fine-tuning the released GLIDE on your own image-text pairs, end to end on the tiny official-architecture
fixtures (tests/data/glide_text2im_tiny): convert a released .pt, fine-tune a few steps on a 16-image folder
with train.init_from, export, load and sample. For the base, the upsampler and both inpainting models.

The tiny fixtures have a 64-token vocabulary, so the captions go through GLIDE's BPE over a tiny vocabulary
written in the release's format (encoder.json + vocab.bpe), every id below 64."""
from __future__ import annotations

import json

import pytest
import torch
import yaml
from safetensors.torch import load_file
from test_convert import TINY, UNET_KINDS, released_pt, tiny_unet_config, unet_kwargs

import glide_minimal as gm
from conftest import write_folder
from glide_minimal import pretrained
from glide_minimal.cli import main
from glide_minimal.convert import convert
from glide_minimal.models.bpe import byte_to_unicode
from glide_minimal.train import Trainer, export_weights


def write_tiny_glide_vocab(folder) -> None:
    """GLIDE's vocabulary files with one token per byte of the lower-case letters and space (ids 0..26) and
    <|endoftext|> (padding) at 63: the tiny models' 64 token embeddings."""
    symbols = sorted({byte_to_unicode()[b] for b in b" abcdefghijklmnopqrstuvwxyz"})
    encoder = {s: i for i, s in enumerate(symbols)} | {"<|endoftext|>": 63}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "encoder.json").write_text(json.dumps(encoder))
    (folder / "vocab.bpe").write_text("#version: 0.2\n")


@pytest.fixture
def released(tmp_path, monkeypatch):
    """(tmp_path, {kind: converted .safetensors}) with the tiny vocabulary as the user's GLIDE BPE files."""
    write_tiny_glide_vocab(tmp_path / "vocab")
    monkeypatch.setenv("GLIDE_MINIMAL_VOCAB", str(tmp_path / "vocab"))
    write_folder(tmp_path / "data", n=16)
    return tmp_path


def finetune_overrides(tmp_path, source) -> dict:
    return {"data.dataset": "folder", "data.path": str(tmp_path / "data"), "data.num_workers": 0,
            "data.p_uncond": 0.2, "train.init_from": str(source), "train.batch_size": 4, "train.max_steps": 3,
            "train.lr": 1e-4, "train.warmup_steps": 0, "train.log_every": 1, "train.ckpt_every": 3}


def fine_tune_config(kind: str, tmp_path, source):
    cfg = tiny_unet_config(kind).to_dict()
    for key, value in finetune_overrides(tmp_path, source).items():
        section, name = key.split(".")
        cfg[section][name] = value
    return gm.config.config_from_dict(cfg)


def test_the_tiny_vocabulary_tokenizes_the_folder_captions_below_64(released):
    tokens, mask = gm.models.get_tokenizer("glide-bpe", 8).padded_tokens_and_mask(["a red circle", ""])
    assert tokens.max() < 64 and mask[0].all() and not mask[1].any()


@pytest.mark.parametrize("kind", UNET_KINDS)
def test_convert_fine_tune_on_a_folder_then_load_and_run(released, kind):
    tmp_path = released
    source = convert(released_pt(tmp_path, kind), tmp_path / f"{kind}.safetensors", tiny_unet_config(kind))
    cfg = fine_tune_config(kind, tmp_path, source)
    trainer = Trainer(cfg, tmp_path / "run", progress=False)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    converted, _ = pretrained.load_weights(source)
    assert all(torch.equal(before[k], converted[k]) for k in converted)  # training starts from the release
    result = trainer.run()
    assert result["step"] == 3 and torch.isfinite(torch.tensor(result["loss"]))
    assert any(not torch.equal(v, before[k]) for k, v in trainer.model.state_dict().items())
    out = export_weights(tmp_path / "run", tmp_path / "mine.safetensors", dtype=torch.float32)
    model, loaded_cfg = pretrained.load_model(out)
    io = load_file(TINY / f"{kind}.io.safetensors")
    with torch.no_grad():
        output = model(io["x"], io["timesteps"], **unet_kwargs(io))
    assert output.shape == io["output"].shape and torch.isfinite(output).all()
    assert (output - io["output"]).abs().max() > 0  # fine-tuned: no longer the release's output
    assert loaded_cfg.model.super_res == ("upsample" in kind) and loaded_cfg.model.inpaint == ("inpaint" in kind)


def test_the_cli_fine_tunes_the_base_and_the_pipeline_samples_from_it(released, capsys):
    tmp_path = released
    source = convert(released_pt(tmp_path, "base"), tmp_path / "base.safetensors", tiny_unet_config("base"))
    config = tmp_path / "tiny-base.yaml"
    config.write_text(yaml.safe_dump(tiny_unet_config("base").to_dict()))
    sets = [f"{k}={v}" for k, v in finetune_overrides(tmp_path, source).items()]
    args = ["train", "--config", str(config), "--out", str(tmp_path / "run"), "--no-progress"]
    assert main([*args, *(x for s in sets for x in ("--set", s))]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["step"] == 3
    out = export_weights(tmp_path / "run", tmp_path / "mine.safetensors")
    pipe = gm.load_pipeline(str(out), device="cpu")
    images = pipe("a red circle", num_images=2, steps=3, guidance_scale=3.0, seed=0)
    assert images.shape == (2, 3, 16, 16) and torch.isfinite(images).all()
