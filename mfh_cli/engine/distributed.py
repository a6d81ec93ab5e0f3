"""Data-parallel training with PyTorch's own distributed package (`torchrun --nproc_per_node N -m mfh_cli train`).

Every rank walks the same global batches (same seed → same permutation) and trains on its slice of each; the
loss is scaled by the global number of active terms and gradients are summed, so each step equals the
single-process step on the whole global batch (BatchNorm statistics excepted: they are per rank, as in DDP
without SyncBatchNorm). Only rank 0 writes results.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Context:
    """Where this process stands: rank, world size (1 = no distribution)."""

    rank: int = 0
    world: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """All-reduce (sum) in place across ranks; a no-op in a single process."""
        if self.world > 1:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def sum_gradients(self, parameters: list[torch.nn.Parameter]) -> None:
        """Sum every gradient across ranks in one flat buffer (a missing gradient counts as zero)."""
        if self.world == 1:
            return
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in parameters]
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        offset = 0
        for parameter, grad in zip(parameters, grads):
            size = grad.numel()
            parameter.grad = flat[offset:offset + size].view_as(grad).clone()
            offset += size


def init_from_environment(device: torch.device) -> Context:
    """Join the process group when started by torchrun (WORLD_SIZE > 1): gloo on CPU, nccl on GPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Context()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return Context(rank=dist.get_rank(), world=dist.get_world_size())


def shutdown(context: Context) -> None:
    """Leave the process group (after every rank is done)."""
    if context.world > 1 and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
