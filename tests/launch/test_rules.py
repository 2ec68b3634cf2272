"""docs/numerics.md's tie and NaN rules, case by case, on every backend CI runs.

Random hard data meets an exact tie in an op's result rarely; these cases make every element
one: the rule is checked against its own statement (torch's round-to-nearest-even casts,
NaN tests) and against the reference, with the scalars as a tensor and by value.
"""
import pytest
import torch
from required import require

from adamw_tau.core.contract import host_scalars
from adamw_tau.testing.bits import differing
from adamw_tau.testing.hard_data import ties
from adamw_tau.testing.parity import SCALAR_MODES, clone_bucket, step_both

BACKENDS = ["cpu", "triton", "reference"]
# (backend, how the scalars reach it): the reference reads a tensor only
RUNS = [(b, m) for b in BACKENDS for m in SCALAR_MODES if b != "reference" or m == "tensor"]
N = 4096 + 5  # an aligned launch and an odd tail


def _tie_values(dtype, n=N, seed=0):
    """fp32 values exactly halfway between two ``dtype`` values (bf16 or fp16), both signs."""
    gen = torch.Generator().manual_seed(seed)
    u = torch.randint(0, 2 ** 32, (n,), generator=gen, dtype=torch.int64)
    return ties(u, torch.full_like(u, 16 if dtype == torch.bfloat16 else 13))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("backend,scalars", RUNS)
def test_params_round_ties_to_even_from_the_master(backend, dtype, scalars):
    """Zero gradient and exp_avg, no decay: the new fp32 weight is the master itself, a tie;
    the param is its round-to-nearest-even image."""
    require(backend)
    master = _tie_values(dtype)
    p = master.to(dtype)
    ours = dict(params=[p.clone()], exp_avgs=[torch.zeros(N)], exp_avg_sqs=[torch.ones(N)], max_exp_avg_sqs=[],
                masters=[master.clone()])
    ref = clone_bucket(ours)
    grads = [torch.zeros(N, dtype=dtype)]
    hs = host_scalars(lr=1e-3, lr_peak=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, step=1, decay_mode="none")
    assert step_both(backend, ours, ref, grads, hs, scalars=scalars) == 0
    assert differing(ours["masters"][0], master) == 0
    assert differing(ours["params"][0], master.to(dtype)) == 0  # torch's cast rounds to nearest even
    away = (master.view(torch.int32) + (0x8000 if dtype == torch.bfloat16 else 0x1000)).view(torch.float32)
    assert differing(ours["params"][0], away.to(dtype)) > N // 4  # ties away from zero would differ


@pytest.mark.parametrize("backend,scalars", RUNS)
def test_bf16_states_round_ties_to_even(backend, scalars):
    """beta1 = 0 and beta2 = 0: exp_avg = g exactly, a bf16 tie, stored rounded to nearest even."""
    require(backend)
    g = _tie_values(torch.bfloat16, seed=1)
    ours = dict(params=[torch.ones(N)], exp_avgs=[torch.zeros(N, dtype=torch.bfloat16)],
                exp_avg_sqs=[torch.zeros(N, dtype=torch.bfloat16)], max_exp_avg_sqs=[], masters=[])
    ref = clone_bucket(ours)
    hs = host_scalars(lr=1e-3, lr_peak=1e-3, beta1=0.0, beta2=0.0, eps=1e-8, step=1, decay_mode="none")
    assert step_both(backend, ours, ref, [g], hs, scalars=scalars) == 0
    assert differing(ours["exp_avgs"][0], g.to(torch.bfloat16)) == 0


@pytest.mark.parametrize("backend,scalars", RUNS)
def test_amsgrad_max_propagates_nan_from_either_side(backend, scalars):
    """max(vmax, v) with a NaN in v (from the gradient) or in vmax (the stored max) is NaN, and
    the step writes NaN to the param; where neither is NaN the larger is kept."""
    require(backend)
    n = 64
    g = torch.ones(n)
    g[0:16] = float("nan")                     # v becomes NaN, vmax finite
    vmax = torch.full((n,), 4.0)
    vmax[16:32] = float("nan")                 # vmax NaN, v finite
    vmax[32:48] = 0.0                          # v wins
    ours = dict(params=[torch.ones(n)], exp_avgs=[torch.zeros(n)], exp_avg_sqs=[torch.ones(n)],
                max_exp_avg_sqs=[vmax], masters=[])
    ref = clone_bucket(ours)
    hs = host_scalars(lr=1e-3, lr_peak=1e-3, beta1=0.9, beta2=0.5, eps=1e-8, step=1, decay_mode="none")
    assert step_both(backend, ours, ref, [g], hs, scalars=scalars, amsgrad=True) == 0
    out = ours["max_exp_avg_sqs"][0]
    assert torch.isnan(out[:32]).all() and torch.isnan(ours["params"][0][:32]).all()
    assert (out[32:48] == 1.0).all() and (out[48:] == 4.0).all()  # v = 0.5 * 1 + 0.5 * 1


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("backend,scalars", RUNS)
def test_stochastic_rounding_rounds_inf_and_nan_to_nearest(backend, dtype, scalars):
    require(backend)
    n = 24
    w = torch.tensor([float("inf"), -float("inf"), float("nan"), 1.0] * 6)
    ours = dict(params=[w.to(dtype)], exp_avgs=[torch.zeros(n)], exp_avg_sqs=[torch.ones(n)], max_exp_avg_sqs=[],
                masters=[])
    ref = clone_bucket(ours)
    hs = host_scalars(lr=1e-3, lr_peak=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, step=1, decay_mode="none")
    assert step_both(backend, ours, ref, [torch.zeros(n, dtype=dtype)], hs, scalars=scalars,
                     stochastic_rounding=True) == 0
    p = ours["params"][0].float()
    assert (p[0::4] == float("inf")).all() and (p[1::4] == -float("inf")).all() and torch.isnan(p[2::4]).all()
