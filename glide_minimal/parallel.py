"""Training on several GPUs: DDP or FSDP, activation checkpointing, and full state dicts for checkpoints.

- DDP (data parallel) keeps a full copy of the weights, gradients, AdamW moments and EMA on every GPU and
  all-reduces the gradients. Fastest for models that fit on one GPU (the released 385 M GLIDE).
- FSDP (torch's `fully_shard`, ZeRO stage 3) keeps 1/N of each of them per GPU and all-gathers one
  block's weights just before the block runs (and frees them after). The 3.5 B paper model needs it.
Both average the gradients over the global batch, so one update equals a single process's update on
the same batch. The FSDP units are the same blocks activation checkpointing recomputes: the U-Net's
ResBlocks and attention blocks and the transformers' residual blocks.

Checkpoints keep one format whatever the wrapping: full (unsharded) tensors, optimizer state indexed by
the parameter's position in `model.parameters()`. A run saved under FSDP resumes under DDP or in one
process, and the other way round.
"""
from __future__ import annotations

import contextlib
import types

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.device_mesh import init_device_mesh
from torch.utils.checkpoint import checkpoint

from .models.layers import AttentionBlock, ResBlock
from .models.text import ResidualAttentionBlock

# torch.distributed.tensor (DTensor), and fsdp and checkpoint.state_dict built on it, take over a second to import
# and only sharded (FSDP) runs use them: the functions below import them when called, so that `import
# glide_minimal` stays fast for sampling.

# The units of checkpointing and of sharding: each is a few convolutions or one transformer layer.
BLOCK_TYPES = (ResBlock, AttentionBlock, ResidualAttentionBlock)  # the CLIP uses ResidualAttentionBlock too


def blocks(model: nn.Module) -> list[nn.Module]:
    """The model's blocks (BLOCK_TYPES), in module order. Blocks never nest, so none is inside another."""
    return [m for m in model.modules() if isinstance(m, BLOCK_TYPES)]


def _checkpointed_forward(self: nn.Module, *args, **kwargs):
    """A block's forward that keeps only its inputs and recomputes the rest during backward."""
    forward = type(self).forward  # the class's own forward: this method replaces it on the instance only
    if not torch.is_grad_enabled():  # sampling: nothing is kept for backward anyway
        return forward(self, *args, **kwargs)
    # Non-reentrant checkpointing accepts keyword arguments and inputs that need no grad; it restores the
    # RNG state for the recomputation, so dropout draws the same masks twice.
    return checkpoint(forward, self, *args, use_reentrant=False, **kwargs)


def enable_activation_checkpointing(model: nn.Module) -> int:
    """Recompute every block's activations in backward instead of keeping them; returns how many blocks.

    Memory for activations falls to the block inputs plus one block's internals, for about one extra
    forward pass of compute. The state dict's keys do not change (no wrapper module is inserted): the
    instance's forward is replaced by a bound method, which copy.deepcopy rebinds to the copy.
    """
    found = blocks(model)
    for block in found:
        block.forward = types.MethodType(_checkpointed_forward, block)
    return len(found)


def is_sharded(model: nn.Module) -> bool:
    # lazy: torch.distributed's FSDP modules take ~1.4 s to import; only sharded runs need them
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def shard(model: nn.Module, device: torch.device, param_dtype: torch.dtype | None = None) -> nn.Module:
    """Shard `model` in place over all processes with fully_shard: every block, then the root (the rest).

    param_dtype (e.g. bf16) is the dtype the weights are all-gathered and computed in; the sharded
    master weights, the gradient reduction and the optimizer stay in float32.
    """
    # lazy: torch.distributed's FSDP modules take ~1.4 s to import; only sharded runs need them
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    policy = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32 if param_dtype else None)
    for block in blocks(model):
        fully_shard(block, mesh=mesh, mp_policy=policy)
    fully_shard(model, mesh=mesh, mp_policy=policy)
    return model


def data_parallel(model: nn.Module, device: torch.device) -> nn.Module:
    """Wrap in DDP. Gradients live in DDP's communication buckets (no second copy of them)."""
    return nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                               gradient_as_bucket_view=True)


