"""Released GLIDE (filtered) checkpoints: configs, parameter counts, key mapping, and the proof that
converted weights give the official implementation's outputs.

tests/data/glide_text2im_state_dicts/*.json: every key and shape of the six released files.
tests/data/glide_text2im_tiny/: tiny models of the official architecture with random weights, fixed
inputs and the official code's outputs (index.json there says how each output was made).
"""
import json
import math
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from safetensors.torch import load_file

from glide_minimal import pretrained
from glide_minimal.checkpoint import CheckpointError
from glide_minimal.cli import main
from glide_minimal.config import config_from_dict, load_config
from glide_minimal.convert import (
    CONFIGS,
    convert,
    convert_clip,
    convert_state_dict,
    detect_kind,
    load_released,
    our_key,
)
from glide_minimal.models import build_model

DATA = Path(__file__).parent / "data"
TINY = DATA / "glide_text2im_tiny"
STATE_DICTS = DATA / "glide_text2im_state_dicts"
UNET_KINDS = ("base", "upsample", "base-inpaint", "upsample-inpaint")
RELEASED_FILES = {"base": "base", "upsample": "upsample", "base-inpaint": "base-inpaint",
                  "upsample-inpaint": "upsample-inpaint", "clip-image": "clip-image-enc", "clip-text": "clip-text-enc"}
TOLERANCE = 1e-5


def parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# --- configs and parameter counts --------------------------------------------------------------------

@pytest.mark.parametrize("name, count", [
    ("glide-filtered-base", 385_030_726), ("glide-filtered-upsample", 398_361_286),
    ("glide-filtered-base-inpaint", 385_037_638), ("glide-filtered-upsample-inpaint", 398_368_198),
    ("glide-filtered-clip-image", 86_443_776), ("glide-filtered-clip-text", 71_679_488),
])
def test_released_config_has_the_released_parameter_count(name, count):
    assert parameters(build_model(name, device="meta")) == count


@pytest.mark.parametrize("name, target", [
    ("glide-paper-base", 3.5e9), ("glide-paper-upsample", 1.5e9),
    ("glide-paper-clip", 428e6),  # CLIP ViT-L/14's 427.6 M: same token grid, 1000 timestep rows for the class token
])
def test_paper_config_is_within_two_percent_of_the_paper(name, target):
    assert abs(parameters(build_model(name, device="meta")) / target - 1) < 0.02


def test_both_clip_encoders_together_are_the_two_files_plus_the_logit_scale():
    assert parameters(build_model("glide-filtered-clip", device="meta")) == 86_443_776 + 71_679_488 + 1


# --- key mapping -------------------------------------------------------------------------------------

def released_shapes(kind: str) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v) for k, v in json.loads((STATE_DICTS / f"{RELEASED_FILES[kind]}.json").read_text()).items()}


@pytest.mark.parametrize("kind", list(RELEASED_FILES))
def test_every_released_key_maps_to_ours_with_the_same_shape(kind):
    shapes = released_shapes(kind)
    assert detect_kind(shapes) == kind
    mapped = {our_key(k, kind): shape for k, shape in shapes.items()}
    assert len(mapped) == len(shapes)  # no two released keys land on one of ours
    own = {k: tuple(v.shape) for k, v in build_model(CONFIGS[kind], device="meta").state_dict().items()}
    assert sorted(own.keys() - mapped.keys()) == [] and sorted(mapped.keys() - own.keys()) == []
    assert {k: s for k, s in mapped.items() if own[k] != s} == {}


def test_both_released_clip_files_fill_one_noised_clip():
    def meta(kind):
        return {k: torch.empty(s, device="meta") for k, s in released_shapes(kind).items()}

    state = convert_clip(meta("clip-image"), meta("clip-text"))
    own = build_model("glide-filtered-clip", device="meta").state_dict()
    assert state.keys() == own.keys() and all(state[k].shape == own[k].shape for k in own)
    assert math.exp(state["logit_scale"].item()) == pytest.approx(100.0)  # the release's fixed scale


def test_unknown_released_key_is_named():
    with pytest.raises(KeyError, match="blocks.block_0.f_attn.f_z.w"):
        our_key("blocks.block_0.f_attn.f_z.w", "clip-image")


def test_a_file_that_is_no_released_model_is_refused():
    with pytest.raises(CheckpointError, match="not a released GLIDE checkpoint"):
        detect_kind({"conv.weight": (3, 3)})
    with pytest.raises(CheckpointError, match="takes 5 channels"):
        detect_kind({"input_blocks.0.0.weight": (192, 5, 3, 3)})


# --- the proof: tiny official-architecture models reproduce the official outputs ---------------------

