"""The optimizer's eager steps on hard data, and what the stochastic-rounding bits may not
depend on.

Eager steps launch from the optimizer's own tables with the host scalars by value (Triton's
HOST_SCALARS=True variant): the path every training step takes. Here it sees NaN and +-inf
gradients and weights, values to 3.4e38, subnormals and zeros of both signs, on every
backend CI runs, against the reference word for word (params and every state entry).
"""
import pytest
import torch
from required import require

from adamw_tau import AdamWTau
from adamw_tau.testing.bits import differing_optimizers
from adamw_tau.testing.hard_data import hard_values

SHAPES = [(33, 65), (4097,), (8,), (1,), (2, 4096)]
OPTIONS = {
    "fp32_amsgrad_maximize": dict(dtype=torch.float32, amsgrad=True, maximize=True, weight_decay=0.1),
    "fp32_betas_0_eps_0": dict(dtype=torch.float32, betas=(0.0, 0.0), eps=0.0, tau_iters=30.0),
    "bf16_master": dict(dtype=torch.bfloat16, master_weights=True, tau_iters=30.0, amsgrad=True),
    "bf16_remainder_maximize": dict(dtype=torch.bfloat16, master_weights="remainder", maximize=True, amsgrad=True),
    "bf16_remainder_bf16_states": dict(dtype=torch.bfloat16, master_weights="remainder", state_dtype=torch.bfloat16),
    "bf16_states_sr": dict(dtype=torch.bfloat16, stochastic_rounding=True, state_dtype=torch.bfloat16, seed=2 ** 40 + 3),
    "fp16_sr": dict(dtype=torch.float16, stochastic_rounding=True, betas=(0.0, 0.95), seed=7),
    "fp16_master_amsgrad": dict(dtype=torch.float16, master_weights=True, amsgrad=True, eps=0.0),
}


def _span(dtype):
    return 3.0 if dtype == torch.float16 else 12.0


def _hard_run(backend: str, options: dict, steps: int = 4):
    opts = dict(options)
    dtype = opts.pop("dtype")
    gen = torch.Generator().manual_seed(0)
    params = [torch.nn.Parameter(hard_values(torch.Size(s).numel(), gen, span=4.0, dtype=dtype).to(dtype).reshape(s))
              for s in SHAPES]
    opt = AdamWTau(params, lr=1e-2, backend=backend, **opts)
    for t in range(steps):
        for p in params:
            g = hard_values(p.numel(), gen, span=_span(dtype), dtype=dtype)
            if t == steps - 1:  # the last step: zeros of both signs in half the elements
                g = torch.where(torch.rand(g.shape, generator=gen) < 0.5, g * 0.0, g)
            p.grad = g.to(dtype).reshape(p.shape)
        opt.step()
    return params, opt


@pytest.mark.parametrize("options", list(OPTIONS))
@pytest.mark.parametrize("backend", ["cpu", "triton"])
def test_eager_steps_on_hard_data_match_the_reference(backend, options, monkeypatch):
    require(backend)
    launches = []
    if backend == "triton":  # the eager path passes the scalars by value: prove that variant ran
        from adamw_tau.triton_kernels import adamw_fused
        real = adamw_fused.adamw_fused_kernel

        class Spy:
            def __getitem__(self, grid):
                def launch(*args, **kwargs):
                    launches.append(kwargs["HOST_SCALARS"])
                    return real[grid](*args, **kwargs)
                return launch
        monkeypatch.setattr(adamw_fused, "adamw_fused_kernel", Spy())
    ours, opt = _hard_run(backend, OPTIONS[options])
    assert opt.backend_for("cpu") == backend
    ref, ref_opt = _hard_run("reference", OPTIONS[options])
    assert differing_optimizers(ours, opt, ref, ref_opt) == {}
    if backend == "triton":
        assert launches and all(launches), launches
    # NaN reached the params, and many are still numbers (else the test shows little)
    flat = torch.cat([p.detach().float().reshape(-1) for p in ours])
    assert torch.isnan(flat).any() and torch.isfinite(flat).float().mean() > 0.1


# --- stochastic rounding: the bits depend on (seed, step, parameter, index) only ---------------
def _sr_run(backend, groups_of, no_grad=None, steps=3):
    """bf16 params stochastically rounded; ``groups_of``: how the 4 params are split into
    groups (same hyperparameters in each); ``no_grad``: (step, param) left without a gradient."""
    gen = torch.Generator().manual_seed(1)
    shapes = [(5, 7), (300,), (4096,), (3,)]
    params = [torch.nn.Parameter(torch.randn(s, generator=gen).bfloat16()) for s in shapes]
    groups = [{"params": [params[i] for i in g]} for g in groups_of]
    opt = AdamWTau(groups, lr=1e-2, tau_iters=40.0, stochastic_rounding=True, seed=2 ** 33 + 5, backend=backend)
    for t in range(steps):
        for i, p in enumerate(params):
            p.grad = torch.randn(p.shape, generator=gen).bfloat16()
            if no_grad == (t, i):
                p.grad = None
        opt.step()
    return params, opt


@pytest.mark.parametrize("backend", ["reference", "cpu", "triton"])
def test_sr_bits_do_not_depend_on_grouping(backend):
    require(backend)
    one = _sr_run(backend, [[0, 1, 2, 3]])
    split = _sr_run(backend, [[0], [1, 2], [3]])
    assert differing_optimizers(*one, *split) == {}


@pytest.mark.parametrize("backend", ["reference", "cpu", "triton"])
def test_sr_bits_do_not_depend_on_params_without_grads(backend):
    """Parameter 1 has no gradient at step 1: the others' bits are those of a run where it had
    one (their ids are their places in the optimizer's order, whoever has a gradient)."""
    require(backend)
    full, full_opt = _sr_run(backend, [[0, 1, 2, 3]])
    gap, gap_opt = _sr_run(backend, [[0, 1], [2, 3]], no_grad=(1, 1))
    others = [0, 2, 3]
    assert differing_optimizers([full[i] for i in others], full_opt, [gap[i] for i in others], gap_opt) == {}
    assert differing_optimizers(full[1:2], full_opt, gap[1:2], gap_opt) != {}  # it did miss a step


@pytest.mark.parametrize("backend", ["cpu", "triton"])
def test_sr_bits_equal_the_references_under_any_grouping(backend):
    require(backend)
    ours = _sr_run(backend, [[3], [0, 2], [1]], no_grad=(0, 2))
    ref = _sr_run("reference", [[3], [0, 2], [1]], no_grad=(0, 2))
    assert differing_optimizers(*ours, *ref) == {}


@pytest.mark.parametrize("backend", ["reference", "cpu", "triton"])
def test_a_seed_outside_int64_is_refused_on_every_backend(backend):
    """The hash takes its seed mod 2^64, but the C++ op's seed is an int64: the optimizer takes
    seeds in [0, 2^63) on every backend and refuses the rest before any write, so no backend
    can give other bits for the same seed."""
    require(backend)
    for seed in (-3, 2 ** 63, 2 ** 64 - 3):
        with pytest.raises(ValueError, match="seed must be in"):
            AdamWTau([torch.nn.Parameter(torch.zeros(3))], stochastic_rounding=True, seed=seed, backend=backend)
