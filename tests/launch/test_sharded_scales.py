"""Which 8-bit scales of a sharded parameter become a Shard(0) DTensor (launch/sharded_scales.py):
only where every shard's blocks are the whole tensor's. The distributed runs themselves are in
tests/optim/test_distributed.py (FSDP2 and DCP with 8-bit states, bitwise against one process)."""
import math
from types import SimpleNamespace

import pytest
import torch

from adamw_tau.formats import registry
from adamw_tau.launch import sharded_scales

Shard = pytest.importorskip("torch.distributed.tensor", reason="torch without distributed").Shard


def _fake(shape, world, placement=None, ndim=1):
    mesh = SimpleNamespace(ndim=ndim, size=lambda: world)
    return SimpleNamespace(shape=torch.Size(shape), device_mesh=mesh, placements=[placement or Shard(0)],
                           numel=lambda: math.prod(shape), dim=lambda: len(shape))


@pytest.mark.parametrize("shape,world,counts", [
    ((64, 8), 2, [1, 1]),            # 256 elements a shard: the workers' FSDP2 model
    ((1536,), 2, [3, 3]),
    ((1024,), 4, [1, 1, 1, 1]),
    ((10, 256), 4, [3, 3, 3, 1]),    # a shorter last shard, split as torch.chunk splits the blocks
    ((100, 512), 3, None),           # 68, 68, 64 blocks: not torch.chunk's split of 200 (67, 67, 66)
    ((30, 10), 2, None),             # 150 elements a shard: blocks would straddle shards
    ((600,), 2, None),
    ((64, 8), 3, None),              # 22 rows of 8 = 176 elements
    ((520,), 2, None),               # 260 + 260: the first shard's last block is partial
])
def test_only_shards_of_whole_blocks_get_sharded_scales(shape, world, counts):
    assert sharded_scales.shard_blocks(_fake(shape, world)) == counts


@pytest.mark.parametrize("shape,world,fits", [
    ((64, 8), 2, True),              # 256 elements a shard: the workers' FSDP2 4-bit weight
    ((66, 8), 2, False),             # 264: the workers' refused one
    ((8, 128), 4, True),             # 256 a shard
    ((10, 128), 4, False),           # 384, 384, 384, 128: blocks split as chunk (3, 3, 3, 1), bytes not (160 each)
    ((1, 4097), 2, False),           # one row: the whole tensor on rank 0, nothing on rank 1
    ((4097,), 2, False),             # 2049 + 2048: the first shard is not whole blocks
    ((4096 + 1,), 1, True),          # one rank: the whole tensor, an odd last byte
    ((257 * 128 + 3,), 2, False),    # 16512 + 16387: a byte split (8256, 8194) that is not chunk's
    ((3, 128), 2, False),            # 256 + 128: whole blocks (2, 1), but bytes (128, 64) are not chunk's (96, 96)
    ((6, 128), 4, False),            # 2, 2, 2, 0 rows: 128 bytes a rank, chunk's 96
    ((12, 256), 3, True),            # 1024 a shard, 8 blocks, 512 bytes
])
def test_4bit_flat_codes_fit_only_shards_of_whole_blocks_split_as_chunk_splits(shape, world, fits):
    """4-bit codes and scales are Shard(0) DTensors only where both split as torch.chunk splits them."""
    assert sharded_scales.flat_codes_fit(_fake(shape, world), registry.Q4) is fits


def test_other_placements_keep_plain_scales():
    assert sharded_scales.shard_blocks(_fake((64, 8), 2, Shard(1))) is None
    assert sharded_scales.shard_blocks(_fake((64, 8), 2, ndim=2)) is None


def test_a_plain_parameter_keeps_plain_scales():
    scales = torch.zeros(2)
    assert sharded_scales.as_sharded(torch.zeros(512), scales) is scales
    assert sharded_scales.unplaceable(torch.zeros(512), {"exp_avg_scale": scales}) is None
