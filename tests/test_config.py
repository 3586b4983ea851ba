"""Configs: loading, inheritance, overrides, and errors that name the key (glide_minimal/config.py)."""
from __future__ import annotations

import dataclasses
import json
import re

import pytest
import yaml

from conftest import TINY, nested
from glide_minimal.config import (
    CHOICES,
    CONFIG_DIR,
    Config,
    UNetConfig,
    available_configs,
    config_from_dict,
    load_config,
    parse_override,
)


def flat(cfg: Config) -> dict:
    """{"model.image_size": 16, ..., "name": ...}: every leaf of the config under its dotted key."""
    out = {}
    for key, value in cfg.to_dict().items():
        if isinstance(value, dict):
            out.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            out[key] = value
    return out


def test_available_configs_name_every_chapters_config():
    names = available_configs()
    chapters = {"tutorial-ddpm", "tutorial-digits", "tutorial-digits-classifier", "tutorial-text", "tutorial-text-clip",
                "tutorial-text-upsample", "tutorial-text-inpaint", "tutorial-text-upsample-inpaint",
                "glide-filtered-base", "glide-paper-base"}
    assert chapters <= set(names)
    assert names == sorted(set(names))  # sorted, no name twice (each loads: test_every_shipped_config_loads)


def test_a_config_file_dropped_into_the_folder_is_listed_and_loads(tmp_path, monkeypatch):
    import glide_minimal.config as config_module

    (tmp_path / "tutorial-ddpm.yaml").write_text((CONFIG_DIR / "tutorial-ddpm.yaml").read_text())
    (tmp_path / "b-wide.yaml").write_text(yaml.safe_dump({"inherit": "tutorial-ddpm", "model": {"model_channels": 64}}))
    (tmp_path / "notes.txt").write_text("not a config")
    monkeypatch.setattr(config_module, "CONFIG_DIR", tmp_path)
    assert available_configs() == ["b-wide", "tutorial-ddpm"]  # sorted; the .txt file is not a config
    assert load_config("b-wide").model.model_channels == 64


@pytest.mark.parametrize("name", available_configs())
def test_every_shipped_config_loads(name):
    cfg = load_config(name)
    assert cfg.name == name
    assert cfg.description, f"{name} has no description"
    assert config_from_dict(cfg.to_dict()) == cfg  # what a checkpoint stores is what comes back


def test_unknown_config_error_lists_the_known_names():
    with pytest.raises(KeyError) as err:
        load_config("tutorial-ddpn")
    message = err.value.args[0]
    assert "unknown config 'tutorial-ddpn'" in message
    assert "did you mean tutorial-ddpm" in message
    assert f"known: {', '.join(available_configs())}" in message


def test_unknown_key_error_names_the_key_and_the_valid_keys():
    with pytest.raises(ValueError) as err:
        load_config("tutorial-ddpm", overrides={"model.chanel_mult": [1, 2]})
    message = str(err.value)
    assert "model.'chanel_mult'" in message
    for key in (f.name for f in dataclasses.fields(UNetConfig)):
        assert key in message


def test_unknown_section_in_an_override_is_an_error():
    with pytest.raises(ValueError, match="'optim.lr' must be <section>.<key> with section one of: model, diffusion"):
        load_config("tutorial-ddpm", overrides={"optim.lr": 1e-3})


def test_unknown_top_level_key_is_an_error():
    with pytest.raises(ValueError, match="unknown top-level key 'modle'; valid keys: .*model"):
        config_from_dict({"modle": {"image_size": 8}})


def test_bad_choice_error_lists_the_choices():
    with pytest.raises(ValueError, match="diffusion.noise_schedule = 'foo' is not valid; choose one of: linear, "
                                         "squaredcos_cap_v2"):
        load_config("tutorial-ddpm", overrides={"diffusion.noise_schedule": "foo"})


@pytest.mark.parametrize(("key", "value", "message"), [
    ("model.num_res_blocks", "two", "model.num_res_blocks must be an integer, got 'two'"),
    ("model.learn_sigma", 1, "model.learn_sigma must be true or false, got 1"),
    ("train.lr", "fast", "train.lr must be a finite number > 0, got 'fast'"),
    ("train.batch_size", 0, "train.batch_size must be positive, got 0"),
    ("train.ema_rate", 1.0, r"train.ema_rate must be in \[0, 1\)"),
])
def test_bad_value_error_names_the_key(key, value, message):
    with pytest.raises(ValueError, match=message):
        load_config("tutorial-ddpm", overrides={key: value})


