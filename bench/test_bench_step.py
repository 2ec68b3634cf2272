"""pytest-benchmark suite over the same workloads as `adamw-tau bench` (not part of CI's tests).

    python -m pytest bench/ --benchmark-only [--benchmark-json out.json]
"""
import pytest
import torch

from adamw_tau.bench import workloads as bench
from adamw_tau.testing.parity import PATHS

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
WORKLOADS = bench.workloads(DEVICE, quick=True)
IMPLS = [f"ours:{b}" for b in bench.our_backends(DEVICE)] + ["torch:foreach", "torch:fused"]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("path", bench.BENCH_PATHS)
@pytest.mark.parametrize("workload", list(WORKLOADS))
def test_step(benchmark, workload, path, impl):
    p = PATHS[path]
    if impl.startswith("torch") and not bench.torch_supports(p):
        pytest.skip("torch.optim.AdamW has no such path")
    params = bench.make_params(WORKLOADS[workload], p, DEVICE)
    opt = bench.make_optimizer(impl, params, p)

    def step():
        opt.step()
        if DEVICE == "cuda":
            torch.cuda.synchronize()

    benchmark.extra_info["bytes"] = sum(t.numel() for t in params) * bench.bytes_per_element(p)
    benchmark(step)
