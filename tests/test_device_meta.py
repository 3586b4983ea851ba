"""Device correctness without a GPU: the functions below run with their inputs on the `meta` device.

torch refuses to combine a meta tensor with a CPU one (a 0-dim CPU tensor excepted), as it refuses a CUDA
tensor with a CPU one, so a function whose tensor inputs are on meta runs only if every tensor it makes
follows its inputs' device. Meta tensors have no values, so only code without data-dependent control flow
(no .item()) can be checked this way. Some inputs stay on the CPU on purpose: a mask from masks.py is made
there, and a user's seeded torch.Generator() is a CPU one.

A chapter's own functions run the same way, compiled from its notebook with DEVICE = meta (chapter_function).

Meta does not check a generator's device; CUDA does (a CPU generator cannot draw on a GPU). The
strict_generators fixture adds that check to torch.randn and torch.randint.
"""
from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
import torch

from glide_minimal.diffusion import GaussianDiffusion, ddim_sample_loop, get_named_beta_schedule, p_sample_loop
from glide_minimal.diffusion.guidance import inpaint_denoised_fn, replacement_model_fn
from glide_minimal.metrics import seam_energy

BOOK = Path(__file__).resolve().parents[1] / "book"
SHAPE = (2, 3, 8, 8)
FULL = GaussianDiffusion(get_named_beta_schedule("linear", 30))
CHAIN = GaussianDiffusion(get_named_beta_schedule("linear", 30), use_timesteps=[0, 10, 20, 29])


def meta(*shape, dtype=torch.float32) -> torch.Tensor:
    return torch.zeros(*shape, dtype=dtype, device="meta")


def cpu_generator() -> torch.Generator:
    return torch.Generator().manual_seed(0)


def zero_eps(x: torch.Tensor, t: torch.Tensor, **_) -> torch.Tensor:
    return torch.zeros_like(x)


def t_eps(x: torch.Tensor, t: torch.Tensor, **_) -> torch.Tensor:
    """Zero, computed from t too, as a U-Net embeds t with its weights: t must be on x's device."""
    return torch.zeros_like(x) * t.to(x.dtype).reshape(-1, 1, 1, 1)


def cpu_mask() -> torch.Tensor:
    mask = torch.ones(2, 1, 8, 8)
    mask[:, :, 2:5, 3:6] = 0
    return mask


def chapter_function(notebook: str, name: str):
    """The function `name` that a chapter's code cell defines, compiled alone with torch and DEVICE = meta
    as its globals (the chapter's DEVICE is TIER.device): the chapter's own code, run on another device."""
    cells = json.loads((BOOK / notebook).read_text(encoding="utf-8"))["cells"]
    for cell in (c for c in cells if c["cell_type"] == "code"):
        try:
            tree = ast.parse("".join(cell["source"]))
        except SyntaxError:  # a cell with IPython syntax (!pip, %matplotlib) defines none of these
            continue
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and node.name == name:
                scope = {"torch": torch, "DEVICE": torch.device("meta")}
                exec(compile(ast.Module(body=[node], type_ignores=[]), str(BOOK / notebook), "exec"), scope)
                return scope[name]
    raise LookupError(f"{notebook} defines no function {name!r}")


T = lambda: meta(2, dtype=torch.long)  # noqa: E731
CASES = {  # name: (the call, the shape of its meta result)
    "seam_energy": (lambda: seam_energy(meta(*SHAPE), meta(2, 1, 8, 8)), (2,)),
    "seam_energy, CPU mask": (lambda: seam_energy(meta(*SHAPE), cpu_mask()), (2,)),
    "q_sample, CPU generator": (lambda: FULL.q_sample(meta(*SHAPE), T(), generator=cpu_generator()), SHAPE),
    "calc_bpd_loop, CPU generator": (
        lambda: CHAIN.calc_bpd_loop(zero_eps, meta(*SHAPE), generator=cpu_generator())["total_bpd"], (2,)),
    "calc_bpd_estimate, CPU generator": (
        lambda: FULL.calc_bpd_estimate(zero_eps, meta(*SHAPE), num_strata=3, generator=cpu_generator())["total_bpd"],
        (2,)),
    "p_sample_loop, CPU generator": (
        lambda: p_sample_loop(CHAIN, zero_eps, SHAPE, generator=cpu_generator(), device="meta"), SHAPE),
    "ddim_sample_loop, CPU generator": (
        lambda: ddim_sample_loop(CHAIN, zero_eps, SHAPE, eta=1.0, generator=cpu_generator(), device="meta"), SHAPE),
    "inpaint_denoised_fn, CPU image and mask": (
        lambda: inpaint_denoised_fn(torch.zeros(SHAPE), cpu_mask())(meta(*SHAPE)), SHAPE),
    "replacement_model_fn, CPU image, mask and generator": (
        lambda: replacement_model_fn(lambda x, t: x, FULL, torch.zeros(SHAPE), cpu_mask(), cpu_generator())(
            meta(*SHAPE), T()), SHAPE),
    # Chapter 1's five-line sampler draws its timesteps and noise on DEVICE (there from a CUDA generator, which
    # cannot draw on the CPU; meta has no generator, so none here).
    "chapter 1's ancestral sampler": (
        lambda: chapter_function("01_ddpm.ipynb", "ancestral")(CHAIN, t_eps, meta(*SHAPE), None), SHAPE),
}


@pytest.fixture(autouse=True)
def strict_generators(monkeypatch):
    """torch.randn and torch.randint refuse a generator of another device type than the draw's, as CUDA does."""
    for name in ("randn", "randint"):
        def strict(*args, original=getattr(torch, name), generator=None, device=None, **kwargs):
            wanted = torch.device(device if device is not None else "cpu").type
            if generator is not None and generator.device.type != wanted:
                raise RuntimeError(f"Expected a '{wanted}' device type for generator but found "
                                   f"'{generator.device.type}'")
            return original(*args, generator=generator, device=device, **kwargs)

        monkeypatch.setattr(torch, name, strict)


def test_strict_generators_refuse_a_cpu_generator_on_another_device():
    with pytest.raises(RuntimeError, match="device type for generator"):
        torch.randn(2, generator=cpu_generator(), device="meta")


@pytest.mark.parametrize("name", CASES)
def test_runs_on_the_inputs_device(name):
    call, shape = CASES[name]
    out = call()
    assert out.device.type == "meta" and tuple(out.shape) == shape
