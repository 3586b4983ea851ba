"""The open-vocabulary tokenizer (glide_minimal/models/learned_bpe.py): a byte-level BPE learned from a run's
captions, kept beside the run's checkpoint and the published weights, and loaded with them."""
from __future__ import annotations

import json

import pytest
import torch

import glide_minimal as gm
from conftest import assert_same_tensors, straight_and_resumed, tiny_text_config, write_folder
from glide_minimal import pretrained
from glide_minimal.checkpoint import CheckpointError
from glide_minimal.config import config_from_dict
from glide_minimal.models.learned_bpe import LearnedBPE, learn_bpe
from glide_minimal.models.text import get_tokenizer
from glide_minimal.train import CHECKPOINT, TOKENIZER, Trainer, export_weights

CAPTIONS = ["red apple", "green apple", "grinning face with smiling eyes", "face with tears of joy",
            "red heart", "apple pie", "smiling cat face"] * 5


def test_learning_is_deterministic_and_never_meets_an_unknown_word():
    a, b = learn_bpe(CAPTIONS, 300, 12), learn_bpe(CAPTIONS, 300, 12)
    assert a.tokenizer.to_str() == b.tokenizer.to_str() and len(a) <= 300
    assert len(a.encode("red apple")) < len(a.encode("zqxj vwkb"))  # frequent words merge, unseen ones split
    for text in ("Red Apple!", "naïve café 😀", "zqxj"):
        assert a.decode(a.encode(text)) == text.lower()  # byte-level: every text round-trips (lower-cased)


def test_padding_is_id_zero_the_empty_caption_is_all_padding_and_long_captions_truncate():
    bpe = learn_bpe(CAPTIONS, 300, 4)
    tokens, mask = bpe.padded_tokens_and_mask(["red apple", ""])
    assert tokens.shape == (2, 4) and (tokens[~mask] == 0).all() and not mask[1].any() and mask[0, 0]
    assert 0 not in bpe.encode("red apple")
    with pytest.warns(UserWarning, match="truncated to the context of 4"):
        long, long_mask = bpe.padded_tokens_and_mask("grinning face with smiling eyes and tears of joy")
    assert long_mask.all()


def test_save_load_and_bad_files(tmp_path):
    bpe = learn_bpe(CAPTIONS, 300, 8)
    bpe.save(tmp_path / "t.json")
    again = get_tokenizer("bpe", 8, file=tmp_path / "t.json")
    assert isinstance(again, LearnedBPE) and again.encode("smiling cat") == bpe.encode("smiling cat")
    with pytest.raises(FileNotFoundError, match="nope.json does not exist"):
        LearnedBPE.load(tmp_path / "nope.json", 8)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="bad.json is not a tokenizers JSON file"):
        LearnedBPE.load(tmp_path / "bad.json", 8)
    with pytest.raises(ValueError, match="names no tokenizer_file"):
        get_tokenizer("bpe", 8)
    with pytest.raises(ValueError, match="text_vocab_size >= 258"):
        learn_bpe(CAPTIONS, 100, 8)


def test_a_bpe_config_needs_its_vocabulary_size():
    with pytest.raises(ValueError, match="model.tokenizer 'bpe' is learned with model.text_vocab_size tokens"):
        tiny_text_config({"model.tokenizer": "bpe"})


def bpe_folder_config(root, overrides=None):
    write_folder(root / "data", n=12)
    return tiny_text_config({"data.dataset": "folder", "data.path": str(root / "data"), "data.num_workers": 0,
                             "model.tokenizer": "bpe", "model.text_vocab_size": 300, **(overrides or {})})


def test_training_learns_the_tokenizer_from_the_captions_and_resumes_with_it(tmp_path):
    cfg = bpe_folder_config(tmp_path, {"train.max_steps": 4, "model.dropout": 0.1})
    straight, split, _ = straight_and_resumed(cfg, tmp_path, stop_at=2)
    assert_same_tensors(split, straight)
    assert cfg.model.tokenizer_file == ""  # the caller's Config is not changed
    saved = json.loads((tmp_path / "split" / "config.json").read_text())
    assert saved["model"]["tokenizer_file"] == str((tmp_path / "split" / TOKENIZER).resolve())
    assert (tmp_path / "split" / TOKENIZER).read_text() == (tmp_path / "straight" / TOKENIZER).read_text()
    bpe = LearnedBPE.load(tmp_path / "split" / TOKENIZER, 12)
    assert bpe.decode(bpe.encode("a small green cross on the left")) == "a small green cross on the left"