def test_learn_sigma_that_does_not_match_model_var_type_is_an_error():
    with pytest.raises(ValueError, match="model.learn_sigma=False does not match "
                                         "diffusion.model_var_type='learned_range'"):
        load_config("tutorial-ddpm", overrides={"model.learn_sigma": False})
    with pytest.raises(ValueError, match="model.learn_sigma=True does not match "
                                         "diffusion.model_var_type='fixed_small'"):
        load_config("tutorial-ddpm-fixed", overrides={"model.learn_sigma": True})


def test_data_and_model_image_size_must_agree():
    with pytest.raises(ValueError, match=r"data.image_size \(32\) must equal model.image_size \(16\)"):
        load_config("tutorial-ddpm", overrides={"data.image_size": 32})


def test_attention_resolution_that_is_no_feature_map_size_is_an_error():
    with pytest.raises(ValueError, match=r"model.attention_resolutions \[5\] .* valid: \[4, 8, 16\]"):
        load_config("tutorial-ddpm", overrides={"model.attention_resolutions": [5]})


def test_inherit_changes_only_the_fields_the_child_sets():
    parent, child = flat(load_config("tutorial-ddpm")), flat(load_config("tutorial-ddpm-fixed"))
    changed = {k for k in parent if parent[k] != child[k]}
    assert changed == {"name", "description", "model.learn_sigma", "diffusion.model_var_type", "diffusion.loss_type"}
    assert (child["model.learn_sigma"], child["diffusion.model_var_type"], child["diffusion.loss_type"]) == \
        (False, "fixed_small", "mse")


def test_gpu_config_inherits_everything_it_does_not_override():
    parent, child = flat(load_config("tutorial-ddpm")), flat(load_config("tutorial-ddpm-gpu"))
    raw = yaml.safe_load((CONFIG_DIR / "tutorial-ddpm-gpu.yaml").read_text())
    set_by_child = {f"{s}.{k}" for s, v in raw.items() if isinstance(v, dict) for k in v} | {"name", "description"}
    for key in parent:
        if key not in set_by_child:
            assert child[key] == parent[key], key


def test_dotted_overrides_set_nested_values():
    cfg = load_config("tutorial-ddpm", overrides={"train.max_steps": 10, "model.channel_mult": [1, 2, 2, 2],
                                                  "diffusion.sample_respacing": "ddim25", "train.lr": 3})
    assert cfg.train.max_steps == 10
    assert cfg.model.channel_mult == (1, 2, 2, 2)  # lists become tuples
    assert cfg.diffusion.sample_respacing == "ddim25"
    assert cfg.train.lr == 3.0 and isinstance(cfg.train.lr, float)
    assert load_config("tutorial-ddpm").train.max_steps != 10  # the shipped file is untouched


def test_config_from_a_yaml_path_with_inherit(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump({"inherit": "tutorial-ddpm", **nested(TINY)}))
    cfg = load_config(path)
    assert cfg.name == "mine"
    assert cfg.model.image_size == 8 and cfg.model.channel_mult == tuple(TINY["model.channel_mult"])
    assert cfg.data.dataset == "digits"  # inherited


def test_config_round_trips_through_json():
    cfg = load_config("tutorial-ddpm")
    assert config_from_dict(json.loads(cfg.to_json())) == cfg


@pytest.mark.parametrize(("item", "expected"), [
    ("train.max_steps=10", ("train.max_steps", 10)),
    ("train.lr=0.001", ("train.lr", 0.001)),
    ("model.channel_mult=[1, 2]", ("model.channel_mult", [1, 2])),
    ("model.learn_sigma=false", ("model.learn_sigma", False)),
    ("diffusion.sample_respacing=ddim50", ("diffusion.sample_respacing", "ddim50")),
    (" data.dataset = digits", ("data.dataset", "digits")),
    ("model.note=a=b", ("model.note", "a=b")),
])
def test_parse_override_parses_the_value_as_yaml(item, expected):
    assert parse_override(item) == expected


def test_parse_override_without_equals_is_an_error():
    with pytest.raises(ValueError, match=re.escape("override 'train.max_steps' must look like section.key=value")):
        parse_override("train.max_steps")


def test_choices_are_all_valid_fields():
    for dotted in CHOICES:
        if "." in dotted:
            section, key = dotted.split(".")
            assert key in {f.name for f in dataclasses.fields(getattr(Config(name="x"), section))}


def test_exponent_notation_is_a_number():
    assert load_config("tutorial-ddpm", overrides=dict([parse_override("train.lr=1e-4")])).train.lr == 1e-4


def test_bool_for_an_integer_key_is_an_error():
    with pytest.raises(ValueError, match="model.num_res_blocks must be an integer, got True"):
        load_config("tutorial-ddpm", overrides={"model.num_res_blocks": True})


# -- bad numbers (issue 12): NaN and inf pass `x < 0`, so every float key needs a finiteness check ---------------
FLOAT_KEYS = [f"{section}.{f.name}" for section in ("model", "diffusion", "data", "train", "clip")
              for f in dataclasses.fields(getattr(Config(name="x"), section)) if isinstance(f.default, float)]


