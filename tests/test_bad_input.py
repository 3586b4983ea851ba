"""Bad input to the pipelines and the `glide-minimal` command (issue 12): every public entry point and CLI flag
checks its input before it works, names the bad value and what is valid, and the CLI answers in one line on
stderr with a non-zero exit code (no traceback), while a real bug still shows its traceback.

Tiny random models stand in for the shipped ones: the checks run before any model does (a model that raises
when called proves it).
"""
from __future__ import annotations

import math
import os
import re

import numpy as np
import pytest
import torch
import yaml

from conftest import randomize_, tiny_config, tiny_text_config
from glide_minimal import cli, pretrained
from glide_minimal.checkpoint import CheckpointError
from glide_minimal.checks import check_finite_range, check_seed
from glide_minimal.cli import main
from glide_minimal.models import build_model, get_tokenizer
from glide_minimal.pipelines import ClassPipeline, DiffusionPipeline, InpaintPipeline, TextPipeline, UpsamplePipeline
from glide_minimal.pipelines.loading import inpaint_group

PROMPT = "a large red circle in the center"
BASE = {"model.image_size": 8, "data.image_size": 8, "model.attention_resolutions": [4]}
UPSAMPLER = {"model.image_size": 32, "data.image_size": 32, "model.attention_resolutions": [16],
             "model.super_res": True, "data.low_res_size": 8, "model.aug_level_embed": True, "data.low_res_aug_max": 20,
             "data.low_res_aug_sample": 5, "data.p_uncond": 0.0}
NOT_FINITE = [math.nan, math.inf, -math.inf, True]


def model_of(cfg, seed: int = 0):
    torch.manual_seed(seed)
    return randomize_(build_model(cfg), seed=seed).eval()


@pytest.fixture(scope="module")
def plain() -> DiffusionPipeline:
    cfg = tiny_config()
    return DiffusionPipeline(model_of(cfg), cfg)


@pytest.fixture(scope="module")
def digits() -> ClassPipeline:
    cfg = tiny_config({"model.num_classes": 10})
    return ClassPipeline(model_of(cfg), cfg)


@pytest.fixture(scope="module")
def upsampler() -> UpsamplePipeline:
    cfg = tiny_text_config(UPSAMPLER)
    return UpsamplePipeline(model_of(cfg, 1), cfg)


@pytest.fixture(scope="module")
def text(upsampler) -> TextPipeline:
    cfg = tiny_text_config(BASE)
    return TextPipeline(model_of(cfg), cfg, upsampler=upsampler)


@pytest.fixture(scope="module")
def edit() -> InpaintPipeline:
    base_cfg, up_cfg = (tiny_text_config({**o, "model.inpaint": True}) for o in (BASE, UPSAMPLER))
    return InpaintPipeline(base=TextPipeline(model_of(base_cfg), base_cfg),
                           upsampler=UpsamplePipeline(model_of(up_cfg, 1), up_cfg))


@pytest.fixture
def no_model(monkeypatch):
    """no_model(*pipes): any model call of these pipelines fails the test (the check must come first)."""
    def forbid(*pipes):
        for pipe in pipes:
            def boom(*args, **kwargs):
                raise AssertionError("a model ran before the input was checked")
            monkeypatch.setattr(pipe, "model_fn", boom)
    return forbid


def edit_inputs(n: int = 1, size: int = 32):
    image = torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(0))
    mask = torch.ones(n, 1, size, size)
    mask[..., 8:24, 8:24] = 0
    return image, mask


# -- the shared checks -------------------------------------------------------------------------------------
@pytest.mark.parametrize("value", [*NOT_FINITE, "1.0", None])
def test_check_finite_range_refuses_non_numbers_and_non_finite_values(value):
    with pytest.raises(ValueError, match=re.escape(f"eta must be a finite number in [0, 1], got {value!r}")):
        check_finite_range("eta", value, 0, 1)