def tiny_unet_config(kind: str):
    """index.json's tiny settings: 16 px, 32 channels, mult 1,2, attention at 8 px, 16 channels per head,
    text 2 x 32 wide with 2 heads over 8 tokens of a 64-token vocabulary, learned sigma."""
    return config_from_dict({
        "name": f"tiny-{kind}",
        "model": dict(image_size=16, model_channels=32, channel_mult=[1, 2], num_res_blocks=1,
                      attention_resolutions=[8], num_head_channels=16, dropout=0.0, learn_sigma=True,
                      text_ctx=8, text_width=32, text_layers=2, text_heads=2, tokenizer="glide-bpe",
                      text_vocab_size=64, super_res="upsample" in kind, inpaint="inpaint" in kind),
        "diffusion": dict(model_var_type="learned_range", loss_type="hybrid"),
        "data": dict(dataset="shapesworld", image_size=16),
    })


def tiny_clip_config(part: str = "both"):
    """index.json's tiny noised CLIP: 16 px, patch 4, 2 x 32 wide (2 heads) for images and for text
    (context 20, 64 tokens), 32-d embeddings, 1000 timesteps, the release's pixel standardisation."""
    return config_from_dict({
        "name": "tiny-clip", "task": "clip",
        "clip": dict(image_size=16, patch_size=4, width=32, layers=2, heads=2, text_ctx=20, text_width=32,
                     text_layers=2, text_heads=2, embed_dim=32, num_timesteps=1000, tokenizer="clip-bpe",
                     vocab_size=64, input_norm="clip", part=part),
        "data": dict(dataset="shapesworld", image_size=16),
    })


def fixture_weights(name: str) -> dict[str, torch.Tensor]:
    return {k: v.float() for k, v in load_file(TINY / f"{name}.weights.safetensors").items()}  # fp16 values, exact


def unet_kwargs(io: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: io[k] for k in ("tokens", "mask", "low_res", "inpaint_image", "inpaint_mask") if k in io}


@pytest.mark.parametrize("kind", UNET_KINDS)
def test_converted_unet_reproduces_the_official_output(kind):
    torch.manual_seed(0)
    model = build_model(tiny_unet_config(kind)).eval()
    model.load_state_dict(convert_state_dict(fixture_weights(kind)))
    io = load_file(TINY / f"{kind}.io.safetensors")
    with torch.no_grad():
        out = model(io["x"], io["timesteps"], **unet_kwargs(io))
        pooled, context = model.encode_text(io["tokens"], io["mask"])
    assert (pooled - io["xf_proj"]).abs().max() < TOLERANCE  # the caption's last position, projected
    assert (context - io["xf_out"]).abs().max() < TOLERANCE  # every token, for the attention layers
    assert out.shape == io["output"].shape and (out - io["output"]).abs().max() < TOLERANCE


def test_converted_clip_reproduces_the_official_embeddings_and_guidance_gradient():
    model = build_model(tiny_clip_config()).eval()
    model.load_state_dict(convert_clip(fixture_weights("clip-image"), fixture_weights("clip-text")))
    io = load_file(TINY / "clip.io.safetensors")
    mask = torch.arange(io["text"].shape[1])[None] < io["text_len"][:, None]  # the release passes lengths
    images = io["images"].clone().requires_grad_(True)
    image_emb, text_emb = model.embed_image(images, io["timesteps"]), model.embed_text(io["text"], mask)
    assert (image_emb - io["image_emb"]).abs().max() < TOLERANCE
    assert (text_emb - io["text_emb"]).abs().max() < TOLERANCE
    (grad,) = torch.autograd.grad(100 * (image_emb * text_emb.detach()).sum(), images)  # the release's cond_fn
    assert (grad - io["cond_grad"]).abs().max() < TOLERANCE * io["cond_grad"].abs().max()


def test_each_released_clip_file_converts_to_its_encoder_alone():
    io = load_file(TINY / "clip.io.safetensors")
    image = build_model(tiny_clip_config("image")).eval()
    image.load_state_dict(convert_state_dict(fixture_weights("clip-image")))
    text = build_model(tiny_clip_config("text")).eval()
    text.load_state_dict(convert_state_dict(fixture_weights("clip-text")))
    mask = torch.arange(io["text"].shape[1])[None] < io["text_len"][:, None]
    with torch.no_grad():
        assert (F.normalize(image(io["images"], io["timesteps"]), dim=-1) - io["image_emb"]).abs().max() < TOLERANCE
        assert (F.normalize(text(io["text"], mask), dim=-1) - io["text_emb"]).abs().max() < TOLERANCE


def test_clip_without_the_release_pixel_standardisation_differs():
    """input_norm is what makes converted CLIP weights see the pixels they were trained on."""
    cfg = tiny_clip_config()
    cfg.clip.input_norm = "none"
    model = build_model(cfg).eval()
    model.load_state_dict(convert_clip(fixture_weights("clip-image"), fixture_weights("clip-text")))
    io = load_file(TINY / "clip.io.safetensors")
    with torch.no_grad():
        assert (model.embed_image(io["images"], io["timesteps"]) - io["image_emb"]).abs().max() > 100 * TOLERANCE


# --- files: .pt in, safetensors + config JSON out ----------------------------------------------------