def test_published_weights_carry_their_tokenizer_and_load_with_it(tmp_path):
    cfg = bpe_folder_config(tmp_path, {"train.max_steps": 2})
    Trainer(cfg, tmp_path / "run", progress=False).run()
    root = pretrained.user_checkpoints()
    pretrained.publish_run(tmp_path / "run", "tiny-bpe", "pytest", root=root)
    entry = pretrained.entry("tiny-bpe")
    assert entry["tokenizer"] == "tiny-bpe.tokenizer.json" and (root / entry["tokenizer"]).exists()
    assert json.loads((root / "tiny-bpe.json").read_text())["model"]["tokenizer_file"] == "tiny-bpe.tokenizer.json"
    pipe = gm.load_pipeline("tiny-bpe")
    images = pipe("a red apple with smiling eyes", num_images=1, steps=2, seed=0)  # words ShapesWorld never had
    assert images.shape == (1, 3, 16, 16) and torch.isfinite(images).all()
    (root / entry["tokenizer"]).write_text((root / entry["tokenizer"]).read_text().replace('"a"', '"b"', 1))
    with pytest.raises(CheckpointError, match="tokenizer file .*tiny-bpe.tokenizer.json has sha256"):
        gm.load_pipeline("tiny-bpe")


def test_exported_weights_keep_the_tokenizer_beside_them(tmp_path):
    cfg = bpe_folder_config(tmp_path, {"train.max_steps": 1})
    Trainer(cfg, tmp_path / "run", progress=False).run()
    (tmp_path / "out").mkdir()
    out = export_weights(tmp_path / "run", tmp_path / "out" / "mine.safetensors")
    assert (tmp_path / "out" / "mine.tokenizer.json").exists()
    _, config = pretrained.load_weights(out)
    assert config["model"]["tokenizer_file"] == str(tmp_path / "out" / "mine.tokenizer.json")
    assert len(get_tokenizer("bpe", 12, file=config_from_dict(config).model.tokenizer_file)) <= 300
    assert (tmp_path / "run" / CHECKPOINT).exists()


def test_fine_tuning_a_bpe_model_keeps_its_tokenizer_instead_of_learning_a_new_one(tmp_path):
    cfg = bpe_folder_config(tmp_path, {"train.max_steps": 1})
    Trainer(cfg, tmp_path / "run", progress=False).run()
    pretrained.publish_run(tmp_path / "run", "tiny-bpe", "pytest", root=pretrained.user_checkpoints())
    source = (tmp_path / "run" / TOKENIZER).read_text()
    other = write_folder(tmp_path / "other", n=4)  # new captions: a BPE learned from them would differ
    (other / "metadata.jsonl").write_text("".join(
        json.dumps({"file_name": f"{'a' if i % 2 else 'b'}/{i:04d}.png", "text": f"zebra {i} on a quilt"}) + "\n"
        for i in range(4)))
    published = str(pretrained.user_checkpoints() / "tiny-bpe.safetensors")
    for n, init_from in enumerate(("tiny-bpe", published)):  # a store name, a file
        tuned = tiny_text_config({"data.dataset": "folder", "data.path": str(other), "data.num_workers": 0,
                                  "model.tokenizer": "bpe", "model.text_vocab_size": 300,
                                  "train.init_from": init_from, "train.max_steps": 1})
        Trainer(tuned, tmp_path / f"tuned-{n}", progress=False).run()
        assert (tmp_path / f"tuned-{n}" / TOKENIZER).read_text() == source


def test_a_bpe_is_learned_from_the_captions_of_webdataset_shards(tmp_path):
    from conftest import FOLDER_CAPTIONS, write_shards
    from glide_minimal.imagetext import training_captions

    spec = write_shards(tmp_path / "shards", shards=2, per_shard=3)
    cfg = tiny_text_config({"data.dataset": "webdataset", "data.path": spec, "data.num_workers": 0,
                            "model.tokenizer": "bpe", "model.text_vocab_size": 300, "train.max_steps": 1})
    assert training_captions(cfg) == FOLDER_CAPTIONS  # shard order as listed, 3 + 3 samples
    assert training_captions(cfg, limit=2) == FOLDER_CAPTIONS[:2]
    Trainer(cfg, tmp_path / "run", progress=False).run()
    assert LearnedBPE.load(tmp_path / "run" / TOKENIZER, 12).encode("a red circle")
