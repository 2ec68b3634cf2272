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
from adamw_tau.testing.hard_data import SUBNORMAL_SCALARS, ties
from adamw_tau.testing.parity import PATHS, SCALAR_MODES, clone_bucket, parity_bits, step_both

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


def _as_weight_scalars():
    """Raw scalars under which a step writes w = exp_avg exactly (for finite exp_avg): step_size
    -1, beta1 1 (m kept), 1 - beta1 0, beta2 0 and 1 - beta2 1 (v = g * g = 1), no decay, eps 0.
    Not a real step: a probe that feeds the final rounding any fp32 weight."""
    from adamw_tau.core.contract import StepScalars
    return StepScalars(step_size=-1.0, bc2_sqrt=1.0, decay=1.0, beta1=1.0, one_minus_beta1=0.0, beta2=0.0,
                       one_minus_beta2=1.0, eps=0.0, step=3)


def _fp16_sr_weights(n=4096, seed=0):
    """fp32 weights where fp16 stochastic rounding has its cases: below 2^-24 (to 0 or 2^-24),
    each binade from 2^-24 to 2^-14 (wider masks), normal values, past 65504 (may go to inf)."""
    gen = torch.Generator().manual_seed(seed)
    r = torch.rand(n, generator=gen, dtype=torch.float64)
    binade = torch.randint(-25, 17, (n,), generator=gen).to(torch.float64)
    w = (1 + r) * torch.pow(2.0, binade)  # 2^-25 .. 2^17
    sign = torch.where(torch.rand(n, generator=gen) < 0.5, -1.0, 1.0)
    return (w * sign).to(torch.float32)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("backend,scalars", RUNS)
def test_stochastic_rounding_of_chosen_weights(backend, dtype, scalars):
    """The final rounding on weights chosen for its cases (below 2^-24, the binades where fp16
    keeps fewer bits, overflow): the reference's bits, and below 2^-24 only 0 or 2^-24."""
    require(backend)
    w = _fp16_sr_weights()
    if dtype == torch.bfloat16:
        w = w * 2.0 ** 100  # bf16's range: up to 2^117; fp32's largest, which may round to inf
        w[:64] = torch.finfo(torch.float32).max * torch.sign(w[:64])
    n = w.numel()
    ours = dict(params=[torch.zeros(n, dtype=dtype)], exp_avgs=[w.clone()], exp_avg_sqs=[torch.zeros(n)],
                max_exp_avg_sqs=[], masters=[])
    ref = clone_bucket(ours)
    grads = [torch.ones(n, dtype=dtype)]
    assert step_both(backend, ours, ref, grads, _as_weight_scalars(), scalars=scalars, stochastic_rounding=True,
                     seed=2 ** 35 + 11) == 0
    p = ours["params"][0].float()
    if dtype == torch.float16:
        tiny = w.abs() < 2.0 ** -24
        assert tiny.sum() > 50 and set(p[tiny].abs().unique().tolist()) == {0.0, 2.0 ** -24}
    nearest = w.to(dtype).float()
    assert (p != nearest).sum() > n // 10 and (p == nearest).sum() > n // 10  # stochastic, not to nearest
    assert torch.isinf(p).any()  # past the largest finite value


def _subnormal_runs():
    """Every (backend, scalar mode, subnormal scalars); on Triton (3.5 CPU s each in the
    interpreter, measured) the fast tier takes each subnormal once, the modes in turn."""
    out = []
    for backend, scalars in (r for r in RUNS if r[0] != "reference"):
        for i, kw in enumerate(SUBNORMAL_SCALARS):
            slow = backend == "triton" and SCALAR_MODES[i % len(SCALAR_MODES)] != scalars
            out.append(pytest.param(backend, scalars, kw, marks=pytest.mark.slow if slow else (),
                                    id=f"{backend}-{scalars}-" + ",".join(f"{k}={v}" for k, v in kw.items())))
    return out


@pytest.mark.parametrize("backend,scalars,scalars_kw", _subnormal_runs())
def test_subnormal_step_scalars(backend, scalars, scalars_kw):
    """An lr or eps that is an fp32 subnormal reaches every kernel as that fp32 value, by value
    and as a tensor (the Triton interpreter typed such a Python float as fp64 and failed):
    the reference's bits on bf16 params (SR, master remainder) and 8-bit states, lambda decay."""
    require(backend)
    kw = {"lr": 1e-3, "eps": 1e-8, **scalars_kw}
    for path in ("bf16_sr", "bf16_remainder", "fp32_8bit"):
        assert parity_bits(backend, PATHS[path], [4096 + 5, 7], steps=2, decay="lambda", scalars=scalars,
                           **kw) == 0, path
