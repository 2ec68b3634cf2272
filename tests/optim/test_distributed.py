"""DDP, ZeroRedundancyOptimizer, FSDP2 and distributed checkpoints: 2 processes on gloo (CPU),
bitwise equal to one process training the same model on the same data."""
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import distributed_workers as w
from required import require

pytestmark = [
    pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs torch.distributed gloo"),
]


@pytest.fixture(autouse=True)
def _cpu_op():
    require("cpu")  # the workers step with the C++ op: a missing build fails in CI


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(engine, tmp_path):
    mp.spawn(w.run, args=(engine, _free_port(), str(tmp_path)), nprocs=w.WORLD, join=True)
    return torch.load(tmp_path / f"{engine}.pt", weights_only=False)


def _same_bits(got, want):
    assert len(got) == len(want)
    for a, b in zip(got, want):
        assert torch.equal(a.view(torch.int32), b.view(torch.int32))


@pytest.fixture(scope="module")
def single():
    return w.single_process()


def test_ddp(tmp_path, single):
    _same_bits(_launch("ddp", tmp_path), single)


def test_zero_redundancy_optimizer(tmp_path, single):
    _same_bits(_launch("zero", tmp_path), single)


def test_fsdp2_steps_local_shards(tmp_path, single):
    got = _launch("fsdp2", tmp_path)
    assert got["dtensor_states"], "optimizer states of DTensor parameters should be DTensors (sharded)"
    _same_bits(got["params"], single)


def test_fsdp2_distributed_checkpoint_resume(tmp_path, single):
    got = _launch("dcp", tmp_path)
    assert got["steps"] == {float(w.STEPS)}
    _same_bits(got["params"], single)
