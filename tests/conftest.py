"""Shared helpers: tiny configs, a CLI runner for subprocess tests, checkpoint readers.

Every test uses the smallest config that shows its behaviour (8x8 digits, a 16-channel U-Net, a
50-step chain), one torch thread, and tmp_path for anything written.
"""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from glide_minimal.config import Config, load_config

ROOT = Path(__file__).resolve().parents[1]

# A U-Net of a few hundred k parameters on 8x8 digits: one training step takes milliseconds on one core.
TINY = {
    "model.image_size": 8,
    "data.image_size": 8,
    "model.model_channels": 16,
    "model.channel_mult": [1, 2],
    "model.num_res_blocks": 1,
    "model.attention_resolutions": [4],
    "model.num_head_channels": 16,
    "model.dropout": 0.0,
    "model.learn_sigma": False,
    "diffusion.model_var_type": "fixed_small",
    "diffusion.loss_type": "mse",
    "diffusion.num_timesteps": 50,
    "diffusion.noise_schedule": "linear",
    "diffusion.sample_respacing": "10",
    "train.batch_size": 8,
    "train.lr": 2e-3,
    "train.warmup_steps": 0,
    "train.max_steps": 10,
    "train.ema_rate": 0.9,
    "train.log_every": 1,
    "train.ckpt_every": 5,
    "train.seed": 0,
}


def tiny_config(overrides: dict | None = None) -> Config:
    """tutorial-ddpm shrunk to TINY, plus `overrides` (dotted keys)."""
    return load_config("tutorial-ddpm", overrides={**TINY, **(overrides or {})})


def nested(dotted: dict) -> dict:
    """{"train.lr": 1} -> {"train": {"lr": 1}} (the YAML file's shape)."""
    out: dict = {}
    for key, value in dotted.items():
        section, _, name = key.partition(".")
        out.setdefault(section, {})[name] = value
    return out


def write_tiny_yaml(path: Path, overrides: dict | None = None) -> Path:
    """A config file that inherits tutorial-ddpm and shrinks it to TINY (+ overrides)."""
    raw = {"inherit": "tutorial-ddpm", **nested({**TINY, **(overrides or {})})}
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def subprocess_env() -> dict[str, str]:
    """The environment for child processes: one thread each, no GPU, no inherited torchrun variables."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "GLIDE_MINIMAL_CHECKPOINTS")}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="", PYTHONUNBUFFERED="1")
    return env


def cli_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "glide_minimal.cli", *args]


def run_cli(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run `glide-minimal ARGS` in a fresh interpreter; fails the test with its stderr if it fails."""
    proc = subprocess.run(cli_command(*args), cwd=cwd, env=subprocess_env(), capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, f"glide-minimal {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}"
    return proc


def checkpoint_step(path: Path) -> int | None:
    """The step recorded in a training checkpoint, or None while there is none. Reads only the safetensors
    header (the file is replaced atomically, so an open file is always complete)."""
    try:
        with open(path, "rb") as f:
            header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
    except FileNotFoundError:
        return None
    return json.loads(header["__metadata__"]["json"])["step"]


def assert_same_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], *, exact: bool = True,
                        atol: float = 0.0) -> None:
    """Same keys, and every tensor equal (bitwise with exact=True, else within atol)."""
    assert sorted(a) == sorted(b)
    differ = []
    for key in sorted(a):
        if exact:
            same = torch.equal(a[key], b[key])
        else:
            same = torch.allclose(a[key].double(), b[key].double(), rtol=0, atol=atol)
        if not same:
            gap = (a[key].double() - b[key].double()).abs().max().item()
            differ.append(f"{key} (max |diff| {gap:.3g})")
    assert not differ, f"{len(differ)} of {len(a)} tensors differ, e.g. {differ[:5]}"


def randomize_(module: torch.nn.Module, seed: int = 0, scale: float = 0.05) -> torch.nn.Module:
    """Perturb every parameter (so zero-initialised output layers stop hiding the network)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale)
    return module


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """Two cores shared with other jobs (and xdist workers): one intra-op thread per test process."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# -- the tiny U-Net's parameters, counted by hand from its layer shapes (ADM: Dhariwal & Nichol 2021) -------
def conv_params(c_in: int, c_out: int, k: int) -> int:
    """A k x k convolution with a bias."""
    return c_in * c_out * k * k + c_out


def linear_params(d_in: int, d_out: int) -> int:
    return d_in * d_out + d_out


def norm_params(c: int) -> int:
    """GroupNorm: a scale and a shift per channel, whatever the number of groups."""
    return 2 * c


def resblock_params(c_in: int, c_out: int, emb: int) -> int:
    """norm, 3x3 conv, the embedding's scale and shift (emb -> 2 c_out), norm, 3x3 conv, and a 1x1 conv on
    the skip path when the width changes. Resampling (up/down) adds no parameters."""
    skip = conv_params(c_in, c_out, 1) if c_in != c_out else 0
    return (norm_params(c_in) + conv_params(c_in, c_out, 3) + linear_params(emb, 2 * c_out) + norm_params(c_out)
            + conv_params(c_out, c_out, 3) + skip)


def attention_params(c: int) -> int:
    """norm, the fused q, k, v projection (1x1, c -> 3c) and the output projection (1x1, c -> c)."""
    return norm_params(c) + conv_params(c, 3 * c, 1) + conv_params(c, c, 1)


