"""The word-level tokenizer, GLIDE's text transformer, text conditioning of the U-Net, and the noised CLIP."""
import pytest
import torch

from conftest import tiny_text_config
from glide_minimal.config import load_config
from glide_minimal.models import build_model, get_tokenizer
from glide_minimal.models.clip import clip_loss_terms
from glide_minimal.models.text import TextTransformer, WordTokenizer
from glide_minimal.train import Trainer
from glide_minimal.vocabulary import COLOR_NAMES, GRAMMAR_WORDS, POSITIONS, SHAPES, SIZE_NAMES, caption_words


@pytest.fixture
def tok() -> WordTokenizer:
    return get_tokenizer("shapesworld", 12)


def test_tokenizer_pads_at_the_end_and_masks_real_tokens(tok):
    tokens, mask = tok.padded_tokens_and_mask(["a large red circle in the top left", ""])
    assert tokens.shape == mask.shape == (2, 12)
    assert mask[0].tolist() == [True] * 8 + [False] * 4
    assert tok.decode(tokens[0].tolist()) == "a large red circle in the top left"
    assert not mask[1].any() and (tokens[1] == tok.pad_id).all()  # the empty caption is all padding


def test_tokenizer_lowercases_and_ignores_punctuation(tok):
    assert tok.encode("A Large RED circle, in the top-left.") == tok.encode("a large red circle in the top left")


def test_unknown_word_is_named_with_suggestions(tok):
    with pytest.raises(ValueError, match=r"unknown word 'circel'.*'circle'"):
        tok.encode("a red circel")


def test_too_long_caption_is_truncated_with_a_warning():
    tok = WordTokenizer(caption_words(), 4)
    with pytest.warns(UserWarning, match="truncated to the context of 4: 'a large red circle'"):
        tokens, mask = tok.padded_tokens_and_mask("a large red circle in the top left")
    assert mask.all() and tok.decode(tokens[0].tolist()) == "a large red circle"


# The shapesworld tokenizer's ids as the shipped text models were trained with them: a word's id is its
# position here (0 is padding). Written out, so a change of words or of their order fails below.
TRAINED_IDS = ["<pad>", "a", "and", "blue", "bottom", "center", "circle", "cross", "cyan", "green", "in", "large",
               "left", "magenta", "on", "red", "right", "small", "square", "the", "top", "triangle", "yellow"]


def test_trained_ids_are_the_caption_words_sorted_after_padding():
    words = {*GRAMMAR_WORDS, *SHAPES, *COLOR_NAMES, *SIZE_NAMES, *(w for p in POSITIONS for w in p.split())}
    assert TRAINED_IDS == ["<pad>", *sorted(words)]


def test_shapesworld_tokenizer_gives_the_trained_ids(tok):
    captions = ["a large red circle in the top left", "a small blue square and a large yellow cross",
                "a small cyan cross on the right", "a large magenta triangle in the bottom", "a small green square",
                "a large red circle in the center", ""]
    tokens, mask = tok.padded_tokens_and_mask(captions)
    for row, caption in enumerate(captions):
        ids = [TRAINED_IDS.index(word) for word in caption.split()]
        assert tokens[row].tolist() == ids + [0] * (12 - len(ids)), caption
        assert mask[row].tolist() == [True] * len(ids) + [False] * (12 - len(ids))
    assert len(tok) == len(TRAINED_IDS)


def test_word_tokenizer_takes_its_vocabulary_as_an_argument():
    tok = WordTokenizer(["zebra", "a", "striped", "a"], 3)  # any words; repeats count once; id = sorted position
    assert tok.vocab == ["<pad>", "a", "striped", "zebra"]
    assert tok.encode("A striped zebra") == [1, 2, 3]
    with pytest.raises(ValueError, match="unknown word 'circle'"):
        tok.encode("a circle")


def test_vocabulary_covers_every_caption_word(tok):
    from glide_minimal.datasets import load_shapesworld

    _, captions = load_shapesworld(16, max_objects=2, num_scenes=50)
    tok.padded_tokens_and_mask(captions)  # no unknown word