def test_check_finite_range_names_open_and_unbounded_ranges():
    assert check_finite_range("temperature", 0.5, 0, None, lo_open=True) == 0.5
    assert check_finite_range("guidance_scale", np.float32(2), 0) == 2.0 and check_finite_range("x", 1) == 1.0
    with pytest.raises(ValueError, match=re.escape("temperature must be > 0, got 0")):
        check_finite_range("temperature", 0, 0, None, lo_open=True)
    with pytest.raises(ValueError, match=re.escape("temperature must be a finite number > 0, got inf")):
        check_finite_range("temperature", math.inf, 0, None, lo_open=True)
    with pytest.raises(ValueError, match=re.escape("guidance_scale must be >= 0, got -1")):
        check_finite_range("guidance_scale", -1, 0)
    with pytest.raises(ValueError, match=re.escape("x must be a finite number, got nan")):
        check_finite_range("x", math.nan)
    with pytest.raises(ValueError, match=re.escape("eta must be in [0, 1), got 1")):
        check_finite_range("eta", 1, 0, 1, hi_open=True)


@pytest.mark.parametrize("seed", [1.7, 1.0, True, -1, 2**64, "3"])
def test_check_seed_refuses_non_integers_bools_and_out_of_range(seed):
    with pytest.raises(ValueError, match=re.escape(f"seed must be a whole number in 0..2**64 - 1, or None for a fresh "
                                                   f"random seed; got {seed!r}")):
        check_seed(seed)


def test_check_seed_keeps_integers_and_draws_a_fresh_seed_for_none():
    assert check_seed(5) == 5 and check_seed(np.int64(5)) == 5 and type(check_seed(np.int64(5))) is int
    assert check_seed(2**64 - 1) == 2**64 - 1
    drawn = {check_seed(None) for _ in range(4)}
    assert len(drawn) == 4 and all(0 <= s < 2**64 for s in drawn)


# -- NaN, inf and bools where a float is taken -------------------------------------------------------------
@pytest.mark.parametrize("value", NOT_FINITE)
def test_non_finite_floats_are_refused_by_every_pipeline(plain, digits, text, upsampler, edit, no_model, value):
    no_model(plain, digits, text, upsampler, edit.stage("inpaint"), edit.stage("upsample-inpaint"))
    image, mask = edit_inputs()
    low = torch.rand(1, 3, 8, 8)
    cases = [
        (lambda v: plain(1, steps=2, eta=v), "eta", "in [0, 1]"),
        (lambda v: plain.sample(1, steps=2, noise_scale=v), "noise_scale", "> 0"),
        (lambda v: digits([1], guidance_scale=v, steps=2), "guidance_scale", ">= 0"),
        (lambda v: digits([1], eta=v, sampler="ddim", steps=2), "eta", "in [0, 1]"),
        (lambda v: text(PROMPT, guidance_scale=v, steps=2), "guidance_scale", ">= 0"),
        (lambda v: text(PROMPT, eta=v, steps=2), "eta", "in [0, 1]"),
        (lambda v: text(PROMPT, upsample=True, upsample_temperature=v, steps=2), "upsample_temperature", "> 0"),
        (lambda v: upsampler(PROMPT, low_res=low, temperature=v, steps=2), "temperature", "> 0"),
        (lambda v: upsampler(PROMPT, low_res=low, eta=v, steps=2), "eta", "in [0, 1]"),
        (lambda v: edit(PROMPT, image, mask, guidance_scale=v, steps=2), "guidance_scale", ">= 0"),
        (lambda v: edit(PROMPT, image, mask, eta=v, steps=2), "eta", "in [0, 1]"),
        (lambda v: edit(PROMPT, image, mask, upsample_temperature=v, steps=2), "upsample_temperature", "> 0"),
    ]
    for call, name, bounds in cases:
        with pytest.raises(ValueError, match=re.escape(f"{name} must be a finite number {bounds}, got {value!r}")):
            call(value)


