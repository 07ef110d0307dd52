"""Data-parallel training under torchrun: the few collective operations `fit` needs, as plain functions.

`torchrun --nproc_per_node N -m faceattr train ...` starts N processes and sets RANK, WORLD_SIZE and
LOCAL_RANK in each one's environment; `init_from_env` reads them and joins the process group (gloo on
the CPU, nccl on CUDA). Without those variables (a plain `faceattr train`) nothing is initialised and
every helper here is a no-op that returns its input, so a single process trains exactly as before.

How the work is split (see `fit`): `batch_size` is the global batch; each rank takes its contiguous
slice of every global batch (`shard`), so W ranks with per-rank batch B/W step through the same
global batches as one process with batch B, and a checkpoint's step counts global batches whatever
the world size.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from faceattr.errors import FaceattrError

__all__ = [
    "World",
    "env_world",
    "init_from_env",
    "shutdown",
    "barrier",
    "local_main_first",
    "shard",
    "shard_range",
    "all_reduce_sum",
    "all_reduce_mean",
    "all_reduce_tensor_sum",
    "all_gather_rows",
    "average_buffers",
    "wrap",
]

logger = logging.getLogger(__name__)

# How long a rank waits at a collective. Generous because the other ranks wait at a barrier while
# local rank 0 decodes the image cache (all of CelebA: minutes on a many-core node).
TIMEOUT = timedelta(minutes=60)


@dataclass(frozen=True)
class World:
    """Where this process stands in the job: one process is World() (rank 0 of 1)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str = ""  # "gloo" or "nccl" once initialised; "" for a single process
    owns_group: bool = False  # True when init_from_env created the process group (and shutdown destroys it)

    @property
    def distributed(self) -> bool:
        """True when several processes train together."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """True on the rank that writes checkpoints, logs and progress bars."""
        return self.rank == 0

    @property
    def is_local_main(self) -> bool:
        """True on the first rank of each node (it builds that node's caches)."""
        return self.local_rank == 0


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    if value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise FaceattrError(f"environment variable {name}={value!r} is not an integer (torchrun sets it)") from None


def env_world() -> World:
    """The world torchrun describes in RANK / WORLD_SIZE / LOCAL_RANK, without initialising anything."""
    world_size = _env_int("WORLD_SIZE", 1)
    rank, local_rank = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    if world_size < 1 or not 0 <= rank < world_size or local_rank < 0:
        raise FaceattrError(f"inconsistent torchrun environment: RANK={rank} WORLD_SIZE={world_size} LOCAL_RANK={local_rank}")
    return World(rank=rank, world_size=world_size, local_rank=local_rank)


def init_from_env(device: torch.device) -> tuple[World, torch.device]:
    """Join the process group torchrun describes; returns the world and this rank's device.

    A single process (no WORLD_SIZE, or WORLD_SIZE=1) gets World() and `device` unchanged. Several
    processes use nccl when `device` is CUDA (each rank on cuda:LOCAL_RANK) and gloo on the CPU. A
    process group that already exists (the caller made it) is used and left in place.
    """
    world = env_world()
    if not world.distributed:
        return World(), device
    if device.type == "cuda":
        if device.index not in (None, world.local_rank):
            logger.warning("device %s ignored under torchrun: rank %d uses cuda:%d (its LOCAL_RANK)",
                           device, world.rank, world.local_rank)
        device = torch.device("cuda", world.local_rank)
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    owns = not dist.is_initialized()
    if owns:
        dist.init_process_group(backend=backend, timeout=TIMEOUT)
    else:
        backend = str(dist.get_backend())
    if dist.get_world_size() != world.world_size or dist.get_rank() != world.rank:
        raise FaceattrError(f"the process group (rank {dist.get_rank()} of {dist.get_world_size()}) does not match "
                            f"RANK={world.rank} WORLD_SIZE={world.world_size}")
    logger.info("rank %d of %d (local rank %d) on %s, backend %s", world.rank, world.world_size, world.local_rank,
                device, backend)
    return World(rank=world.rank, world_size=world.world_size, local_rank=world.local_rank, backend=backend,
                 owns_group=owns), device


def shutdown(world: World) -> None:
    """Leave the process group if `init_from_env` created it."""
    if world.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def barrier(world: World) -> None:
    """Wait until every rank gets here (no-op for one process)."""
    if world.distributed:
        dist.barrier()


@contextlib.contextmanager
def local_main_first(world: World) -> Iterator[None]:
    """Run the body on each node's local rank 0 first, then on the other ranks.

    For work whose result lands in a cache (decoded images, teacher logits): the first rank builds
    it, the others wait at a barrier and then find it. The caches are written atomically, so nodes
    sharing one cache folder at worst build it twice, never read a half-written one.
    """
    if world.distributed and not world.is_local_main:
        dist.barrier()
    yield
    if world.distributed and world.is_local_main:
        dist.barrier()


def shard(idx: np.ndarray, world: World) -> np.ndarray:
    """This rank's contiguous slice of a global batch of indices (the whole batch for one process).

    Slices differ in length by at most one row; equal slices (batch size divisible by the world size)
    make the averaged gradient equal to the global batch's.
    """
    if not world.distributed:
        return idx
    return np.array_split(idx, world.world_size)[world.rank]


def shard_range(n: int, world: World) -> tuple[int, int]:
    """[start, stop) of this rank's contiguous share of `n` rows (validation)."""
    per = -(-n // world.world_size)
    start = min(n, world.rank * per)
    return start, min(n, start + per)


def _comm_device(world: World) -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if world.backend == "nccl" else torch.device("cpu")


def all_reduce_sum(values: np.ndarray | Sequence[float], world: World) -> np.ndarray:
    """Element-wise sum over ranks, in float64 (the values themselves for one process)."""
    arr = np.asarray(values, dtype=np.float64)
    if not world.distributed:
        return arr
    t = torch.from_numpy(arr.copy()).to(_comm_device(world))
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.cpu().numpy()


def all_reduce_mean(values: np.ndarray | Sequence[float], world: World) -> np.ndarray:
    """Element-wise mean over ranks (equal weight per rank)."""
    return all_reduce_sum(values, world) / world.world_size


def all_reduce_tensor_sum(t: torch.Tensor, world: World) -> torch.Tensor:
    """Sum of a tensor over ranks, without gradient (e.g. per-attribute label counts of a step)."""
    if not world.distributed:
        return t
    out = t.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out


def all_gather_rows(rows: np.ndarray, world: World) -> np.ndarray:
    """Concatenate every rank's rows [n_r, ...] in rank order; shards may differ in length."""
    if not world.distributed:
        return rows
    dev = _comm_device(world)
    n = torch.tensor([len(rows)], dtype=torch.int64, device=dev)
    sizes = [torch.zeros_like(n) for _ in range(world.world_size)]
    dist.all_gather(sizes, n)
    longest = int(max(int(s) for s in sizes))
    padded = np.zeros((longest, *rows.shape[1:]), dtype=rows.dtype)
    padded[: len(rows)] = rows
    t = torch.from_numpy(padded).to(dev)
    parts = [torch.empty_like(t) for _ in range(world.world_size)]
    dist.all_gather(parts, t)
    return np.concatenate([p[: int(s)].cpu().numpy() for p, s in zip(parts, sizes, strict=True)])


@torch.no_grad()
def average_buffers(model: nn.Module, world: World) -> None:
    """Make floating-point buffers (BatchNorm running statistics) the mean over ranks, integer ones rank 0's.

    In training mode BatchNorm normalises with each rank's own batch statistics and updates its running
    estimates from them, so the ranks' copies drift apart; averaging them before validation and before a
    checkpoint gives every rank, and the checkpoint, estimates from all the data.
    """
    if not world.distributed:
        return
    for buf in model.buffers():
        if buf.is_floating_point():
            dist.all_reduce(buf, op=dist.ReduceOp.SUM)
            buf.div_(world.world_size)
        else:
            dist.broadcast(buf, src=0)


def wrap(module: nn.Module, world: World, device: torch.device) -> nn.Module:
    """`module` in DistributedDataParallel, which averages its trainable parameters' gradients over ranks.

    Built again whenever the set of trainable parameters changes (freeze-then-fine-tune): DDP fixes it
    at construction. Rank 0's parameters and buffers are broadcast to the others here.
    """
    from torch.nn.parallel import DistributedDataParallel

    if not world.distributed:
        return module
    return DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None)