def gradient_sync(wrapped: nn.Module, sync: bool) -> contextlib.AbstractContextManager:
    """A context for one micro-batch's forward and backward: DDP all-reduces only when `sync` (the last
    micro-batch), accumulating locally before. FSDP reduce-scatters every micro-batch: that keeps the
    gradients sharded (1/N of the memory) at the cost of more communication."""
    if isinstance(wrapped, nn.parallel.DistributedDataParallel) and not sync:
        return wrapped.no_sync()
    return contextlib.nullcontext()


def full_tensor(x: torch.Tensor) -> torch.Tensor:
    """A plain tensor from a possibly sharded one (a collective for DTensors: every rank must call)."""
    # lazy: torch.distributed's FSDP modules take ~1.4 s to import; only sharded runs need them
    from torch.distributed.tensor import DTensor

    return x.full_tensor() if isinstance(x, DTensor) else x


def local_tensor(x: torch.Tensor) -> torch.Tensor:
    """This rank's part of a possibly sharded tensor (no communication): the shard of a DTensor, else x."""
    # lazy: torch.distributed's FSDP modules take ~1.4 s to import; only sharded runs need them
    from torch.distributed.tensor import DTensor

    return x.to_local() if isinstance(x, DTensor) else x


def _full_options(**kwargs):
    # lazy: torch.distributed's FSDP modules take ~1.4 s to import; only sharded runs need them
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, **kwargs)


def full_state_dict(module: nn.Module) -> dict[str, torch.Tensor]:
    """The module's unsharded state dict. Sharded: every rank must call; rank 0 gets the tensors (on the
    CPU, gathered one at a time), the other ranks an empty dict."""
    if not is_sharded(module):
        return module.state_dict()
    # lazy: torch.distributed's FSDP modules take ~1.4 s to import; only sharded runs need them
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    return get_model_state_dict(module, options=_full_options(cpu_offload=True))


def full_optimizer_state(model: nn.Module, opt: torch.optim.Optimizer) -> dict[int, dict[str, torch.Tensor]]:
    """{parameter index: {"step", "exp_avg", "exp_avg_sq"}}, indexed as in model.parameters(). Sharded:
    every rank must call; rank 0 gets the tensors, the other ranks an empty dict."""
    if not is_sharded(model):
        return opt.state_dict()["state"]
    # lazy: torch.distributed's FSDP modules take ~1.4 s to import; only sharded runs need them
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    index = {name: i for i, (name, _) in enumerate(model.named_parameters())}
    state = get_optimizer_state_dict(model, opt, options=_full_options(cpu_offload=True)).get("state", {})
    return {index[name]: values for name, values in state.items()}


def load_sharded(model: nn.Module, ema: nn.Module, opt: torch.optim.Optimizer, model_state: dict[str, torch.Tensor],
                 ema_state: dict[str, torch.Tensor], optim_state: dict[int, dict[str, torch.Tensor]]) -> None:
    """Load full state dicts into sharded model, EMA and optimizer. Rank 0 passes the tensors (read from
    the checkpoint), the other ranks empty dicts: rank 0 broadcasts, so only one process reads the file."""
    # lazy: torch.distributed's FSDP modules take ~1.4 s to import; only sharded runs need them
    from torch.distributed.checkpoint.state_dict import set_model_state_dict, set_optimizer_state_dict

    options = _full_options(broadcast_from_rank0=True)
    set_model_state_dict(model, model_state, options=options)
    set_model_state_dict(ema, ema_state, options=options)
    names = [name for name, _ in model.named_parameters()]
    name_of = {id(p): name for name, p in model.named_parameters()}
    full = {}
    if dist.get_rank() == 0:
        groups = [{**{k: v for k, v in g.items() if k != "params"}, "params": [name_of[id(p)] for p in g["params"]]}
                  for g in opt.param_groups]
        full = {"state": {names[i]: values for i, values in optim_state.items()}, "param_groups": groups}
    set_optimizer_state_dict(model, opt, full, options=options)
