"""The Triton kernel against the reference, 0 bits, under TRITON_INTERPRET=1 on CPU (CI) or on CUDA.

Both kernel variants run: scalars read from a tensor (the list-form op, device-counted
steps) and host scalars passed by value (HOST_SCALARS=True: every eager optimizer step).
"""
import os

import pytest
from required import require
from tiers import tiered

from adamw_tau.testing.cases import FAST_HARD_CASES, HARD_CASES, hard_case
from adamw_tau.testing.parity import PATHS, SCALAR_MODES, parity_bits

SIZES = [1, 3, 1023, 4097, 2048, 5]
INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
DEVICES = ["cpu"] if INTERPRET else [pytest.param("cuda", marks=pytest.mark.cuda)]


@pytest.fixture(autouse=True)
def _triton_runs(request):
    device = request.node.callspec.params.get("device", "cpu") if hasattr(request.node, "callspec") else "cpu"
    require("triton", "cuda" if device == "cuda" else ("cpu" if INTERPRET else "cuda"))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("path,case,scalars", tiered(HARD_CASES, FAST_HARD_CASES))
def test_triton_bitwise_equals_reference(device, path, case, scalars):
    assert parity_bits("triton", PATHS[path], SIZES, device=device, scalars=scalars, **hard_case(path, case)) == 0


# 1.0: every step skipped, nothing may change. The fast tier: a skip on fp32 and 8-bit states and
# one run of steps (the 8-bit paths take 17 CPU s each in the interpreter, measured; the hard
# cases above run every path's steps)
FOUND_INF_CASES = [(f, path) for f in (0.0, 1.0) for path in PATHS]
FAST_FOUND_INF = [(1.0, "fp32"), (0.0, "fp32")]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("found_inf,path", tiered(FOUND_INF_CASES, FAST_FOUND_INF))
def test_triton_found_inf_on_every_step(device, path, found_inf):
    assert parity_bits("triton", PATHS[path], SIZES, steps=3, device=device, amsgrad=True, maximize=True,
                       decay="lambda", grad_scale=65536.0, found_inf=found_inf) == 0


class _Spy:
    """Stands in for the jitted kernel: records each launch's grid and options, then launches."""

    def __init__(self, real):
        self.real, self.launches = real, []

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            self.launches.append((grid, kwargs))
            return self.real[grid](*args, **kwargs)
        return launch


@pytest.mark.parametrize("scalars", tiered([(m,) for m in SCALAR_MODES], []))  # 10-11 CPU s each
@pytest.mark.parametrize("device", DEVICES)
def test_triton_many_tensors_one_launch(device, scalars, monkeypatch):
    from adamw_tau.triton_kernels import adamw_fused
    spy = _Spy(adamw_fused.adamw_fused_kernel)
    monkeypatch.setattr(adamw_fused, "adamw_fused_kernel", spy)
    sizes = [(i * 37) % 301 + 1 for i in range(150)]
    assert parity_bits("triton", PATHS["bf16_master"], sizes, steps=2, device=device, amsgrad=True,
                       scalars=scalars) == 0
    # one launch per step for the tensors the wide path takes (fresh storages are 16-byte
    # aligned, so numel % 8 decides), one for the rest
    classes = {n % 8 == 0 for n in sizes}
    assert len(classes) == 2 and len(spy.launches) == 2 * len(classes)
    # the options the contract needs on every launch: no FMA contraction; the scalars variant asked for
    assert all(kw["enable_fp_fusion"] is False for _, kw in spy.launches), [kw for _, kw in spy.launches]
    assert all(kw["HOST_SCALARS"] is (scalars == "values") for _, kw in spy.launches)


@pytest.mark.cuda
@pytest.mark.slow
def test_triton_tensor_over_2_31_elements():
    from adamw_tau.testing.parity import check_past_2_31
    assert check_past_2_31("triton") == 0
