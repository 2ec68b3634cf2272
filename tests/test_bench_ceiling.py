"""The bench's CPU ceiling (adamw_tau/bench/ceiling.py, [note: the CPU ceiling]): each path's bytes
by how the step moves them, counted from the format registry and read off a stepped optimizer's
real tensors, the same; and the pass that times them moves those bytes."""
import math

import numpy as np
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


def _totals(streams):
    return streams.rw, streams.ro, streams.wo


def test_streams_by_path():
    """Per parameter of a large tensor (the issue's counts): fp32 reads and writes p, m, v and
    reads g; an fp32 master is read and written and the bf16 param only written; 8-bit moments
    are a code and a 256th of a scale each; small tensors keep fp32 states on a quantized path."""
    n = 4096 * 256
    assert _totals(ceiling.tensor_streams(PATHS["fp32"], n)) == (12 * n, 4 * n, 0)
    assert _totals(ceiling.tensor_streams(PATHS["bf16_master"], n)) == (12 * n, 2 * n, 2 * n)
    assert _totals(ceiling.tensor_streams(PATHS["bf16_remainder"], n)) == (12 * n, 2 * n, 0)
    assert _totals(ceiling.tensor_streams(PATHS["fp32_8bit"], n)) == (4 * n + 2 * (n + n // 64), 4 * n, 0)
    assert _totals(ceiling.tensor_streams(PATHS["fp32_4bit"], n)) == (4 * n + 2 * (n // 2 + n // 32), 4 * n, 0)
    assert [r for r, _, _ in ceiling.tensor_streams(PATHS["bf16_master_8bit"], n).buffers] == sorted(
        ["param", "grad", "exp_avg_q8", "exp_avg_scale", "exp_avg_sq_q8", "exp_avg_sq_scale", "master_param"])
    small = registry.MIN_QUANTIZED_NUMEL - 1
    assert ceiling.tensor_streams(PATHS["fp32_8bit"], small) == ceiling.tensor_streams(PATHS["fp32"], small)
    for name in ("fp32", "bf16_master", "bf16_states", "bf16_remainder", "fp32_8bit", "bf16_master_8bit"):
        assert ceiling.tensor_streams(PATHS[name], n).moved == pytest.approx(n * workloads.bytes_per_element(PATHS[name]))


def test_the_ceiling_pass_moves_each_buffer_its_way():
    """stream_pass (csrc/stream_cpu.cpp) over buffers of odd sizes: every read-write byte read
    and written back (xor with the key: 0 leaves it, 0xFF flips every byte), every write-only
    byte written, read-only bytes read (their xor comes back) and left alone."""
    from adamw_tau.launch import extension
    extension.load(cuda=False)
    gen = torch.Generator().manual_seed(0)
    rw = [torch.randint(0, 256, (n,), dtype=torch.uint8, generator=gen) for n in (100_003, 7, 4096 * 9 + 1)]
    ro = [torch.randint(0, 256, (n,), dtype=torch.uint8, generator=gen) for n in (50_001,)]
    wo = [torch.zeros(n, dtype=torch.uint8) for n in (33_333, 64)]
    before = [t.clone() for t in rw + ro]
    op = torch.ops.adamw_tau.stream_pass
    expected = int(np.bitwise_xor.reduce(ro[0].numpy()))
    assert op(rw, ro, wo, 123_457, 0) == expected
    assert all(torch.equal(a, b) for a, b in zip(rw + ro, before))
    assert all(bool((t == 0).all()) for t in wo)
    op(rw, ro, wo, 123_457, 0xFF)
    assert all(torch.equal(a, b ^ 0xFF) for a, b in zip(rw, before)) and torch.equal(ro[0], before[3])
    assert all(bool((t == 0xFF).all()) for t in wo)
    with pytest.raises(RuntimeError, match="uint8"):
        op([torch.zeros(4)], [], [], 1, 0)


def test_ceiling_times_one_pass_over_a_buffer_per_role(monkeypatch):
    """ceiling_ms hands stream_pass a buffer per role, of its bytes, in its mode's list."""
    calls = []

    def fake_time_ms(fn, device, reps, warmup, budget_s=None, best=False):
        assert best  # a ceiling is the fastest pass
        fn()
        return 2.5
    monkeypatch.setattr(ceiling, "time_ms", fake_time_ms)
    from adamw_tau.launch import extension
    extension.load(cuda=False)
    real = torch.ops.adamw_tau.stream_pass

    class Op:
        def __call__(self, rw, ro, wo, numel, key):
            calls.append(([t.numel() for t in rw], [t.numel() for t in ro], [t.numel() for t in wo], numel, key))
            return real(rw, ro, wo, numel, key)
    monkeypatch.setattr(torch.ops.adamw_tau, "stream_pass", Op(), raising=False)
    s = ceiling.tensor_streams(PATHS["bf16_master"], 8192)
    assert ceiling.ceiling_ms(s, 8192, 1, 0) == 2.5
    rw = [b for _, m, b in s.buffers if m == "rw"]
    assert calls == [(rw, [2 * 8192], [2 * 8192], 8192, 0)]