def test_eta_above_one_is_refused(plain):
    with pytest.raises(ValueError, match=re.escape("eta must be in [0, 1], got 1.5")):
        plain(1, steps=2, sampler="ddim", eta=1.5)


# -- seeds, counts, labels, prompts ------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [1.7, True, -1])
def test_bad_seeds_are_refused_by_every_pipeline(plain, digits, text, upsampler, edit, no_model, seed):
    no_model(plain, digits, text, upsampler, edit.stage("inpaint"), edit.stage("upsample-inpaint"))
    image, mask = edit_inputs()
    for call in (lambda: plain(1, steps=2, seed=seed), lambda: digits([1], steps=2, seed=seed),
                 lambda: text(PROMPT, steps=2, seed=seed), lambda: upsampler(PROMPT, torch.rand(1, 3, 8, 8), seed=seed),
                 lambda: edit(PROMPT, image, mask, steps=2, seed=seed)):
        with pytest.raises(ValueError, match=re.escape(f"seed must be a whole number in 0..2**64 - 1, or None for a "
                                                       f"fresh random seed; got {seed!r}")):
            call()


def test_seed_none_is_a_fresh_random_seed(plain):
    a, b = plain(2, steps=2, seed=None), plain(2, steps=2, seed=None)
    assert not torch.equal(a, b)
    assert not torch.equal(a, plain(2, steps=2, seed=0)) and not torch.equal(b, plain(2, steps=2, seed=0))
    assert torch.equal(plain(2, steps=2, seed=np.int64(3)), plain(2, steps=2, seed=3))


@pytest.mark.parametrize("num_images", [0, -1, True, 2.0, "2"])
def test_num_images_must_be_a_positive_whole_number(plain, text, no_model, num_images):
    no_model(plain, text)
    message = re.escape(f"num_images must be a whole number >= 1, got {num_images!r}")
    with pytest.raises(ValueError, match=message):
        plain(num_images, steps=2)
    with pytest.raises(ValueError, match=message):
        text(PROMPT, num_images=num_images, steps=2)


@pytest.mark.parametrize("labels", [[3.7], [1, True], True, torch.tensor([1.0]), torch.tensor([True]), ["3"], 2.0])
def test_labels_must_be_whole_numbers(digits, no_model, labels):
    no_model(digits)
    with pytest.raises(ValueError, match="labels must be whole numbers \\(class indices 0..9\\), got "):
        digits(labels, steps=2)


def test_integer_labels_of_any_integer_type_are_accepted(digits):
    expected = digits([3, 7], steps=2, seed=0)
    for labels in (np.array([3, 7]), torch.tensor([3, 7], dtype=torch.int32), [np.int64(3), 7]):
        assert torch.equal(digits(labels, steps=2, seed=0), expected)
    assert digits(4, steps=2).shape[0] == 1


@pytest.mark.parametrize("prompt", [{PROMPT: 1}, 3, None, [PROMPT, 3], (p for p in [PROMPT])])
def test_prompt_must_be_a_string_or_a_list_of_strings(text, upsampler, edit, no_model, prompt):
    no_model(text, upsampler, edit.stage("inpaint"), edit.stage("upsample-inpaint"))
    image, mask = edit_inputs()
    message = "prompt must be a string or a list of strings, got "
    with pytest.raises(ValueError, match=message):
        text(prompt, steps=2)
    with pytest.raises(ValueError, match=message):
        upsampler(prompt, low_res=torch.rand(1, 3, 8, 8), steps=2)
    with pytest.raises(ValueError, match=message):
        edit(prompt, image, mask, steps=2)


@pytest.mark.parametrize("prompt", ["!!!", " ", "...", [PROMPT, "?"]])
def test_a_prompt_without_words_is_refused_but_the_empty_prompt_is_unconditional(text, no_model, prompt):
    bad = prompt[1] if isinstance(prompt, list) else prompt
    with pytest.raises(ValueError, match=re.escape(f"the prompt {bad!r} has no words")):
        get_tokenizer("shapesworld", 12).padded_tokens_and_mask(prompt)
    no_model(text)
    with pytest.raises(ValueError, match=re.escape(f"the prompt {bad!r} has no words")):
        text(prompt, steps=2)


