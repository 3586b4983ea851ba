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
from glide_minimal.evaluators import fresh_scenes, load_evaluator, shapes_training_set
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
    beside = json.loads((SHIPPED / entry["config"]).read_text())  # the JSON beside it says the same ...
    assert pretrained.resolve_tokenizer(beside, SHIPPED) == config  # (... with a learned BPE's path made absolute)
    if "tokenizer" in entry:
        assert pretrained.sha256_file(SHIPPED / entry["tokenizer"]) == entry["tokenizer_sha256"]
    kind = entry.get("kind") or config.get("kind") or config.get("task", "diffusion")
    if kind == "digit-evaluator":
        evaluator = load_evaluator(name)
        images, labels = load_digits(config["image_size"], "test")
        accuracy = evaluator.accuracy((images + 1) / 2, labels)
        claimed = entry.get("metrics", {}).get("test_accuracy")
        assert accuracy >= 0.9
        if claimed is not None:
            assert accuracy == pytest.approx(claimed, abs=0.005)  # the manifest's number is reproducible
    elif kind == "shapes-evaluator":
        evaluator = load_evaluator(name)
        images, _ = shapes_training_set(config["image_size"])
        predictions = evaluator.predict(images)
        from glide_minimal.shapesworld import all_combinations

        right = [tuple(p[a] for a in ("shape", "color", "size", "position")) == combo
                 for p, combo in zip(predictions, all_combinations())]
        assert sum(right) / len(right) == pytest.approx(entry["metrics"]["clean_all_attributes_accuracy"], abs=0.005)
    elif kind == "scene-evaluator":  # the manifest's clean accuracy on its test scenes is reproducible
        images, scenes = fresh_scenes(2000, entry["seed"] + 1, config["image_size"])
        accuracy = load_evaluator(name).scene_accuracy(images, scenes)
        assert accuracy == pytest.approx(entry["metrics"]["clean_scene_accuracy"], abs=0.005)
    else:
        model, cfg = pretrained.load_model(name)
        assert sorted(model.state_dict()) == sorted(weights)
        assert cfg == config_from_dict(config)


# ---- where names are looked up (README.md, "Where checkpoints come from") ---------------------------------