def test_padding_embedding_replaces_padded_positions():
    torch.manual_seed(0)
    xf = TextTransformer(vocab_size=10, context_length=4, width=16, layers=1, heads=2)
    tokens = torch.tensor([[3, 4, 0, 0]])
    other = torch.tensor([[3, 4, 7, 9]])  # same real tokens, different ids where masked out
    mask = torch.tensor([[True, True, False, False]])
    assert torch.equal(xf(tokens, mask), xf(other, mask))
    assert not torch.allclose(xf(tokens, mask), xf(tokens, torch.ones_like(mask)))
    with pytest.raises(ValueError, match="pass mask"):
        xf(tokens)


def test_text_transformer_is_bidirectional():
    """The last position must see the first word, or GLIDE's pooled last token could not summarise the caption."""
    torch.manual_seed(0)
    xf = TextTransformer(vocab_size=10, context_length=4, width=16, layers=1, heads=2)
    mask = torch.ones(1, 4, dtype=torch.bool)
    a, b = xf(torch.tensor([[1, 2, 3, 4]]), mask), xf(torch.tensor([[5, 2, 3, 4]]), mask)
    assert (a[0, -1] - b[0, -1]).abs().max() > 1e-4


def _text_model():
    cfg = tiny_text_config()
    torch.manual_seed(0)
    model = build_model(cfg)
    for p in model.parameters():  # a fresh U-Net outputs zeros (zero-init output layers): give them values
        if not p.any():
            torch.nn.init.normal_(p, std=0.2)
    return cfg, model


def test_caption_changes_the_unet_output_through_both_paths(tok):
    cfg, model = _text_model()
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([10, 10])
    tokens, mask = tok.padded_tokens_and_mask(["a large red circle in the center", "a small blue square on the left"])
    out = model(x, t, tokens=tokens, mask=mask)
    assert out.shape == (2, 3, 16, 16)
    assert (out[0] - model(x, t, tokens=tokens.flip(0), mask=mask.flip(0))[0]).abs().max() > 1e-3
    # Path 2 alone: with the pooled projection zeroed, the caption still reaches the pixels via attention.
    torch.nn.init.zeros_(model.transformer_proj.weight), torch.nn.init.zeros_(model.transformer_proj.bias)
    out = model(x, t, tokens=tokens, mask=mask)
    assert (out[0] - model(x, t, tokens=tokens.flip(0), mask=mask.flip(0))[0]).abs().max() > 1e-3


def test_attention_maps_cover_text_tokens_and_pixels(tok):
    cfg, model = _text_model()
    block = next(m for m in model.modules() if getattr(m, "encoder_kv", None) is not None)
    block.keep_attention = True
    tokens, mask = tok.padded_tokens_and_mask(["a large red circle in the center"])
    out_kept = model(torch.randn(1, 3, 16, 16), torch.tensor([5]), tokens=tokens, mask=mask)
    n, heads, queries, keys = block.attention.shape
    assert keys == 12 + queries  # one softmax over the 12 text positions and every pixel
    torch.testing.assert_close(block.attention.sum(-1), torch.ones(n, heads, queries))
    block.keep_attention = False
    torch.manual_seed(0)
    assert out_kept.shape == (1, 3, 16, 16)


def test_text_model_without_tokens_and_plain_model_with_tokens_are_errors(tok):
    cfg, model = _text_model()
    with pytest.raises(ValueError, match="text-conditional: pass tokens"):
        model(torch.randn(1, 3, 16, 16), torch.tensor([1]))
    plain = build_model(load_config("tutorial-ddpm"))
    tokens, mask = tok.padded_tokens_and_mask("a red circle")
    with pytest.raises(ValueError, match="not text-conditional"):
        plain(torch.randn(1, 1, 16, 16), torch.tensor([1]), tokens=tokens, mask=mask)


def test_trainer_drops_captions_to_the_empty_one(tmp_path):
    cfg = tiny_text_config({"data.p_uncond": 0.5})
    trainer = Trainer(cfg, tmp_path, progress=False)
    _, _, _, kwargs = trainer.batch(0)
    dropped = ~kwargs["mask"].any(-1)
    assert 0 < dropped.sum() < len(dropped)
    assert (kwargs["tokens"][dropped] == 0).all()
    assert trainer.cond["mask"].any(-1).all()  # the dataset itself is untouched