def test_the_empty_prompt_still_samples(text):
    tokens, mask = get_tokenizer("shapesworld", 12).padded_tokens_and_mask(["", "a red circle!"])
    assert not mask[0].any() and mask[1].sum() == 3
    assert text("", steps=2).shape == (1, 3, 8, 8)


# -- the upsampler's low-res size --------------------------------------------------------------------------
@pytest.mark.parametrize("size", [(1, 1), (5, 7), (8, 7), (16, 16), (32, 32)])
def test_upsampler_takes_only_the_low_res_size_it_was_trained_on(upsampler, no_model, size):
    no_model(upsampler)
    message = re.escape(f"low_res must be [N, 3, 8, 8] (this upsampler was trained on 8x8 inputs: model.image_size "
                        f"32 / 4), got (1, 3, {size[0]}, {size[1]})")
    with pytest.raises(ValueError, match=message):
        upsampler(PROMPT, low_res=torch.rand(1, 3, *size))
    with pytest.raises(ValueError, match=message):
        upsampler.upsample(torch.rand(1, 3, *size) * 2 - 1, [PROMPT])


def test_cascade_with_a_base_of_another_size_is_refused_before_sampling(upsampler, no_model):
    cfg = tiny_text_config()  # 16 px: the upsampler takes 8 px
    pipe = TextPipeline(model_of(cfg), cfg, upsampler=upsampler)
    no_model(pipe, upsampler)
    with pytest.raises(ValueError, match=re.escape("the base model makes 16x16 images but the upsampler")):
        pipe(PROMPT, upsample=True, steps=2)


# -- every argument checked before any work ----------------------------------------------------------------
TEXT_BAD = [
    (dict(steps="fifty"), "bad respacing 'fifty'"),
    (dict(steps=0), r"steps must be in 1\.\.50, got 0"),
    (dict(sampler="plms"), "unknown sampler 'plms'"),
    (dict(guidance="clipp"), "unknown guidance 'clipp'"),
    (dict(upsample_steps="bogus"), "bad respacing 'bogus'"),
    (dict(upsample_steps=99), r"steps must be in 1\.\.50, got 99"),
    (dict(upsample_sampler="plms"), "unknown upsample_sampler 'plms'"),
    (dict(upsample_temperature=0), re.escape("upsample_temperature must be > 0, got 0")),
    (dict(aug_level=999), re.escape("aug_level must be a whole number of forward steps in 0..50")),
    (dict(aug_level=2.5), re.escape("aug_level must be a whole number of forward steps in 0..")),
]


@pytest.mark.parametrize(("change", "message"), TEXT_BAD)
def test_text_pipeline_checks_every_argument_before_the_base_model_runs(text, upsampler, no_model, change, message):
    no_model(text, upsampler)
    with pytest.raises(ValueError, match=message):
        text(PROMPT, **{"upsample": True, "steps": 2, **change})


EDIT_BAD = [
    *[c for c in TEXT_BAD if "guidance" not in c[0]],
    (dict(guidance_scale=-1), re.escape("guidance_scale must be >= 0, got -1")),
    (dict(method="paint"), "unknown method 'paint'"),
]


@pytest.mark.parametrize(("change", "message"), EDIT_BAD)
def test_inpaint_pipeline_checks_every_argument_before_the_base_model_runs(edit, no_model, change, message):
    no_model(edit.stage("inpaint"), edit.stage("upsample-inpaint"))
    image, mask = edit_inputs()
    with pytest.raises(ValueError, match=message):
        edit(PROMPT, image, mask, **{"steps": 2, **change})


