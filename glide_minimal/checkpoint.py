"""Checkpoint files: safetensors written atomically, read with errors that name the file.

A training checkpoint holds the model, its EMA, the optimizer state and the step; its JSON metadata
holds the config. Safetensors stores only tensors and strings, so loading never runs pickled code.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, truncated, corrupt or does not match the model."""


def atomic_write_bytes(path: str | Path, payload: bytes) -> None:
    """Write to a temp file in the same folder, fsync, then rename: a crash leaves the old file intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; checkpoints are meant to be shared
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # make the rename itself durable
    finally:
        os.close(dir_fd)


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict | None = None) -> None:
    """Save tensors (contiguous, on CPU) plus a JSON-serialisable metadata dict, atomically."""
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    meta = {"json": json.dumps(metadata or {}, sort_keys=True)}
    atomic_write_bytes(path, st_save(tensors, metadata=meta))


def load_tensors(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """Load (tensors, metadata) from a file written by save_tensors; corrupt files raise CheckpointError."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    payload = path.read_bytes()
    try:
        tensors = st_load(payload)
        header_len = int.from_bytes(payload[:8], "little")
        header = json.loads(payload[8:8 + header_len])
        metadata = json.loads((header.get("__metadata__") or {}).get("json", "{}"))
    except Exception as e:  # safetensors raises its own error types for truncation and bad headers
        raise CheckpointError(f"checkpoint {path} is corrupt or truncated ({len(payload)} bytes): {e}") from None
    return tensors, metadata


def load_metadata(path: str | Path) -> dict:
    """The metadata of a file written by save_tensors, reading only its JSON header (not the tensors)."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        with open(path, "rb") as f:
            header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
        return json.loads((header.get("__metadata__") or {}).get("json", "{}"))
    except (ValueError, OSError, MemoryError) as e:  # a garbage length or header
        raise CheckpointError(f"checkpoint {path} is corrupt or truncated: {e}") from None


def load_state_dict_into(module: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Copy `state` into `module`, with an error that lists missing, unexpected and mis-shaped keys."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own.keys() & state.keys() if state[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} keys (e.g. {missing[:3]})")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} keys (e.g. {unexpected[:3]})")
        if shapes:
            parts.append(f"{len(shapes)} shape mismatches (e.g. {shapes[:2]})")
        raise CheckpointError(f"{source} does not match the model: " + "; ".join(parts))
    module.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()})
