"""Guidance (chapters 2-3): classifier-free guidance as a model_fn wrapper, classifier guidance as a
cond_fn, the noised classifier, and the class pipeline's checks."""
from __future__ import annotations

import pytest
import torch

from glide_minimal.config import load_config
from glide_minimal.diffusion.guidance import classifier_cond_fn, classifier_free_eps, classifier_free_model_fn
from glide_minimal.models import NoisedClassifier, build_model
from glide_minimal.pipelines import ClassPipeline

SMALL = {"model.image_size": 8, "data.image_size": 8, "model.model_channels": 16, "model.channel_mult": [1, 2],
         "model.num_res_blocks": 1, "model.attention_resolutions": [4], "model.num_head_channels": 16,
         "diffusion.num_timesteps": 50, "diffusion.sample_respacing": "10"}

# Fixed variances: eps is all the model predicts (with learned ones, CFG keeps the conditional variance).
FIXED = {**SMALL, "model.learn_sigma": False, "diffusion.model_var_type": "fixed_small", "diffusion.loss_type": "mse"}


def randomise(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give the zero-initialised output layers weights too, so outputs depend on every input."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return model.eval()


@pytest.fixture(scope="module")
def class_pipe() -> ClassPipeline:
    torch.manual_seed(0)
    cfg = load_config("tutorial-digits", SMALL)
    ccfg = load_config("tutorial-digits-classifier",
                       {k: v for k, v in SMALL.items() if k.startswith(("model.image", "data.", "diffusion.num"))}
                       | {"model.model_channels": 16, "model.channel_mult": [1, 2], "model.num_head_channels": 16})
    return ClassPipeline(randomise(build_model(cfg)), cfg, "cpu", classifier=randomise(build_model(ccfg), 1))


def test_classifier_free_eps_is_exact_at_scales_zero_and_one():
    g = torch.Generator().manual_seed(0)
    e_c, e_u = torch.randn(2, 4, 1, 8, 8, generator=g)
    assert torch.equal(classifier_free_eps(e_c, e_u, 0.0), e_u)
    assert torch.equal(classifier_free_eps(e_c, e_u, 1.0), e_c)
    torch.testing.assert_close(classifier_free_eps(e_c, e_u, 3.0), e_u + 3.0 * (e_c - e_u))


def test_classifier_free_wrapper_uses_one_batched_forward_and_keeps_conditional_variance():
    calls = []

    def model_fn(x, t, labels):
        calls.append(x.shape[0])
        eps = labels.float().view(-1, 1, 1, 1).expand(-1, 1, 2, 2)      # eps = label value
        var = 10 + labels.float().view(-1, 1, 1, 1).expand(-1, 1, 2, 2)  # variance channel = 10 + label
        return torch.cat([eps, var], dim=1)

    labels, null = torch.tensor([2, 4]), torch.tensor([10, 10])
    guided = classifier_free_model_fn(model_fn, 3.0, {"labels": null}, eps_channels=1)
    out = guided(torch.zeros(2, 1, 2, 2), torch.tensor([5, 5]), labels=labels)
    assert calls == [4]                                                   # one forward over [cond; uncond]
    torch.testing.assert_close(out[:, 0, 0, 0], 10 + 3.0 * (labels.float() - 10))
    torch.testing.assert_close(out[:, 1, 0, 0], 10 + labels.float())      # conditional half's variance


def test_cfg_scale_one_reproduces_conditional_sampling(class_pipe):
    labels = [1, 5, 9]
    plain = class_pipe(labels, method="none", seed=3)
    cfg1 = class_pipe(labels, method="cfg", guidance_scale=1.0, seed=3)
    torch.testing.assert_close(cfg1, plain, atol=1e-5, rtol=0)


def test_cfg_scale_zero_reproduces_the_unconditional_model():
    # With fixed variances eps is all there is; with learned ones CFG keeps the conditional variance
    # (as GLIDE does), so scale 0 would differ from the unconditional model in the variance only.
    cfg = load_config("tutorial-digits", FIXED)
    pipe = ClassPipeline(randomise(build_model(cfg)), cfg, "cpu")
    uncond = pipe.sample(3, seed=4, model_kwargs={"labels": torch.tensor([10] * 3)})
    cfg0 = pipe([1, 5, 9], method="cfg", guidance_scale=0.0, seed=4)
    torch.testing.assert_close(cfg0, ((uncond + 1) / 2).clamp(0, 1), atol=1e-5, rtol=0)


class KnownEps(torch.nn.Module):
    """A stand-in class-conditional model whose eps is known: eps_c = (1 + label) x + label for a class,
    eps_u = x / 2 - 1 for the null label 10 (so the two branches differ for every image and pixel)."""

    def forward(self, x, t, labels):
        k = labels.float().view(-1, 1, 1, 1)
        return torch.where(k == 10, x / 2 - 1, (1 + k) * x + k)


@pytest.mark.parametrize("scale", [0.0, 1.0, 2.5, 7.0])
def test_cfg_moves_eps_from_the_unconditional_by_scale_times_the_class_direction(scale):
    x, labels = torch.randn(3, 1, 4, 4, generator=torch.Generator().manual_seed(0)), torch.tensor([0, 3, 9])
    eps_c = (1 + labels.float().view(-1, 1, 1, 1)) * x + labels.float().view(-1, 1, 1, 1)
    eps_u = x / 2 - 1
    guided = classifier_free_model_fn(KnownEps(), scale, {"labels": torch.full((3,), 10)}, eps_channels=1)
    out = guided(x, torch.tensor([7, 7, 7]), labels=labels)
    torch.testing.assert_close(out, eps_u + scale * (eps_c - eps_u), rtol=0, atol=1e-5)


def test_a_larger_cfg_scale_moves_samples_further_along_the_class_direction():
    # With fixed variances, scale 0 is the unconditional model and scale 1 the conditional one (tests above);
    # their difference is the class direction d. Guided eps moves by s times the eps difference, so samples
    # from one seed should move from the unconditional ones by about s * d: further for a larger s, along d
    # (a guidance that swapped the branches would move them by (1 - s) * d).
    cfg = load_config("tutorial-digits", FIXED)
    pipe = ClassPipeline(randomise(build_model(cfg)), cfg, "cpu")
    labels = [1, 5, 9]
    uncond = ((pipe.sample(3, seed=4, model_kwargs={"labels": torch.tensor([10] * 3)}) + 1) / 2).clamp(0, 1)
    d = (pipe(labels, method="none", seed=4) - uncond).flatten(1)
    assert (d.norm(dim=1) > 1e-4).all()
    moved = []
    for scale in (0.5, 2.0, 4.0):
        shift = (pipe(labels, method="cfg", guidance_scale=scale, seed=4) - uncond).flatten(1)
        along = (shift * d).sum(1) / d.pow(2).sum(1)  # per image, in units of d
        assert along.tolist() == pytest.approx([scale] * 3, rel=0.05)
        assert (torch.nn.functional.cosine_similarity(shift, d) > 0.99).all()
        moved.append(shift.norm(dim=1))
    assert (moved[0] < moved[1]).all() and (moved[1] < moved[2]).all()


def test_classifier_cond_fn_is_scaled_gradient_of_log_prob():
    torch.manual_seed(0)
    clf = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
    model = lambda x, t: clf(x) * (1 + t.float().view(-1, 1) / 100)
    x = torch.randn(2, 1, 4, 4)
    t, labels = torch.tensor([10, 20]), torch.tensor([0, 2])
    grad = classifier_cond_fn(model, labels, 2.5)(x, t)
    x_req = x.clone().requires_grad_(True)
    logp = model(x_req, t).log_softmax(-1)[[0, 1], labels].sum()
    torch.testing.assert_close(grad, 2.5 * torch.autograd.grad(logp, x_req)[0])


class BrightnessClassifier(torch.nn.Module):
    """A stand-in noised classifier: class 3's logit grows with the mean pixel value, the others are 0."""

    def forward(self, x, t):
        logits = torch.zeros(x.shape[0], 10, dtype=x.dtype, device=x.device)
        return logits.index_add(1, torch.tensor([3]), 5 * x.mean(dim=(1, 2, 3))[:, None])


def test_classifier_method_steers_samples_with_the_classifier_gradient():
    cfg = load_config("tutorial-digits", SMALL)
    pipe = ClassPipeline(build_model(cfg).eval(), cfg, "cpu", classifier=BrightnessClassifier())
    labels = [3] * 8
    unguided = pipe(labels, method="classifier", guidance_scale=0.0, seed=0)
    guided = pipe(labels, method="classifier", guidance_scale=20.0, seed=0)
    assert guided.mean() > unguided.mean() + 0.05


@pytest.mark.parametrize("labels, message", [([3, 10], "label 10 is out of range: this model knows classes 0..9"),
                                             ([-1], "label -1 is out of range"), ([], "labels is empty")])
def test_bad_labels_are_named(class_pipe, labels, message):
    with pytest.raises(ValueError, match=message):
        class_pipe(labels)


def test_negative_scale_and_unknown_method_are_errors(class_pipe):
    with pytest.raises(ValueError, match="guidance_scale must be >= 0, got -1"):
        class_pipe([1], guidance_scale=-1.0)
    with pytest.raises(ValueError, match="unknown method 'clip'; choose one of: cfg, classifier, none"):
        class_pipe([1], method="clip")


def test_noised_classifier_depends_on_t_and_checks_shape():
    cfg = load_config("tutorial-digits-classifier")
    clf = randomise(NoisedClassifier(cfg.model))
    x = torch.randn(2, 1, 16, 16)
    a, b = clf(x, torch.tensor([0, 0])), clf(x, torch.tensor([900, 900]))
    assert a.shape == (2, 10) and (a - b).abs().max() > 1e-4
    with pytest.raises(ValueError, match=r"takes \[N, 1, 16, 16\]"):
        clf(torch.randn(2, 1, 8, 8), torch.tensor([0, 0]))


def test_classifier_config_rejects_diffusion_only_keys():
    with pytest.raises(ValueError, match="task: classifier"):
        load_config("tutorial-digits-classifier", {"model.learn_sigma": True})
    with pytest.raises(ValueError, match="task = 'regressor' is not valid; choose one of: diffusion, classifier"):
        load_config({"name": "x", "task": "regressor"})


def test_cli_samples_a_class_pipeline_and_asks_for_labels(tmp_path, monkeypatch, capsys):
    from glide_minimal import pretrained
    from glide_minimal.cli import main

    cfg = load_config("tutorial-digits", SMALL)
    pretrained.publish("tiny-digits", build_model(cfg).state_dict(), cfg.to_dict(), record={"command": "test"},
                       root=tmp_path)
    monkeypatch.setenv("GLIDE_MINIMAL_CHECKPOINTS", str(tmp_path))
    out = tmp_path / "grid.png"
    assert main(["sample", "--pipeline", "tiny-digits", "--out", str(out), "--no-progress"]) == 2
    assert "class-conditional: pass --labels" in capsys.readouterr().err
    assert main(["sample", "--pipeline", "tiny-digits", "--labels", "3", "7", "--steps", "5", "--out", str(out),
                 "--no-progress"]) == 0
    assert out.exists() and "2 images" in capsys.readouterr().out