@pytest.mark.parametrize(("change", "name"), [(dict(eta=math.nan), "eta"), (dict(seed=-1), "seed"),
                                              (dict(guidance_scale=math.inf), "guidance_scale"),
                                              (dict(upsample_temperature=math.nan), "upsample_temperature"),
                                              (dict(sampler="plms"), "sampler"), (dict(method="paint"), "method"),
                                              (dict(prompt={"a": 1}), "prompt"), (dict(aug_level=-1), "aug_level")])
def test_inpaint_pipeline_checks_its_settings_before_loading_a_checkpoint(tmp_path, monkeypatch, change, name):
    monkeypatch.setenv("GLIDE_MINIMAL_CHECKPOINTS", str(tmp_path))  # nothing to load: loading would fail
    image, mask = edit_inputs()
    args = {"prompt": PROMPT, **change}
    with pytest.raises(ValueError) as info:
        inpaint_group("tutorial-text", torch.device("cpu"))(args.pop("prompt"), image, mask, **args)
    assert not isinstance(info.value, CheckpointError) and name in str(info.value)


def test_class_pipeline_checks_sampling_arguments_before_loading_its_classifier(digits, no_model):
    no_model(digits)
    with pytest.raises(ValueError, match="unknown sampler 'plms'"):
        digits([1], method="classifier", sampler="plms")  # no classifier is registered: loading it would fail
    with pytest.raises(ValueError, match=r"sampler='dpm\+\+2m' cannot follow a guidance gradient"):
        digits([1], method="classifier", sampler="dpm++2m")


# -- the command line --------------------------------------------------------------------------------------
def one_line_error(capsys, *fragments: str) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1, err
    for fragment in fragments:
        assert fragment in err, err
    return err


@pytest.fixture
def tiny_checkpoints(tmp_path, monkeypatch):
    cfg = tiny_config()
    pretrained.publish("tiny", model_of(cfg).state_dict(), cfg.to_dict(), record={"command": "pytest"},
                       root=tmp_path / "ckpts")
    monkeypatch.setenv("GLIDE_MINIMAL_CHECKPOINTS", str(tmp_path / "ckpts"))
    return tmp_path


def sample_args(tmp_path, *extra: str) -> list[str]:
    return ["sample", "--pipeline", "tiny", "--num-images", "2", "--steps", "2", "--device", "cpu", "--no-progress",
            *(extra if "--out" in extra else [*extra, "--out", str(tmp_path / "grid.png")])]


@pytest.mark.parametrize(("flag", "value", "fragment"), [
    ("--guidance-scale", "nan", "argument --guidance-scale: must be a finite number >= 0, got 'nan'"),
    ("--guidance-scale", "inf", "argument --guidance-scale: must be a finite number >= 0, got 'inf'"),
    ("--guidance-scale", "-1", "argument --guidance-scale: must be >= 0, got '-1'"),
    ("--eta", "nan", "argument --eta: must be a finite number in [0, 1], got 'nan'"),
    ("--eta", "-inf", "argument --eta: must be a finite number in [0, 1], got '-inf'"),
    ("--eta", "1.5", "argument --eta: must be in [0, 1], got '1.5'"),
    ("--eta", "x", "argument --eta: must be a finite number in [0, 1], got 'x'"),
    ("--guidance", "clipp", "argument --guidance: invalid choice: 'clipp'"),
    ("--method", "paint", "argument --method: invalid choice: 'paint'"),
    ("--nrow", "0", "argument --nrow: must be a whole number >= 1, got '0'"),
    ("--num-images", "0", "argument --num-images: must be a whole number >= 1, got '0'"),
    ("--num-images", "1.5", "argument --num-images: must be a whole number >= 1, got '1.5'"),
    ("--threads", "-1", "argument --threads: must be a whole number >= 1, got '-1'"),
    ("--threads", "0", "argument --threads: must be a whole number >= 1, got '0'"),
    ("--seed", "-1", "argument --seed: must be a whole number in 0..2**64 - 1, got '-1'"),
    ("--seed", "1.7", "argument --seed: must be a whole number in 0..2**64 - 1, got '1.7'"),
    ("--labels", "3.7", "argument --labels: must be a whole number >= 0, got '3.7'"),
    ("--device", "nope", "argument --device: unknown device 'nope'; use cpu, cuda, cuda:N or mps"),
])
def test_cli_sample_refuses_bad_flags_in_one_line_before_loading(tiny_checkpoints, monkeypatch, capsys, flag, value,
                                                                  fragment):
    monkeypatch.setattr(cli, "load_pipeline", None)  # loading a pipeline would be a TypeError
    assert main(sample_args(tiny_checkpoints, f"{flag}={value}")) == 2  # "=": argparse takes "-inf" for a flag
    one_line_error(capsys, "glide-minimal sample: error: ", fragment)
    assert not (tiny_checkpoints / "grid.png").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cli_refuses_cuda_without_a_gpu(tiny_checkpoints, capsys):
    assert main(sample_args(tiny_checkpoints, "--device", "cuda")) == 2
    one_line_error(capsys, "argument --device: device 'cuda' is not available")


