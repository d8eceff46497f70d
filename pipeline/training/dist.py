"""Multi-process training (torchrun): process group set-up and gradient averaging.

Gradients are all-reduced by hand after each backward, as stylegan2-ada-pytorch
does, rather than through DistributedDataParallel: the generator and
discriminator phases use each other's networks with gradients switched off,
which DDP's reducer does not expect.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Dist:
    rank: int
    world: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup() -> Dist:
    """Join the torchrun process group when launched by torchrun, else a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Dist(rank, world, device)


def average_gradients(module: torch.nn.Module, ctx: Dist) -> None:
    if ctx.world == 1:
        return
    for p in module.parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad /= ctx.world


def mean(value: float, ctx: Dist, device: torch.device) -> float:
    if ctx.world == 1:
        return value
    t = torch.tensor(value, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.item() / ctx.world


def barrier(ctx: Dist) -> None:
    if ctx.world > 1:
        dist.barrier()


def teardown(ctx: Dist) -> None:
    if ctx.world > 1 and dist.is_initialized():
        dist.destroy_process_group()
