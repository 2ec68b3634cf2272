"""8-bit scales of a DTensor parameter as a DTensor, so that a distributed checkpoint saves
every rank's own.

[note: scales of a shard] The kernels step each rank's local shard, and its 8-bit blocks of
256 run over the local elements (docs/numerics.md, the sharding rule). When the parameter is
sharded on dim 0 of a 1-D mesh (FSDP2's layout) and every shard but the last holds a multiple
of 256 elements, the local blocks are the whole tensor's blocks, so a rank's scales are its
slice of the whole tensor's scales: they are kept as that Shard(0) DTensor (its split checked
to be the one DTensor assumes), which DCP saves and reshards like any other state. Any other
layout keeps plain per-rank scales; those have no place in a checkpoint, so ``unplaceable``
says why and ``state_dict()`` refuses them before anything is written.
"""
from __future__ import annotations

import sys

import torch

from ..formats.q8_blockwise import BLOCK, SCALE_SUFFIX


def dtensor_module():
    """torch.distributed.tensor if something has imported it, else None. Importing it costs
    over half a second (sympy), and no tensor can be a DTensor before it is imported, so the
    package never imports it itself."""
    return sys.modules.get("torch.distributed.tensor")


def is_dtensor(t) -> bool:
    """True if ``t`` is a DTensor, without importing torch.distributed.tensor."""
    module = dtensor_module()
    return module is not None and isinstance(t, module.DTensor)


def local(t: torch.Tensor) -> torch.Tensor:
    """The tensor a kernel steps: a DTensor's local shard, or the tensor itself."""
    return t.to_local() if is_dtensor(t) else t


def _chunks(total: int, world: int) -> list[int]:
    """torch.chunk's sizes of ``total`` rows over ``world`` ranks (DTensor's Shard split)."""
    c = -(-total // world) if world else 0
    return [max(0, min(c, total - r * c)) for r in range(world)]


def shard_blocks(p) -> list[int] | None:
    """Each rank's count of 8-bit blocks when ``p`` is sharded as the note says, else None."""
    placements = p.placements
    if p.device_mesh.ndim != 1 or len(placements) != 1 or not isinstance(placements[0], dtensor_module().Shard) \
            or placements[0].dim != 0 or p.dim() == 0 or p.shape[0] == 0:
        return None
    rest = p.numel() // p.shape[0]
    rows = _chunks(p.shape[0], p.device_mesh.size())
    if any(n * rest % BLOCK for n in rows[:-1]):
        return None
    counts = [-(-(n * rest) // BLOCK) for n in rows]
    return counts if counts == _chunks(sum(counts), len(counts)) else None


def as_sharded(p: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """``scales`` (this rank's, plain) as the Shard(0) DTensor of the note where ``p`` allows."""
    if not is_dtensor(p):
        return scales
    counts = shard_blocks(p)
    if counts is None:
        return scales
    dt = dtensor_module()
    return dt.DTensor.from_local(scales, p.device_mesh, [dt.Shard(0)], run_check=False, shape=(sum(counts),),
                                 stride=(1,))


def unplaceable(p: torch.Tensor, state: dict) -> str | None:
    """Why ``state``'s 8-bit scales cannot go into a checkpoint, or None."""
    if not is_dtensor(p):
        return None
    for key, scale in state.items():
        if key.endswith(SCALE_SUFFIX) and not is_dtensor(scale):
            return (f"its 8-bit {key!r} are per-rank scales of a shard that does not start at a multiple of "
                    f"{BLOCK} elements (placements {p.placements}, shape {tuple(p.shape)}), which a checkpoint "
                    "cannot place: shard on dim 0 so that every shard holds a multiple of 256 elements, or keep "
                    "this parameter's states in fp32 (a param group with state_dtype=torch.float32, or "
                    "q8_min_numel above its size)")
    return None