def test_cli_sample_refuses_a_bad_respacing_before_writing(tiny_checkpoints, capsys):
    out = tiny_checkpoints / "g.png"
    assert main(sample_args(tiny_checkpoints)[:-2] + ["--steps", "fifty", "--out", str(out)]) == 2
    one_line_error(capsys, "glide-minimal: error: steps: bad respacing 'fifty'")
    assert not out.exists()


def out_cases(tmp_path):
    (tmp_path / "folder").mkdir()
    (tmp_path / "file.txt").write_text("x")
    return [
        (tmp_path / "missing" / "grid.png", f"the folder {tmp_path / 'missing'} does not exist (create it first)"),
        (tmp_path / "file.txt" / "grid.png", f"{tmp_path / 'file.txt'} is not a folder"),
        (tmp_path / "folder", f"{tmp_path / 'folder'} is a folder; give an image file name, e.g. "
                              f"{tmp_path / 'folder' / 'samples.png'}"),
        (tmp_path / "grid.xyz", "grid.xyz: unknown image extension '.xyz'; use one of .png, .jpg"),
        (tmp_path / "grid", "grid: no image extension; use one of .png, .jpg"),
    ]


@pytest.mark.parametrize("index", range(5))
def test_cli_sample_checks_out_before_sampling(tiny_checkpoints, monkeypatch, capsys, index):
    out, fragment = out_cases(tiny_checkpoints)[index]
    monkeypatch.setattr(cli, "load_pipeline", None)
    assert main(sample_args(tiny_checkpoints, "--out", str(out))) == 2
    one_line_error(capsys, "glide-minimal sample: error: argument --out: ", fragment)


def test_cli_sample_refuses_an_unwritable_out(tiny_checkpoints, monkeypatch, capsys):
    locked, readonly = tiny_checkpoints / "locked", tiny_checkpoints / "readonly.png"
    locked.mkdir()
    readonly.write_bytes(b"")
    locked.chmod(0o500)
    readonly.chmod(0o400)
    if os.access(locked, os.W_OK):  # root writes anywhere: play a user who may not
        real = os.access
        refused = {str(locked), str(readonly)}
        monkeypatch.setattr(os, "access", lambda p, mode: False if str(p) in refused else real(p, mode))
    monkeypatch.setattr(cli, "load_pipeline", None)
    try:
        assert main(sample_args(tiny_checkpoints, "--out", str(locked / "grid.png"))) == 2
        one_line_error(capsys, f"argument --out: cannot write to the folder {locked}")
        assert main(sample_args(tiny_checkpoints, "--out", str(readonly))) == 2
        one_line_error(capsys, f"argument --out: {readonly} exists and is not writable")
    finally:
        locked.chmod(0o700)