def tiny_parameter_count(num_classes: int = 0) -> int:
    """The parameters of tiny_config()'s U-Net, from TINY alone (208,369 without labels): 8 px, one channel
    in and out (no learned sigma), width C = 16 with channel_mult [1, 2] (16 at 8 px, 32 at 4 px), one
    ResBlock per level, attention at 4 px, resampling ResBlocks, time embedding E = 4C = 64."""
    c, e = 16, 64
    time = linear_params(c, e) + linear_params(e, e)  # sinusoid(t) [C] -> E -> E
    labels = (num_classes + 1) * e if num_classes else 0  # a row per class and one for the null label
    # The encoder's blocks and the widths they hand to the decoder's skips: 16, 16, 16, 32.
    encoder = (conv_params(1, c, 3)  # 8 px
               + resblock_params(c, c, e)  # 8 px
               + resblock_params(c, c, e)  # 8 -> 4 px
               + resblock_params(c, 2 * c, e) + attention_params(2 * c))  # 4 px
    middle = resblock_params(2 * c, 2 * c, e) + attention_params(2 * c) + resblock_params(2 * c, 2 * c, e)
    # Each decoder ResBlock takes its input concatenated with the last skip not yet used.
    decoder = (resblock_params(2 * c + 2 * c, 2 * c, e) + attention_params(2 * c)  # 4 px
               + resblock_params(2 * c + c, 2 * c, e) + attention_params(2 * c)  # 4 px
               + resblock_params(2 * c, 2 * c, e)  # 4 -> 8 px
               + resblock_params(2 * c + c, c, e)  # 8 px
               + resblock_params(c + c, c, e))  # 8 px
    out = norm_params(c) + conv_params(c, 1, 3)
    return time + labels + encoder + middle + decoder + out


# The text-conditional variant: TINY on 16x16 ShapesWorld (the renderer's smallest useful size).
TINY_TEXT = {
    **TINY,
    "model.image_size": 16, "data.image_size": 16, "model.in_channels": 3, "model.out_channels": 3,
    "model.attention_resolutions": [8], "model.text_ctx": 12, "model.text_width": 32, "model.text_layers": 1,
    "model.text_heads": 2, "data.dataset": "shapesworld", "data.p_uncond": 0.2,
}


def tiny_text_config(overrides: dict | None = None) -> Config:
    return load_config("tutorial-ddpm", overrides={**TINY_TEXT, **(overrides or {})})


def straight_and_resumed(cfg: Config, root: Path, stop_at: int) -> tuple[dict, dict, dict]:
    """Train cfg to train.max_steps twice: straight through (root/straight), and stopped at stop_at then
    resumed from its checkpoint (root/split). Returns (straight tensors, split tensors, split metadata)."""
    from glide_minimal.checkpoint import load_tensors
    from glide_minimal.train import CHECKPOINT, Trainer

    Trainer(cfg, root / "straight", progress=False).run()
    Trainer(cfg, root / "split", progress=False).run(stop_at)
    Trainer(cfg, root / "split", resume=True, progress=False).run()
    straight, _ = load_tensors(root / "straight" / CHECKPOINT)
    split, meta = load_tensors(root / "split" / CHECKPOINT)
    return straight, split, meta


@pytest.fixture(autouse=True)
def _empty_user_cache(tmp_path_factory, monkeypatch):
    """The lookup order's user cache (place 2) is an empty folder in every test, so a developer's real
    ~/.cache/glide-minimal never shadows a shipped checkpoint; tests that use the cache set it themselves."""
    monkeypatch.setenv("GLIDE_MINIMAL_CACHE", str(tmp_path_factory.mktemp("user-cache")))


# -- your own captioned images: small folder and shard fixtures (tests/test_imagetext.py) --------------------
FOLDER_CAPTIONS = ["a red circle", "a large blue square", "a small green cross on the left", "a yellow triangle",
            "a magenta circle in the top right", "a cyan square in the bottom"]  # ShapesWorld's words


def picture(i: int, size: int = 24, mode: str = "RGB") -> Image.Image:
    """A deterministic test image: smooth colour ramps that differ per i."""
    y, x = np.mgrid[0:size, 0:size]
    rgb = np.stack([(x * 9 + i * 40) % 256, (y * 7 + i * 90) % 256, ((x + y) * 5 + i * 17) % 256], -1)
    return Image.fromarray(rgb.astype(np.uint8)).convert(mode)


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def write_folder(root: Path, n: int = 12, size: int = 24, csv: bool = False) -> Path:
    """n images in two subfolders with their captions in metadata.jsonl (or metadata.csv)."""
    rows = []
    for i in range(n):
        name = f"{'a' if i % 2 else 'b'}/{i:04d}.png"
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        picture(i, size).save(root / name)
        rows.append({"file_name": name, "text": FOLDER_CAPTIONS[i % len(FOLDER_CAPTIONS)]})
    if csv:
        lines = ["file_name,text"] + [f"{r['file_name']},{r['text']}" for r in rows]
        (root / "metadata.csv").write_text("\n".join(lines) + "\n")
    else:
        (root / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def write_shards(root: Path, shards: int = 4, per_shard: int = 5, size: int = 24, bad: dict | None = None) -> str:
    """WebDataset shards root/{0000..}.tar of NNNN.png + NNNN.txt; bad: {sample index: "nocaption" | "corrupt"}."""
    root.mkdir(parents=True, exist_ok=True)
    bad = bad or {}
    for s in range(shards):
        with tarfile.open(root / f"{s:04d}.tar", "w") as tar:
            for j in range(per_shard):
                i = s * per_shard + j
                caption = FOLDER_CAPTIONS[i % len(FOLDER_CAPTIONS)]
                members = {"png": png_bytes(picture(i, size)), "txt": caption.encode()}
                if bad.get(i) == "nocaption":
                    del members["txt"]
                if bad.get(i) == "corrupt":
                    members["png"] = b"\x89PNG not really"
                for ext, data in members.items():
                    info = tarfile.TarInfo(f"{i:06d}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    return str(root / f"{{0000..{shards - 1:04d}}}.tar")