def test_text_model_trains_and_resumes_exactly(tmp_path):
    cfg = tiny_text_config({"train.max_steps": 4, "train.ckpt_every": 2})
    straight = Trainer(cfg, tmp_path / "a", progress=False)
    straight.run(4)
    half = Trainer(cfg, tmp_path / "b", progress=False)
    half.run(2)
    resumed = Trainer(cfg, tmp_path / "b", resume=True, progress=False)
    resumed.run(4)
    for (k, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), k


def _tiny_clip_cfg(**extra):
    overrides = {"clip.width": 32, "clip.layers": 1, "clip.heads": 2, "clip.text_width": 32, "clip.text_layers": 1,
                 "clip.text_heads": 2, "clip.embed_dim": 16, "clip.patch_size": 4, "diffusion.num_timesteps": 50,
                 "train.batch_size": 8, "train.max_steps": 3, "train.warmup_steps": 0, "train.log_every": 1,
                 "train.init_from": "", **extra}  # from scratch, not from the shipped CLIP's first stage
    return load_config("tutorial-text-clip", overrides)


def test_clip_caption_embedding_reads_up_to_the_last_real_token_only(tok):
    torch.manual_seed(0)
    clip = build_model(_tiny_clip_cfg())
    tokens, mask = tok.padded_tokens_and_mask(["a red circle", "a red circle"])
    tokens[1, 5:] = 7  # garbage after the caption: the causal encoder pooled at the last real token never sees it
    emb = clip.embed_text(tokens, mask)
    torch.testing.assert_close(emb[0], emb[1])
    other = clip.embed_text(*tok.padded_tokens_and_mask("a blue circle"))
    assert (emb[0] - other[0]).abs().max() > 1e-4


def test_clip_image_embedding_depends_on_t():
    torch.manual_seed(0)
    clip = build_model(_tiny_clip_cfg())
    x = torch.randn(2, 3, 16, 16)
    a, b = clip.embed_image(x, torch.tensor([0, 0])), clip.embed_image(x, torch.tensor([0, 49]))
    torch.testing.assert_close(a[0], b[0])
    assert (a[1] - b[1]).abs().max() > 1e-4
    with pytest.raises(ValueError, match=r"takes \[N, 3, 16, 16\]"):
        clip.embed_image(torch.randn(1, 3, 8, 8), torch.tensor([0]))


def test_clip_loss_treats_identical_captions_as_matches(tok):
    torch.manual_seed(0)
    clip = build_model(_tiny_clip_cfg())
    tokens, mask = tok.padded_tokens_and_mask(["a red circle", "a red circle", "a blue square"])
    x = torch.randn(3, 3, 16, 16)
    terms = clip_loss_terms(clip, x, torch.zeros(3, dtype=torch.long), tokens, mask)
    img, txt, scale = clip(x, torch.zeros(3, dtype=torch.long), tokens, mask)
    logits = scale * img @ txt.T
    expected_0 = -(logits[0].log_softmax(-1)[:2].mean() + logits.T[0].log_softmax(-1)[:2].mean()) / 2
    torch.testing.assert_close(terms["loss"][0], expected_0)


def test_clip_trains_with_the_trainer(tmp_path):
    trainer = Trainer(_tiny_clip_cfg(), tmp_path, progress=False)
    result = trainer.run()
    assert result["step"] == 3 and "accuracy" in result


def test_hard_negatives_join_every_images_wrong_answers(tok):
    """With hard negatives the image-to-caption softmax runs over the batch's captions and all N * k
    negatives (the target stays on the image's own caption); the caption-to-image direction is unchanged."""
    torch.manual_seed(0)
    clip = build_model(_tiny_clip_cfg())
    tokens, mask = tok.padded_tokens_and_mask(["a large red circle in the top left", "a small blue square on the left"])
    negatives = [["a small red circle in the top left", "a large red square in the top left"],
                 ["a small green square on the left", "a large blue square on the left"]]
    neg_tokens, neg_mask = (x.view(2, 2, -1) for x in tok.padded_tokens_and_mask(sum(negatives, [])))
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([0, 10])
    terms = clip_loss_terms(clip, x, t, tokens, mask, neg_tokens, neg_mask)
    img, txt, scale = clip(x, t, torch.cat([tokens, neg_tokens.flatten(0, 1)]),
                           torch.cat([mask, neg_mask.flatten(0, 1)]))
    logits = scale * img @ txt.T  # [2 images, 2 captions + 4 negatives]
    expected = -(logits.log_softmax(-1).diagonal() + logits[:, :2].T.log_softmax(-1).diagonal()) / 2
    torch.testing.assert_close(terms["loss"], expected)
    plain = clip_loss_terms(clip, x, t, tokens, mask)
    assert (terms["loss"] > plain["loss"]).all()  # more wrong answers: a higher loss for the same weights