def released_pt(tmp_path: Path, name: str) -> Path:
    """A fixture's weights saved the way the release saves them: a plain state dict in a .pt file."""
    path = tmp_path / f"{name}.pt"
    torch.save({k: v.half() for k, v in fixture_weights(name).items()}, path)
    return path


def test_convert_writes_a_checkpoint_that_loads_and_reproduces_the_official_output(tmp_path):
    out = convert(released_pt(tmp_path, "upsample-inpaint"), tmp_path / "up.safetensors",
                  tiny_unet_config("upsample-inpaint"))
    assert json.loads(out.with_suffix(".json").read_text())["model"]["super_res"] is True
    model, cfg = pretrained.load_model(out)
    io = load_file(TINY / "upsample-inpaint.io.safetensors")
    with torch.no_grad():
        assert (model(io["x"], io["timesteps"], **unet_kwargs(io)) - io["output"]).abs().max() < TOLERANCE
    assert cfg.model.inpaint and cfg.model.super_res


def test_cli_convert_joins_both_clip_files_into_one_model(tmp_path, capsys):
    config = tmp_path / "tiny-clip.yaml"
    config.write_text(yaml.safe_dump(tiny_clip_config().to_dict()))
    out = tmp_path / "clip.safetensors"
    args = [str(released_pt(tmp_path, "clip-text")), str(released_pt(tmp_path, "clip-image"))]  # any order
    assert main(["convert", *args, "--out", str(out), "--config", str(config), "--dtype", "fp32"]) == 0
    assert "wrote" in capsys.readouterr().out
    model, cfg = pretrained.load_model(out)
    assert cfg.task == "clip" and cfg.clip.input_norm == "clip"
    io = load_file(TINY / "clip.io.safetensors")
    with torch.no_grad():
        assert (model.embed_image(io["images"], io["timesteps"]) - io["image_emb"]).abs().max() < TOLERANCE


def test_cli_convert_error_names_a_config_that_does_not_fit(tmp_path, capsys):
    assert main(["convert", str(released_pt(tmp_path, "base")), "--out", str(tmp_path / "b.safetensors"),
                 "--config", "tutorial-text"]) == 2
    assert "do not fit config 'tutorial-text'" in capsys.readouterr().err


def test_load_released_refuses_pickled_objects(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"weights": torch.zeros(1), "hook": CheckpointError("not a tensor")}, path)
    with pytest.raises(CheckpointError, match="weights_only"):
        load_released(path)
    torch.save({"step": 3}, path)  # loads safely, but is no state dict of tensors
    with pytest.raises(CheckpointError, match="not a state dict of tensors"):
        load_released(path)


def test_missing_released_file_is_named(tmp_path):
    with pytest.raises(CheckpointError, match="nothere.pt does not exist"):
        load_released(tmp_path / "nothere.pt")


def test_converted_released_configs_load_by_name():
    for kind, name in CONFIGS.items():
        assert load_config(name).name == name


def test_load_pipeline_accepts_a_converted_file_and_reads_the_users_vocabulary(tmp_path, monkeypatch):
    from test_bpe import write_glide_vocab

    from glide_minimal.models.bpe import GlideBPE
    from glide_minimal.pipelines import TextPipeline, load_pipeline

    out = convert(released_pt(tmp_path, "base"), tmp_path / "base.safetensors", tiny_unet_config("base"))
    monkeypatch.setenv("GLIDE_MINIMAL_VOCAB", str(tmp_path / "vocab"))
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "vocab" / "encoder.json"))):
        load_pipeline(str(out), device="cpu")  # the released BPE's files are the user's to supply
    write_glide_vocab(tmp_path / "vocab")
    pipe = load_pipeline(str(out), device="cpu")
    assert isinstance(pipe, TextPipeline) and isinstance(pipe.tokenizer, GlideBPE)
    assert pipe.tokenizer.context_length == 8


def test_one_clip_encoder_alone_cannot_be_trained(tmp_path):
    from glide_minimal.train import Trainer

    with pytest.raises(ValueError, match="clip.part 'image' builds one CLIP encoder alone"):
        Trainer(tiny_clip_config("image"), tmp_path, device="cpu", progress=False)


@pytest.mark.parametrize("scale", [1.0, 3.0])
def test_clip_guidance_at_scale_s_is_the_releases_gradient_at_scale_s(scale):
    """clip_cond_fn folds the CLIP's logit scale (100 for the release) into the gradient, as
    glide-text2im's CLIPModel.cond_fn does, so guidance_scale means the same number in both."""
    from glide_minimal.diffusion.guidance import clip_cond_fn

    model = build_model(tiny_clip_config()).eval()
    model.load_state_dict(convert_clip(fixture_weights("clip-image"), fixture_weights("clip-text")))
    io = load_file(TINY / "clip.io.safetensors")
    mask = torch.arange(io["text"].shape[1])[None] < io["text_len"][:, None]
    grad = clip_cond_fn(model, io["text"], mask, guidance_scale=scale)(io["images"], io["timesteps"])
    expected = scale * io["cond_grad"]
    assert (grad - expected).abs().max() < TOLERANCE * expected.abs().max()
