"""DDP, ZeroRedundancyOptimizer, FSDP2 and distributed checkpoints: 2 processes on gloo (CPU),
bitwise equal to one process training the same model on the same data."""

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import distributed_workers as w
from required import require

from adamw_tau.testing.bits import differing

pytestmark = [
    pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs torch.distributed gloo"),
    pytest.mark.slow,  # full tier: 2 processes each, 250 CPU s for the module measured
]


@pytest.fixture(autouse=True)
def _cpu_op():
    require("cpu")  # the workers step with the C++ op: a missing build fails in CI


def _launch(engine, variant, tmp_path):
    name = f"{engine}:{variant}"
    # the processes meet in a file of this test's own folder, not on a TCP port: two test
    # processes (pytest-xdist) could draw the same free port between its check and its use
    mp.spawn(w.run, args=(name, str(tmp_path / "rendezvous"), str(tmp_path)), nprocs=w.WORLD, join=True)
    return torch.load(tmp_path / f"{name}.pt", weights_only=False)


def _same_bits(got, want):
    """Params (and a remainder run's remainders) word for word."""
    assert len(got) == len(want)
    for a, b in zip(got, want):
        assert a.dtype == b.dtype and differing(a, b) == 0


@pytest.fixture(scope="module", params=["fp32", "remainder", "8bit"])
def variant(request):
    """fp32 params; bf16 params with master_weights='remainder' (the remainders compared too);
    8-bit states (codes and scales compared too)."""
    return request.param, w.single_process(request.param)


@pytest.fixture(scope="module")
def four_bit():
    return w.single_process("4bit")


def test_ddp(tmp_path, variant):
    name, single = variant
    _same_bits(_launch("ddp", name, tmp_path), single)


def test_zero_redundancy_optimizer(tmp_path, variant):
    name, single = variant
    n = len(list(w.model().parameters()))
    _same_bits(_launch("zero", name, tmp_path), single[:n])


def test_fsdp2_steps_local_shards(tmp_path, variant):
    name, single = variant
    got = _launch("fsdp2", name, tmp_path)
    assert got["dtensor_states"], "optimizer states of DTensor parameters should be DTensors (sharded)"
    _same_bits(got["params"], single)


def test_fsdp2_distributed_checkpoint_resume(tmp_path, variant):
    name, single = variant
    got = _launch("dcp", name, tmp_path)
    assert got["steps"] == {float(w.STEPS)}
    _same_bits(got["params"], single)


def test_fsdp2_4bit_steps_local_shards(tmp_path, four_bit):
    """4-bit states of a weight sharded at whole blocks of 128: its codes and scales Shard(0)
    DTensors, gathered they are one process's (codes, scales and params, bit for bit)."""
    got = _launch("fsdp2", "4bit", tmp_path)
    assert got["dtensor_states"], "4-bit codes and scales of DTensor parameters should be DTensors"
    assert len(got["params"]) > len(list(w.model().parameters())) + 2  # codes and scales compared too
    _same_bits(got["params"], four_bit)


@pytest.mark.slow
def test_fsdp2_4bit_step_in_backward(tmp_path, four_bit):
    """4-bit states stepped inside backward after FSDP2's reduce-scatter: the one process's bits."""
    _same_bits(_launch("fsdp2_in_backward", "4bit", tmp_path), four_bit)


def test_fsdp2_4bit_distributed_checkpoint_resume(tmp_path, four_bit):
    got = _launch("dcp", "4bit", tmp_path)
    assert got["steps"] == {float(w.STEPS)}
    _same_bits(got["params"], four_bit)


@pytest.mark.parametrize("name", ["8bit", "4bit"])
def test_fsdp2_torch_adamw_checkpoint_into_quantized_states(tmp_path, name):
    """A torch AdamW FSDP2 checkpoint (DCP, flattened) into AdamWTau's sharded 8-bit or 4-bit
    states: encoded shard by shard to load_state_dict's codes and scales in one process, and
    the run goes on with its bits."""
    _same_bits(_launch("dcp_from_torch", name, tmp_path), w.from_torch_single_process(name))


def test_fsdp2_4bit_shards_not_whole_blocks_are_refused(tmp_path):
    """Shards of 264 elements: refused before any state is made, with what, which param and what to do."""
    got = _launch("fsdp2_uneven", "4bit", tmp_path)
    assert got["states"] == 0 and got["unchanged"]
    message = got["message"]
    assert message is not None and "params[0]" in message and "multiple of 128" in message
    assert "[264, 264]" in message and "state_dtype=\"8bit\"" in message


@pytest.mark.slow
def test_ddp_step_in_backward(tmp_path, variant):
    """Each DDP bucket stepped inside backward after its all-reduce: the single process's ordinary bits."""
    name, single = variant
    _same_bits(_launch("ddp_in_backward", name, tmp_path), single)


@pytest.mark.slow
def test_fsdp2_step_in_backward(tmp_path, variant):
    """FSDP2 runs the hooks after the reduce-scatter: the single process's ordinary bits."""
    name, single = variant
    _same_bits(_launch("fsdp2_in_backward", name, tmp_path), single)


@pytest.mark.slow
def test_ddp_step_in_backward_unregistered_is_refused(tmp_path):
    got = _launch("ddp_unregistered", "fp32", tmp_path)
    assert got["unchanged"] and "opt.register_ddp(ddp_model)" in got["message"]


@pytest.fixture(scope="module")
def clip_single():
    return {v: w.clip_single_process(v) for v in ("fp32", "remainder", "8bit")}


def test_ddp_clipping(tmp_path, clip_single):
    """DDP with max_grad_norm: the local norm of the all-reduced gradients, one process's bits."""
    got, want = _launch("ddp_clip", "fp32", tmp_path), clip_single["fp32"]
    _same_bits(got["params"], want["params"])
    _same_bits(got["norms"], want["norms"])
    assert min(float(n) for n in want["norms"][:-1]) > w.CLIP  # clipped at every step


@pytest.mark.parametrize("name", ["fp32", "remainder", "8bit"])
def test_fsdp2_clipping(tmp_path, clip_single, name):
    """FSDP2 with max_grad_norm, shards at whole norm chunks: every rank computes the same norm,
    the one process's, and the run keeps its bits."""
    got, want = _launch("fsdp2_clip", name, tmp_path), clip_single[name]
    assert got["ranks_agree"]
    _same_bits(got["norms"], want["norms"])
    _same_bits(got["params"], want["params"])
