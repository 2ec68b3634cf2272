"""The bench's CPU ceiling (adamw_tau/bench/ceiling.py, [note: the CPU ceiling]): each path's bytes
by how the step moves them, counted from the format registry and read off a stepped optimizer's
real tensors, the same; and the passes that time them move those bytes."""
import math

import pytest
import torch

from adamw_tau.bench import ceiling, workloads
from adamw_tau.formats import registry
from adamw_tau.testing.parity import PATHS

# a quantized-size tensor, one under the quantized minimum (fp32 states), a partial last block, a
# 2-d one: every rule of the count
SHAPES = [(3 * 4096,), (10,), (300, 17), (4097,)]
# every path the optimizer takes (fp16 states are torch's choice for fp16 params, not an option)
OPTIMIZER_PATHS = [name for name, p in PATHS.items() if p.state_dtype != torch.float16]


@pytest.mark.parametrize("amsgrad", [False, True])
@pytest.mark.parametrize("path", OPTIMIZER_PATHS)
def test_the_registry_count_is_the_stepped_optimizers(path, amsgrad):
    """path_streams (from the shapes and the registry) equals step_streams (from opt.state after a
    step): the bench's bytes are the ones the step's tensors hold."""
    p = PATHS[path]
    params = workloads.make_params(SHAPES, p, "cpu")
    opt = workloads.make_optimizer("ours:cpu", params, p, amsgrad=amsgrad)
    opt.step()
    assert ceiling.step_streams(opt) == ceiling.path_streams(p, SHAPES, amsgrad)


def test_torch_fused_holds_the_same_bytes():
    """torch.optim.AdamW's fp32 state is counted the same way (its step counts are no stream)."""
    p = PATHS["fp32"]
    params = workloads.make_params(SHAPES, p, "cpu")
    opt = workloads.make_optimizer("torch:fused", params, p)
    opt.step()
    assert ceiling.step_streams(opt) == ceiling.path_streams(p, SHAPES)


def test_streams_by_path():
    """Per parameter of a large tensor (the issue's counts): fp32 reads and writes p, m, v and
    reads g; an fp32 master is read and written and the bf16 param only written; 8-bit moments
    are a code and a 256th of a scale each; small tensors keep fp32 states on a quantized path."""
    n = 4096 * 256
    assert ceiling.tensor_streams(PATHS["fp32"], n) == ceiling.Streams(rw=12 * n, ro=4 * n)
    assert ceiling.tensor_streams(PATHS["bf16_master"], n) == ceiling.Streams(rw=12 * n, ro=2 * n, wo=2 * n)
    assert ceiling.tensor_streams(PATHS["bf16_remainder"], n) == ceiling.Streams(rw=12 * n, ro=2 * n)
    assert ceiling.tensor_streams(PATHS["fp32_8bit"], n) == ceiling.Streams(rw=4 * n + 2 * (n + n // 64), ro=4 * n)
    assert ceiling.tensor_streams(PATHS["fp32_4bit"], n) == ceiling.Streams(rw=4 * n + 2 * (n // 2 + n // 32),
                                                                            ro=4 * n)
    small = registry.MIN_QUANTIZED_NUMEL - 1
    assert ceiling.tensor_streams(PATHS["fp32_8bit"], small) == ceiling.tensor_streams(PATHS["fp32"], small)
    for name in ("fp32", "bf16_master", "bf16_states", "bf16_remainder", "fp32_8bit", "bf16_master_8bit"):
        assert ceiling.tensor_streams(PATHS[name], n).moved == pytest.approx(n * workloads.bytes_per_element(PATHS[name]))


class _Buffer:
    """A stand-in for a ceiling buffer: its size and the ops called on it."""

    def __init__(self, n):
        self.n, self.ops = n, []

    def __getattr__(self, name):
        return lambda *args: self.ops.append((name, args))


def test_the_ceiling_passes_move_their_bytes(monkeypatch):
    """Each nonzero stream is one timed pass of its kind over a buffer of its bytes: read-write
    x.mul_(1.0), read-only x.sum(), write-only x.fill_(1.0); the times add. (That torch does
    not skip a multiply by one is measured, not tested: ceiling.py's note.)"""
    buffers = []

    def fake_time_ms(fn, device, reps, warmup, budget_s=None):
        fn()
        return 1.0
    monkeypatch.setattr(ceiling, "time_ms", fake_time_ms)
    monkeypatch.setattr(ceiling.torch, "ones", lambda n: buffers.append(_Buffer(n)) or buffers[-1])
    assert ceiling.ceiling_ms(ceiling.Streams(rw=4000, ro=400, wo=40), 1, 0) == 3.0
    assert [(b.n * 4, b.ops) for b in buffers] == [(4000, [("mul_", (1.0,))]), (400, [("sum", ())]),
                                                   (40, [("fill_", (1.0,))])]
    buffers.clear()
    assert ceiling.ceiling_ms(ceiling.Streams(rw=4000, ro=400), 1, 0) == 2.0
    assert len(buffers) == 2
