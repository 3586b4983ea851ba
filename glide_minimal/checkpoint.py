"""Checkpoint files: safetensors written atomically, read with errors that name the file.

A training checkpoint holds the model, its EMA, the optimizer state and the step; its JSON metadata
holds the config. Safetensors stores only tensors and strings, so loading never runs pickled code.
A file saved with checksum=True also records the sha256 of its contents (the metadata and every tensor's
name, dtype, shape and bytes) in the safetensors header, and every load verifies it: a flipped bit in a
weight leaves a well-formed file that only the digest can tell from the one written.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from collections.abc import Iterable
from pathlib import Path

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, truncated, corrupt or does not match the model."""


def _temp_prefix(name: str) -> str:
    return f".{name}."


def atomic_write_bytes(path: str | Path, payload: bytes) -> None:
    """Write to a temp file in the same folder, fsync, then rename: a crash leaves the old file intact.

    The temp file is `.<name>.<8 random characters>.tmp`; a process killed before the rename leaves it
    behind, and remove_stale_temp_files removes exactly such names.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=_temp_prefix(path.name), suffix=".tmp")
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


def remove_stale_temp_files(folder: str | Path, names: Iterable[str]) -> list[Path]:
    """Delete the temp files that killed atomic writes of `names` left in `folder`; returns what was removed.

    Only `.<name>.<8 characters>.tmp`, the names atomic_write_bytes makes (mkstemp draws from a-z, 0-9 and
    _), is touched: any other file, e.g. a user's notes.tmp, stays. Call it before this folder's first write,
    when no write of the same process can be in flight.
    """
    folder, removed = Path(folder), []
    if not folder.is_dir():
        return removed
    patterns = [re.compile(re.escape(_temp_prefix(name)) + r"[a-z0-9_]{8}\.tmp") for name in names]
    for path in folder.iterdir():
        if any(p.fullmatch(path.name) for p in patterns) and path.is_file():
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def tensors_sha256(tensors: dict[str, torch.Tensor], metadata_json: str) -> str:
    """sha256 over the metadata JSON and every tensor's name, dtype, shape and raw bytes, in name order.

    Computed from the tensors rather than the file's bytes, so the digest can live inside the file's own
    header; a change to the header's offsets either fails safetensors' checks or changes a tensor.
    """
    h = hashlib.sha256(metadata_json.encode())
    for name in sorted(tensors):
        t = tensors[name].detach().to("cpu").contiguous()
        h.update(json.dumps([name, str(t.dtype), list(t.shape)]).encode())
        # a flat byte view works for every dtype (bf16 has no numpy type) and copies nothing
        h.update(t.reshape(-1).view(torch.uint8).numpy().data)
    return h.hexdigest()


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict | None = None, *,
                 checksum: bool = False) -> None:
    """Save tensors (contiguous, on CPU) plus a JSON-serialisable metadata dict, atomically.

    checksum: also record tensors_sha256 in the header (training checkpoints), which load_tensors verifies.
    """
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    meta = {"json": json.dumps(metadata or {}, sort_keys=True)}
    if checksum:
        meta["sha256"] = tensors_sha256(tensors, meta["json"])
    atomic_write_bytes(path, st_save(tensors, metadata=meta))


def load_tensors(path: str | Path, *, require_checksum: bool = False) -> tuple[dict[str, torch.Tensor], dict]:
    """Load (tensors, metadata) from a file written by save_tensors; corrupt files raise CheckpointError.

    A file that records a sha256 is verified against it; require_checksum: a file without one is an error too
    (a training checkpoint always has one, so its absence means the header was damaged or replaced).
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    payload = path.read_bytes()
    try:
        tensors = st_load(payload)
        header_len = int.from_bytes(payload[:8], "little")
        header = json.loads(payload[8:8 + header_len])
        raw_meta = header.get("__metadata__") or {}
        metadata = json.loads(raw_meta.get("json", "{}"))
    except Exception as e:  # safetensors raises its own error types for truncation and bad headers
        raise CheckpointError(f"checkpoint {path} is corrupt or truncated ({len(payload)} bytes): {e}") from None
    recorded = raw_meta.get("sha256")
    if recorded is None and require_checksum:
        raise CheckpointError(f"checkpoint {path} records no sha256 (glide-minimal writes one into every training "
                              "checkpoint): it was damaged, or written by other code or an older version; train into "
                              "a new output folder")
    if recorded is not None:
        actual = tensors_sha256(tensors, raw_meta.get("json", "{}"))
        if actual != recorded:
            raise CheckpointError(f"checkpoint {path} fails its sha256 check: its contents hash to {actual[:12]}... "
                                  f"but it records {recorded[:12]}...: the file was damaged after it was written")
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
