"""A DTensor parameter's quantized states as DTensors, so that a distributed checkpoint saves
every rank's own.

[note: scales of a shard] The kernels step each rank's local shard, and its blocks (256
elements for 8-bit, 128 for 4-bit) run over the local elements (docs/numerics.md, the sharding
rule). When the parameter is sharded on dim 0 of a 1-D mesh (FSDP2's layout) and every shard
but the last holds a multiple of the block, the local blocks are the whole tensor's blocks, so
a rank's scales are its slice of the whole tensor's scales: they are kept as that Shard(0)
DTensor (its split checked to be the one DTensor assumes), which DCP saves and reshards like
any other state. 8-bit codes have the parameter's shape, so they take its placement whatever
it is; any other layout keeps plain per-rank 8-bit scales, which have no place in a
checkpoint: ``unplaceable`` says why and ``state_dict()`` refuses them before anything is written.

[note: flat codes of a shard] 4-bit codes are flat bytes, two codes a byte. Under the same
condition (every shard but the last a multiple of 128 elements, so an even count) a rank's
bytes are its slice of the whole tensor's bytes, and they are kept as a Shard(0) DTensor of
the whole tensor's byte count, again checked to be torch.chunk's split: the gathered codes
are one process's codes. A layout where they are not has no per-rank fallback (the codes
could not be checkpointed, and a rank's bytes would not be the whole tensor's), so
``flat_codes_problem`` refuses it before any state is made (launch/buckets.py).
"""
from __future__ import annotations

import sys

import torch

from ..formats import q8_blockwise

SCALE_SUFFIX = q8_blockwise.SCALE_SUFFIX  # every quantized format's scales: <moment>_scale


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


def _row_split(p) -> list[int] | None:
    """Each rank's element count when ``p`` is sharded on dim 0 of a 1-D mesh, else None."""
    placements = p.placements
    if p.device_mesh.ndim != 1 or len(placements) != 1 or not isinstance(placements[0], dtensor_module().Shard) \
            or placements[0].dim != 0 or p.dim() == 0 or p.shape[0] == 0:
        return None
    rest = p.numel() // p.shape[0]
    return [n * rest for n in _chunks(p.shape[0], p.device_mesh.size())]


def flat_split(p, block: int, length) -> list[int] | None:
    """Each rank's length of a flat per-rank state of ``length(local numel)`` entries (scales,
    flat codes) when ``p`` is sharded as the notes say with blocks of ``block`` elements, else None."""
    elements = _row_split(p)
    if elements is None or any(n % block for n in elements[:-1]):
        return None
    counts = [length(n) for n in elements]
    return counts if counts == _chunks(sum(counts), len(counts)) else None


def shard_blocks(p, block: int = q8_blockwise.BLOCK) -> list[int] | None:
    """Each rank's count of blocks of ``block`` elements when ``p`` is sharded as the note says, else None."""
    return flat_split(p, block, lambda n: -(-n // block))


def as_sharded(p: torch.Tensor, t: torch.Tensor, counts: list[int] | None = None) -> torch.Tensor:
    """``t`` (this rank's flat state, plain) as the Shard(0) DTensor of the notes where ``p``
    allows: ``counts`` every rank's length (default: 8-bit scales, ``shard_blocks(p)``)."""
    if not is_dtensor(p):
        return t
    counts = shard_blocks(p) if counts is None else counts
    if counts is None:
        return t
    dt = dtensor_module()
    return dt.DTensor.from_local(t, p.device_mesh, [dt.Shard(0)], run_check=False, shape=(sum(counts),),
                                 stride=(1,))


def placed(p: torch.Tensor, fmt, key: str, t: torch.Tensor) -> torch.Tensor:
    """A fresh state tensor ``t`` of format ``fmt`` under state ``key``, as a DTensor where
    ``p`` is one: scales as the note says (8-bit: plain where they cannot be), flat codes
    (4-bit) by their bytes; param-shaped codes are a DTensor already."""
    if not is_dtensor(p) or is_dtensor(t):
        return t
    scales = key.endswith(SCALE_SUFFIX)
    length = fmt.n_blocks if scales else fmt.codec.n_bytes
    return as_sharded(p, t, flat_split(p, fmt.block, length))


def flat_codes_fit(p, fmt) -> bool:
    """Whether sharded ``p``'s flat codes and scales of format ``fmt`` are Shard(0) DTensors
    (the second note): blocks and bytes both split as torch.chunk splits them."""
    return flat_split(p, fmt.block, fmt.n_blocks) is not None and flat_split(p, fmt.block, fmt.codec.n_bytes) \
        is not None


def flat_codes_problem(p, fmt) -> str | None:
    """Why DTensor ``p`` cannot keep ``fmt``'s states (flat codes need the placement the
    second note says), or None; param-shaped codes (8-bit) always can."""
    if not is_dtensor(p) or not fmt.quantized or tuple(fmt.codes_shape(p, p)) == tuple(p.shape) \
            or flat_codes_fit(p, fmt):
        return None
    elements = _row_split(p)
    where = (f"its shards hold {elements} elements" if elements is not None
             else f"it is placed {tuple(p.placements)} on a {p.device_mesh.ndim}-d mesh")
    return (f"is a DTensor of shape {tuple(p.shape)} whose {fmt.name} states (state_dtype={fmt.option!r}) need "
            f"every rank's shard on dim 0 of a 1-d mesh (FSDP2's layout) to hold a multiple of {fmt.block} "
            f"elements, the last shard excepted, split as torch.chunk splits its blocks and bytes; {where}. "
            f"Shard it so (a world size that divides its dim 0 into multiples of {fmt.block} elements), or keep "
            "this parameter's states in another format: a param group with state_dtype=\"8bit\" or torch.float32, "
            "or min_quantized_numel above its size")


def unplaceable(p: torch.Tensor, state: dict) -> str | None:
    """Why ``state``'s scales cannot go into a checkpoint, or None."""
    if not is_dtensor(p):
        return None
    for key, scale in state.items():
        if key.endswith(SCALE_SUFFIX) and not is_dtensor(scale):
            return (f"its 8-bit {key!r} are per-rank scales of a shard that does not start at a multiple of "
                    f"{q8_blockwise.BLOCK} elements (placements {p.placements}, shape {tuple(p.shape)}), which a "
                    "checkpoint cannot place: shard on dim 0 so that every shard holds a multiple of 256 elements, "
                    "or keep this parameter's states in fp32 (a param group with state_dtype=torch.float32, or "
                    "min_quantized_numel above its size)")
    return None