@pytest.fixture
def places(tmp_path, tiny, monkeypatch):
    """The four places of the lookup order as temporary folders: {label: folder}, none of them the real ones.

    "everywhere" is in the cache, the package data and the checkout; "installed" in the package data and the
    checkout; "checkout-only" in the checkout. Each entry's command says which folder it came from.
    """
    cfg, model = tiny
    folders = {"env": tmp_path / "env", "cache": tmp_path / "cache" / "checkpoints",
               "package": tmp_path / "site-packages" / "glide_minimal" / "_data" / "checkpoints",
               "checkout": tmp_path / "repo" / "data" / "checkpoints"}
    names = {"env": ["tiny-env"], "cache": ["everywhere"], "package": ["everywhere", "installed"],
             "checkout": ["everywhere", "installed", "checkout-only"]}
    for where, listed in names.items():
        for name in listed:
            pretrained.publish(name, model.state_dict(), cfg.to_dict(), record={"command": f"made in {where}"},
                               root=folders[where])
    (tmp_path / "repo" / "pyproject.toml").write_text("[project]\nname = 'glide-minimal'\n")
    monkeypatch.delenv("GLIDE_MINIMAL_CHECKPOINTS", raising=False)
    monkeypatch.setenv("GLIDE_MINIMAL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(pretrained, "PACKAGE_DATA", folders["package"])
    monkeypatch.setattr(pretrained, "CHECKOUT_DATA", folders["checkout"])
    return folders


def test_cache_then_package_data_then_checkout(places):
    assert [loc.path for loc in pretrained.search_path()] == [places["cache"], places["package"], places["checkout"]]
    assert pretrained.available() == ["checkout-only", "everywhere", "installed"]
    for name, where in (("everywhere", "cache"), ("installed", "package"), ("checkout-only", "checkout")):
        loc, entry = pretrained.locate(name)
        assert loc.path == places[where] and entry["command"] == f"made in {where}", name
        assert pretrained.verified_path(name) == places[where] / f"{name}.safetensors"
        assert pretrained.manifest()[name]["command"] == f"made in {where}"
    assert pretrained.locate("installed")[0].installed and not pretrained.locate("everywhere")[0].installed
    pretrained.load_model("installed")


def test_checkpoints_variable_overrides_every_other_place(places, monkeypatch):
    monkeypatch.setenv("GLIDE_MINIMAL_CHECKPOINTS", str(places["env"]))
    assert [loc.path for loc in pretrained.search_path()] == [places["env"]]
    assert pretrained.available() == ["tiny-env"] and pretrained.checkpoint_dir() == places["env"]
    assert pretrained.locate("tiny-env")[0].path == places["env"]
    with pytest.raises(KeyError, match="unknown checkpoint 'everywhere'; shipped: tiny-env; .*"
                                       r"2\. user cache .*not searched: \$GLIDE_MINIMAL_CHECKPOINTS is set"):
        pretrained.load_weights("everywhere")


def test_the_cache_folder_defaults_to_the_home_cache(monkeypatch, tmp_path):
    monkeypatch.delenv("GLIDE_MINIMAL_CACHE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert pretrained.cache_dir() == tmp_path / ".cache" / "glide-minimal"
    assert pretrained.user_checkpoints() == tmp_path / ".cache" / "glide-minimal" / "checkpoints"
    monkeypatch.setenv("GLIDE_MINIMAL_CACHE", str(tmp_path / "elsewhere"))
    assert pretrained.user_checkpoints() == tmp_path / "elsewhere" / "checkpoints"


def test_unknown_name_lists_every_place_it_looked_in(places):
    with pytest.raises(KeyError) as err:
        pretrained.load_weights("nowhere")
    message = err.value.args[0]
    assert message.startswith("unknown checkpoint 'nowhere'; shipped: checkout-only, everywhere, installed; "
                              "looked in: ")
    assert "1. $GLIDE_MINIMAL_CHECKPOINTS: not set" in message
    assert (f"2. user cache ($GLIDE_MINIMAL_CACHE or ~/.cache/glide-minimal) {places['cache']} (1 checkpoints)"
            in message)
    assert f"3. installed package data {places['package']} (2 checkpoints)" in message
    assert f"4. source checkout {places['checkout']} (3 checkpoints)" in message


def test_an_installed_package_without_a_checkout_looks_in_three_places(places, tmp_path, monkeypatch):
    # site-packages/data/checkpoints (the folder issue 18's error named) is not a checkout: no pyproject.toml
    stray = tmp_path / "site-packages" / "data" / "checkpoints"
    stray.mkdir(parents=True)
    monkeypatch.setattr(pretrained, "CHECKOUT_DATA", stray)
    assert [loc.path for loc in pretrained.search_path()] == [places["cache"], places["package"]]
    assert pretrained.available() == ["everywhere", "installed"]
    assert pretrained.checkpoint_dir() == places["cache"]  # publish never writes into the installed package
    with pytest.raises(KeyError, match=r"4\. source checkout: none \(an installed package\)"):
        pretrained.entry("checkout-only")


def test_a_source_checkout_publishes_into_its_data_folder(places):
    assert pretrained.checkpoint_dir() == places["checkout"]


def test_manifest_that_is_not_json_names_the_file_and_the_line(places):
    path = places["cache"] / "MANIFEST.json"
    lines = path.read_text().splitlines()
    lines[3] = lines[3].rstrip(",")  # a missing comma on line 4
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(json.JSONDecodeError):
        json.loads(path.read_text())
    message = re.escape(f"{path} is not valid JSON: line 5, column")
    with pytest.raises(CheckpointError, match=message):
        pretrained.available()
    with pytest.raises(CheckpointError, match=message):
        pretrained.load_weights("installed")
    with pytest.raises(CheckpointError, match=re.escape(f"{path} is not valid JSON: line 5")):
        pretrained.manifest(places["cache"])


@pytest.mark.parametrize("which", ["file", "config"])
def test_installed_data_failing_its_sha256_is_refused_asking_for_a_reinstall(places, which):
    path = places["package"] / pretrained.entry("installed", places["package"])[which]
    payload = bytearray(path.read_bytes())
    payload[len(payload) // 2] ^= 0x01
    path.write_bytes(bytes(payload))
    what = "checkpoint file" if which == "file" else "config file"
    message = (re.escape(f"{what} {path} has sha256 ") + ".* the installed glide-minimal package is damaged; "
               + re.escape("reinstall it: pip install --force-reinstall --no-deps <the same wheel, folder or git+URL>"))
    with pytest.raises(CheckpointError, match=message):
        pretrained.load_weights("installed")
    path.unlink()
    with pytest.raises(CheckpointError, match=re.escape(f"{what} {path} for 'installed' is missing: ") + ".*reinstall"):
        pretrained.load_weights("installed")
    pretrained.load_weights("checkout-only")  # the other folders are not affected


def test_a_tampered_config_outside_the_package_names_the_command(tmp_path, tiny):
    cfg, model = tiny
    pretrained.publish("tiny", model.state_dict(), cfg.to_dict(), record=RECORD, root=tmp_path)
    (tmp_path / "tiny.json").write_text("{}\n")
    with pytest.raises(CheckpointError, match=re.escape(f"config file {tmp_path / 'tiny.json'} has sha256 ")
                       + ".*re-run pytest tests/test_pretrained.py"):
        pretrained.load_weights("tiny", root=tmp_path)


def test_this_checkout_finds_its_shipped_checkpoints(monkeypatch, tmp_path):
    if not SHIPPED_ENTRIES:
        pytest.skip("no shipped checkpoints")
    monkeypatch.delenv("GLIDE_MINIMAL_CHECKPOINTS", raising=False)
    monkeypatch.setenv("GLIDE_MINIMAL_CACHE", str(tmp_path / "empty-cache"))
    loc, _ = pretrained.locate("tutorial-ddpm")
    assert loc.path in (SHIPPED, pretrained.PACKAGE_DATA)
    assert set(SHIPPED_ENTRIES) <= set(pretrained.available())