def test_cli_sample_writes_every_listed_image_format(tiny_checkpoints, capsys):
    for ext in cli.IMAGE_FORMATS:
        out = tiny_checkpoints / f"grid{ext}"
        assert main(sample_args(tiny_checkpoints, "--out", str(out))) == 0, capsys.readouterr().err
        assert out.stat().st_size > 0
    assert {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".pdf", ".svg"} <= set(cli.IMAGE_FORMATS)


@pytest.mark.parametrize("error", [
    PermissionError(13, "Permission denied", "/root/x.png"), NotADirectoryError(20, "Not a directory", "a/b"),
    IsADirectoryError(21, "Is a directory", "runs"), FileNotFoundError(2, "No such file or directory", "nope.yaml"),
    yaml.YAMLError("while parsing a flow sequence"), CheckpointError("truncated checkpoint"),
    KeyError("unknown checkpoint 'huge'"), ValueError("bad value"),
])
def test_cli_turns_expected_errors_into_one_line(monkeypatch, capsys, error):
    def fail(args):
        raise error
    monkeypatch.setitem(cli.COMMANDS, "info", cli.COMMANDS["info"]._replace(run=fail))
    assert main(["info", "--config", "tutorial-ddpm"]) == 2
    err = one_line_error(capsys, "glide-minimal: error: ")
    if isinstance(error, OSError):
        assert f"{error.strerror}: {error.filename}" in err  # not "error: 13"
    elif isinstance(error, KeyError):
        assert "unknown checkpoint 'huge'" in err and "\"unknown" not in err


@pytest.mark.parametrize("bug", [ZeroDivisionError("division by zero"), TypeError("unsupported operand"),
                                 AttributeError("no attribute"), IndexError("index out of range"), KeyError("tokens"),
                                 RuntimeError("CUDA out of memory")])
def test_cli_lets_a_real_bug_show_its_traceback(monkeypatch, bug):
    def fail(args):
        raise bug
    monkeypatch.setitem(cli.COMMANDS, "info", cli.COMMANDS["info"]._replace(run=fail))
    with pytest.raises(type(bug)):
        main(["info", "--config", "tutorial-ddpm"])


def test_cli_malformed_yaml_config_is_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [1, 2\n")
    assert main(["info", "--config", str(bad)]) == 2
    one_line_error(capsys, "glide-minimal: error: ")


@pytest.mark.parametrize(("args", "fragment"), [
    (["bench", "sampler", "--repeats", "0"], "argument --repeats: must be a whole number >= 1, got '0'"),
    (["bench", "sampler", "--steps", "0"], "argument --steps: must be a whole number >= 1, got '0'"),
    (["bench", "sampler", "--batch", "-2"], "argument --batch: must be a whole number >= 1, got '-2'"),
    (["bench", "sampler", "--threads", "-1"], "argument --threads: must be a whole number >= 1, got '-1'"),
    (["bench", "sampler", "--device", "nope"], "argument --device: unknown device 'nope'"),
    (["train", "--config", "tutorial-ddpm", "--threads", "-1"], "argument --threads: must be a whole number >= 1"),
    (["train", "--config", "tutorial-ddpm", "--device", "nope"], "argument --device: unknown device 'nope'"),
    (["fetch", "http://x", "--sha256", "0" * 64, "--out", "x", "--retries", "-1"],
     "argument --retries: must be a whole number >= 0, got '-1'"),
])
def test_cli_other_commands_refuse_bad_counts_and_devices(capsys, args, fragment):
    assert main(args) == 2
    one_line_error(capsys, "error: ", fragment)


def test_bench_functions_refuse_bad_counts():
    from glide_minimal.bench import bench_guidance, bench_sampler, best_of

    with pytest.raises(ValueError, match=re.escape("repeats must be a whole number >= 1, got 0")):
        best_of(lambda: None, 0)
    with pytest.raises(ValueError, match=re.escape("repeats must be a whole number >= 1, got 0")):
        bench_sampler(repeats=0)
    with pytest.raises(ValueError, match=re.escape("batch must be a whole number >= 1, got 0")):
        bench_guidance(batch=0)