def test_changed_captions_differ_in_exactly_one_attribute_or_swap_one():
    from glide_minimal import captions

    one = captions.changed_captions("a large red circle in the top left")
    assert len(one) == 3 + 5 + 1 + 8 == len(set(one))  # other shapes, colors, the other size, other places
    for text in one:
        spec = captions.parse(text).objects[0]
        changed = [a for a in ("shape", "color", "size", "position")
                   if getattr(spec, a) != {"shape": "circle", "color": "red", "size": "large",
                                           "position": "top left"}[a]]
        assert len(changed) == 1, text
    two = captions.changed_captions("a small red circle and a large blue square")
    assert "a small blue circle and a large red square" in two  # colors swapped between the objects
    assert "a small blue circle and a large blue square" in two  # one object's color changed
    assert "a small red circle and a large blue square" not in two
    with pytest.raises(ValueError, match="leaves size and position open"):
        captions.changed_captions("a red circle")


def test_a_clip_trains_and_resumes_exactly_with_hard_negatives(tmp_path):
    negatives = {"clip.hard_negatives": 3, "train.ckpt_every": 2}
    whole = Trainer(_tiny_clip_cfg(**negatives, **{"train.max_steps": 4}), tmp_path / "a", progress=False)
    n, length = whole.cond["tokens"].shape
    assert whole.cond["negative_tokens"].shape == (n, 3, length)
    whole.run()
    Trainer(_tiny_clip_cfg(**negatives, **{"train.max_steps": 2}), tmp_path / "b", progress=False).run()
    resumed = Trainer(_tiny_clip_cfg(**negatives, **{"train.max_steps": 4}), tmp_path / "b", progress=False,
                      resume=True)
    resumed.run()
    for key, value in whole.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[key], value, rtol=0, atol=0)


def test_hard_negatives_need_captions_that_name_every_attribute():
    with pytest.raises(ValueError, match="clip.hard_negatives must be >= 0"):
        _tiny_clip_cfg(**{"clip.hard_negatives": -1})
    with pytest.raises(ValueError, match="needs data.dataset: shapesworld with data.captions: canonical"):
        _tiny_clip_cfg(**{"clip.hard_negatives": 2, "data.max_objects": 2, "data.captions": "varied"})


def test_a_clip_goes_on_from_a_published_clip_of_its_architecture_only(tmp_path, monkeypatch):
    """train.init_from on a CLIP config: a second training stage (chapter 5) starts from the first's weights."""
    from glide_minimal import pretrained
    from glide_minimal.checkpoint import CheckpointError
    from glide_minimal.finetune import init_from_pretrained

    torch.manual_seed(0)
    first = build_model(_tiny_clip_cfg())
    with torch.no_grad():
        for p in first.parameters():
            p.add_(torch.randn_like(p) * 0.1)  # as after training: no weight at its init
    pretrained.publish("tiny-clip", first.state_dict(), _tiny_clip_cfg().to_dict(), record={"command": "pytest"},
                       dtype=torch.float32, root=tmp_path / "ckpts")
    monkeypatch.setenv("GLIDE_MINIMAL_CHECKPOINTS", str(tmp_path / "ckpts"))
    trainer = Trainer(_tiny_clip_cfg(**{"train.init_from": "tiny-clip", "clip.hard_negatives": 2}), tmp_path / "run",
                      progress=False)
    for model in (trainer.model, trainer.ema):
        for (k, a), b in zip(first.state_dict().items(), model.state_dict().values()):
            assert torch.equal(a, b), k
    trainer.run(1)  # and it trains on
    with pytest.raises(CheckpointError, match="clip.width is 32 in the source but 64 here"):
        init_from_pretrained(build_model(_tiny_clip_cfg(**{"clip.width": 64})), "tiny-clip")
    with pytest.raises(CheckpointError, match="is a clip checkpoint; this diffusion model starts from a diffusion"):
        init_from_pretrained(build_model(load_config("tutorial-text")), "tiny-clip")
