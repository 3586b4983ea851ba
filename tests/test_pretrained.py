"""The registry of shipped checkpoints: sha256-verified, no network (glide_minimal/pretrained.py)."""
from __future__ import annotations

import hashlib
import json
import re

import pytest
import torch

from conftest import ROOT, randomize_, tiny_config
from glide_minimal import pretrained
from glide_minimal.checkpoint import CheckpointError, load_state_dict_into, load_tensors
from glide_minimal.config import config_from_dict
from glide_minimal.datasets import load_digits
from glide_minimal.models import build_model
from glide_minimal.train import Trainer, export_weights

SHIPPED = ROOT / "data" / "checkpoints"
SHIPPED_ENTRIES = sorted(pretrained.manifest(SHIPPED)) if (SHIPPED / "MANIFEST.json").exists() else []
RECORD = {"command": "pytest tests/test_pretrained.py", "steps": 0, "seed": 0}


@pytest.fixture
def tiny():
    cfg = tiny_config()
    torch.manual_seed(0)
    return cfg, randomize_(build_model(cfg))


def test_publish_then_load_weights_round_trips(tmp_path, tiny):
    cfg, model = tiny
    state = model.state_dict()
    path = pretrained.publish("tiny", state, cfg.to_dict(), record=RECORD, root=tmp_path)
    assert path == tmp_path / "tiny.safetensors"
    weights, config = pretrained.load_weights("tiny", root=tmp_path)
    assert sorted(weights) == sorted(state)
    for key, value in state.items():
        assert weights[key].dtype == torch.float32
        assert torch.equal(weights[key], value.half().float()), key  # shipped in float16 by default
    assert config_from_dict(config) == cfg
    entry = pretrained.entry("tiny", root=tmp_path)
    assert entry["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert entry["config_sha256"] == hashlib.sha256((tmp_path / "tiny.json").read_bytes()).hexdigest()
    assert entry["dtype"] == "float16" and entry["command"] == RECORD["command"]


def test_publish_in_float32_is_exact(tmp_path, tiny):
    cfg, model = tiny
    pretrained.publish("tiny", model.state_dict(), cfg.to_dict(), record=RECORD, dtype=torch.float32, root=tmp_path)
    weights, _ = pretrained.load_weights("tiny", root=tmp_path)
    for key, value in model.state_dict().items():
        assert torch.equal(weights[key], value), key


def test_publish_keeps_the_other_manifest_entries(tmp_path, tiny):
    cfg, model = tiny
    for name in ("b", "a"):
        pretrained.publish(name, model.state_dict(), cfg.to_dict(), record=RECORD, root=tmp_path)
    assert pretrained.available(tmp_path) == ["a", "b"]
    assert list(json.loads((tmp_path / "MANIFEST.json").read_text())["checkpoints"]) == ["a", "b"]


def test_environment_variable_selects_the_checkpoint_folder(tmp_path, tiny, monkeypatch):
    cfg, model = tiny
    pretrained.publish("tiny", model.state_dict(), cfg.to_dict(), record=RECORD, root=tmp_path)
    monkeypatch.setenv("GLIDE_MINIMAL_CHECKPOINTS", str(tmp_path))
    assert pretrained.checkpoint_dir() == tmp_path
    assert pretrained.available() == ["tiny"]
    loaded, loaded_cfg = pretrained.load_model("tiny")
    assert loaded_cfg == cfg and not loaded.training
    assert all(not p.requires_grad for p in loaded.parameters())
    x, t = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0)), torch.tensor([3, 40])
    reference = build_model(cfg)
    reference.load_state_dict({k: v.half().float() for k, v in model.state_dict().items()})
    torch.testing.assert_close(loaded(x, t), reference(x, t))


