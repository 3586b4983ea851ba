"""TextPipeline (prompt handling, CFG and CLIP guidance) and the CLIP cond_fn."""
import pytest
import torch

from conftest import tiny_text_config
from glide_minimal.config import load_config
from glide_minimal.diffusion.guidance import clip_cond_fn
from glide_minimal.models import build_model, get_tokenizer
from glide_minimal.pipelines import TextPipeline

CLIP_TINY = {"clip.width": 32, "clip.layers": 1, "clip.heads": 2, "clip.text_width": 32, "clip.text_layers": 1,
             "clip.text_heads": 2, "clip.embed_dim": 16, "clip.patch_size": 4, "diffusion.num_timesteps": 50}


@pytest.fixture(scope="module")
def pipe() -> TextPipeline:
    torch.manual_seed(0)
    cfg = tiny_text_config()
    model = build_model(cfg).eval()
    for p in model.parameters():
        if not p.any():
            torch.nn.init.normal_(p, std=0.1)
    clip = build_model(load_config("tutorial-text-clip", CLIP_TINY)).eval()
    return TextPipeline(model, cfg, clip=clip)


def test_string_prompt_gives_num_images_and_list_gives_one_each(pipe):
    assert pipe("a large red circle in the center", num_images=3, steps=2).shape == (3, 3, 16, 16)
    assert pipe("a large red circle in the center", steps=2).shape == (1, 3, 16, 16)
    out = pipe(["a large red circle in the center", "a small blue square on the left"], steps=2)
    assert out.shape == (2, 3, 16, 16) and 0 <= out.min() and out.max() <= 1


def test_prompt_list_length_must_match_num_images(pipe):
    with pytest.raises(ValueError, match="got 2 prompts but num_images=3"):
        pipe(["a red circle", "a blue square"], num_images=3, steps=2)


def test_unknown_word_and_unknown_guidance_are_clear_errors(pipe):
    with pytest.raises(ValueError, match="unknown word 'purple'"):
        pipe("a purple circle", steps=2)
    with pytest.raises(ValueError,
                       match="unknown guidance 'clipp'; choose one of: cfg, clip, clip-unconditional, none"):
        pipe("a red circle", guidance="clipp", steps=2)


def test_cfg_scale_one_is_the_conditional_model_and_zero_the_empty_prompt(pipe):
    prompt = "a large red circle in the center"
    cond = pipe(prompt, guidance="none", steps=3, seed=1)
    # atol in both: batched [cond; uncond] arithmetic differs in the last bits
    torch.testing.assert_close(pipe(prompt, guidance_scale=1.0, steps=3, seed=1), cond, atol=1e-3, rtol=0)
    torch.testing.assert_close(pipe(prompt, guidance_scale=0.0, steps=3, seed=1),
                               pipe("", guidance="none", steps=3, seed=1), atol=1e-3, rtol=0)
    assert (pipe(prompt, guidance_scale=4.0, steps=3, seed=1) - cond).abs().max() > 1e-4


def test_clip_guidance_moves_samples_and_needs_a_caption(pipe):
    prompt = "a large red circle in the center"
    plain = pipe(prompt, guidance="clip", guidance_scale=0.0, steps=3, seed=2)
    torch.testing.assert_close(plain, pipe(prompt, guidance="none", steps=3, seed=2))
    assert (pipe(prompt, guidance="clip", guidance_scale=50.0, steps=3, seed=2) - plain).abs().max() > 1e-4
    with pytest.raises(ValueError, match="needs a caption"):
        pipe("", guidance="clip", steps=2)
    # clip-unconditional: the model sees only the empty caption; at scale 0 it is the unconditional model
    torch.testing.assert_close(pipe(prompt, guidance="clip-unconditional", guidance_scale=0.0, steps=3, seed=2),
                               pipe("", guidance="none", steps=3, seed=2))
    assert (pipe(prompt, guidance="clip-unconditional", guidance_scale=50.0, steps=3, seed=2)
            - pipe("", guidance="none", steps=3, seed=2)).abs().max() > 1e-4


def test_clip_guidance_without_a_clip_is_a_clear_error():
    cfg = tiny_text_config()
    with pytest.raises(ValueError, match="needs a noised CLIP checkpoint"):
        TextPipeline(build_model(cfg).eval(), cfg)("a red circle", guidance="clip", steps=2)


def test_clip_cond_fn_is_the_gradient_of_the_similarity():
    torch.manual_seed(0)
    clip = build_model(load_config("tutorial-text-clip", CLIP_TINY)).eval()
    tokens, mask = get_tokenizer("shapesworld", 12).padded_tokens_and_mask(["a red circle", "a blue cross"])
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([3, 40])
    grad = clip_cond_fn(clip, tokens, mask, guidance_scale=2.0)(x, t)
    # Finite difference along a random direction: d/de s * sum_i f(x + e v, t) . g(c_i) = <grad, v>.
    v = torch.randn_like(x)
    scale = clip.similarity_scale()  # the CLIP's logit scale e^tau is part of the guided quantity
    sim = lambda y: 2.0 * scale * (clip.embed_image(y, t) * clip.embed_text(tokens, mask)).sum().double()
    eps = 1e-3
    numeric = (sim(x + eps * v) - sim(x - eps * v)) / (2 * eps)
    assert abs(numeric.item() - (grad * v).sum().item()) < 2e-2 * max(1.0, abs(numeric.item()))