def test_the_float_audit_covers_the_known_float_keys():
    # a new float key joins the parametrized checks below automatically; this pins the list it starts from
    assert {"model.dropout", "data.p_uncond", "train.lr", "train.weight_decay", "train.ema_rate",
            "train.grad_clip"} <= set(FLOAT_KEYS)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("key", FLOAT_KEYS)
def test_non_finite_float_is_an_error_that_names_the_key_value_and_range(key, value):
    with pytest.raises(ValueError) as err:
        load_config("tutorial-ddpm", overrides={key: value})
    message = str(err.value)
    assert message.startswith(f"{key} must be "), message
    assert f"got {value!r}" in message and ("[0, 1)" in message or "finite" in message), message


def test_non_finite_yaml_spellings_are_errors(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("inherit: tutorial-ddpm\ntrain:\n  lr: .nan\n")
    with pytest.raises(ValueError, match=re.escape("train.lr must be a finite number > 0, got nan")):
        load_config(path)


@pytest.mark.parametrize(("key", "value", "message"), [
    # the format of checks.finite_range_rule, as every argument check: "in [0, 1)" / "> 0" for a number out of
    # range, "a finite number in [0, 1)" for NaN, inf or no number at all
    ("train.lr", 0, "train.lr must be > 0, got 0.0"),
    ("train.lr", -1e-4, "train.lr must be > 0, got -0.0001"),
    ("train.weight_decay", -0.01, "train.weight_decay must be >= 0 (0: no weight decay), got -0.01"),
    ("train.grad_clip", -1, "train.grad_clip must be >= 0 (the largest gradient norm; 0: no clipping), got -1.0"),
    ("model.dropout", 1.0, "model.dropout must be in [0, 1), got 1.0"),
    ("model.dropout", -0.1, "model.dropout must be in [0, 1), got -0.1"),
    ("data.p_uncond", 1.5, "data.p_uncond must be in [0, 1), got 1.5"),
])
def test_float_out_of_range_names_the_value_and_the_range(key, value, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        load_config("tutorial-digits", overrides={key: value})


def test_grad_clip_zero_is_no_clipping_and_null_says_so():
    assert load_config("tutorial-ddpm", overrides={"train.grad_clip": 0}).train.grad_clip == 0.0
    with pytest.raises(ValueError, match=re.escape("train.grad_clip must be a finite number >= 0 (the largest gradient "
                                                   "norm; 0: no clipping), got None")):
        load_config("tutorial-ddpm", overrides={"train.grad_clip": None})


def test_negative_warmup_is_an_error():
    with pytest.raises(ValueError, match=re.escape("train.warmup_steps must be >= 0 (0: no warmup), got -1")):
        load_config("tutorial-ddpm", overrides={"train.warmup_steps": -1})


# -- heads and widths: a zero or a non-divisor is a config error, never a ZeroDivisionError in the model ----------
TEXT = {"model.text_ctx": 12, "model.text_width": 32, "model.text_layers": 1, "model.text_heads": 2,
        "data.dataset": "shapesworld"}


@pytest.mark.parametrize(("config", "overrides", "message"), [
    ("tutorial-ddpm", {**TEXT, "model.text_heads": 0}, "model.text_heads must be positive, got 0"),
    ("tutorial-ddpm", {**TEXT, "model.text_width": 0}, "model.text_width must be positive, got 0"),
    ("tutorial-ddpm", {**TEXT, "model.text_heads": 3}, "model.text_width 32 is not divisible by model.text_heads 3"),
    ("tutorial-ddpm", {"model.channel_mult": [1, 0, 2]},
     "model.channel_mult [1, 0, 2] must be positive integers (each level's width is model_channels * mult)"),
    ("tutorial-text-clip", {"clip.heads": 0}, "clip.heads must be positive, got 0"),
    ("tutorial-text-clip", {"clip.text_heads": 0}, "clip.text_heads must be positive, got 0"),
    ("tutorial-text-clip", {"clip.patch_size": 0}, "clip.patch_size must be positive, got 0"),
    ("tutorial-text-clip", {"clip.width": 0}, "clip.width must be positive, got 0"),
    ("tutorial-text-clip", {"clip.embed_dim": 0}, "clip.embed_dim must be positive, got 0"),
    ("tutorial-text-clip", {"clip.heads": 3}, "clip.width 128 is not divisible by clip.heads 3"),
    ("tutorial-text-clip", {"clip.text_heads": 3}, "clip.text_width 128 is not divisible by clip.text_heads 3"),
])
def test_heads_and_widths_errors_name_the_key(config, overrides, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        load_config(config, overrides=overrides)