def test_tampered_checkpoint_error_names_the_file_and_sha256(tmp_path, tiny):
    cfg, model = tiny
    path = pretrained.publish("tiny", model.state_dict(), cfg.to_dict(), record=RECORD, root=tmp_path)
    payload = bytearray(path.read_bytes())
    payload[len(payload) // 2] ^= 0x01  # one bit of one weight: still a well-formed safetensors file
    path.write_bytes(bytes(payload))
    load_tensors(path)  # readable: only the hash can tell
    message = re.escape(f"checkpoint file {path} has sha256 ") + ".* MANIFEST.json records"
    with pytest.raises(CheckpointError, match=message):
        pretrained.load_weights("tiny", root=tmp_path)


def test_missing_checkpoint_file_error_names_the_file(tmp_path, tiny):
    cfg, model = tiny
    path = pretrained.publish("tiny", model.state_dict(), cfg.to_dict(), record=RECORD, root=tmp_path)
    path.unlink()
    with pytest.raises(CheckpointError, match=re.escape(f"checkpoint file {path} for 'tiny' is missing")):
        pretrained.load_weights("tiny", root=tmp_path)


def test_unknown_checkpoint_error_lists_the_shipped_names(tmp_path, tiny):
    cfg, model = tiny
    for name in ("alpha", "beta"):
        pretrained.publish(name, model.state_dict(), cfg.to_dict(), record=RECORD, root=tmp_path)
    with pytest.raises(KeyError, match="unknown checkpoint 'gamma'; shipped: alpha, beta"):
        pretrained.load_weights("gamma", root=tmp_path)
    with pytest.raises(KeyError, match=r"shipped: \(none\)"):
        pretrained.load_weights("gamma", root=tmp_path / "empty")


def test_load_state_dict_into_lists_missing_unexpected_and_misshaped_keys(tiny):
    _, model = tiny
    state = dict(model.state_dict())
    del state["out.2.bias"]
    state["extra.weight"] = torch.zeros(3)
    state["out.2.weight"] = torch.zeros(5, 5)
    with pytest.raises(CheckpointError) as err:
        load_state_dict_into(model, state, "source.safetensors")
    message = str(err.value)
    assert message.startswith("source.safetensors does not match the model")
    assert "missing 1 keys" in message and "out.2.bias" in message
    assert "unexpected 1 keys" in message and "extra.weight" in message
    assert "1 shape mismatches" in message and "out.2.weight: file (5, 5) vs model" in message


def test_load_state_dict_into_copies_a_matching_state(tiny):
    cfg, model = tiny
    fresh = build_model(cfg)
    load_state_dict_into(fresh, {k: v.half() for k, v in model.state_dict().items()}, "x")
    assert all(p.dtype == torch.float32 for p in fresh.parameters())
    assert torch.equal(fresh.out[2].weight, model.out[2].weight.half().float())


def test_export_weights_writes_the_ema_in_float16_with_its_config(tmp_path):
    cfg = tiny_config({"train.max_steps": 2})
    trainer = Trainer(cfg, tmp_path / "run", progress=False)
    trainer.run()
    out = export_weights(tmp_path / "run", tmp_path / "export" / "tiny.safetensors")
    tensors, meta = load_tensors(out)
    assert meta["step"] == 2 and config_from_dict(meta["config"]) == cfg
    assert config_from_dict(json.loads(out.with_suffix(".json").read_text())) == cfg
    for key, value in trainer.ema.state_dict().items():
        assert tensors[key].dtype == torch.float16
        assert torch.equal(tensors[key], value.half()), key


@pytest.mark.parametrize("name", SHIPPED_ENTRIES)
def test_shipped_checkpoint_verifies_and_loads(name, monkeypatch):
    monkeypatch.setenv("GLIDE_MINIMAL_CHECKPOINTS", str(SHIPPED))
    entry = pretrained.entry(name, SHIPPED)
    assert pretrained.sha256_file(SHIPPED / entry["file"]) == entry["sha256"]
    assert pretrained.sha256_file(SHIPPED / entry["config"]) == entry["config_sha256"]
    weights, config = pretrained.load_weights(name, SHIPPED)
    assert json.loads((SHIPPED / entry["config"]).read_text()) == config  # the JSON beside it says the same
    kind = entry.get("kind") or config.get("kind") or config.get("task", "diffusion")
    if kind == "digit-evaluator":
        evaluator = pretrained.load_evaluator(name)
        images, labels = load_digits(config["image_size"], "test")
        accuracy = evaluator.accuracy((images + 1) / 2, labels)
        claimed = entry.get("metrics", {}).get("test_accuracy")
        assert accuracy >= 0.9
        if claimed is not None:
            assert accuracy == pytest.approx(claimed, abs=0.005)  # the manifest's number is reproducible
    elif kind == "shapes-evaluator":
        from glide_minimal.metrics import shapes_training_set

        evaluator = pretrained.load_evaluator(name)
        images, _ = shapes_training_set(config["image_size"])
        predictions = evaluator.predict(images)
        from glide_minimal.shapesworld import all_combinations

        right = [tuple(p[a] for a in ("shape", "color", "size", "position")) == combo
                 for p, combo in zip(predictions, all_combinations())]
        assert sum(right) / len(right) == pytest.approx(entry["metrics"]["clean_all_attributes_accuracy"], abs=0.005)
    else:
        model, cfg = pretrained.load_model(name)
        assert sorted(model.state_dict()) == sorted(weights)
        assert cfg == config_from_dict(config)
