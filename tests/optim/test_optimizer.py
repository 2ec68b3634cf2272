"""AdamWTau's semantics: torch.optim.AdamW's λ form, the τ form, decoupling, bad input."""
import math

import pytest
import torch

from adamw_tau import AdamWTau
from adamw_tau.core import timescale
from adamw_tau.launch.backends import BackendUnavailable
from adamw_tau.testing.bits import differing, differing_lists, differing_optimizers


def _params(seed=0, shapes=((7, 5), (13,), (3, 4, 2))):
    g = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(s, generator=g)) for s in shapes]


def _run(opt_cls, params, steps, seed=1, **kw):
    opt = opt_cls(params, **kw)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        for p in params:
            p.grad = torch.randn(p.shape, generator=g).to(p.dtype)
        opt.step()
    return opt


def _snapshot(params, opt):
    snap = [p.detach().clone() for p in params]
    for st in opt.state.values():
        snap += [v.clone() for v in st.values() if isinstance(v, torch.Tensor)]
    return snap


def test_lambda_form_tracks_torch_adamw_within_rounding():
    a, b = _params(), _params()
    _run(AdamWTau, a, 100, lr=3e-3, weight_decay=0.2, backend="reference")
    _run(torch.optim.AdamW, b, 100, lr=3e-3, weight_decay=0.2)
    for x, y, x0 in zip(a, b, _params()):
        assert torch.allclose(x, y, rtol=1e-5, atol=1e-6), (x - y).abs().max()
        assert differing(x, x0) == x0.numel()  # every element moved: the comparison is not of two starts


def test_amsgrad_maximize_track_torch_adamw():
    a, b = _params(), _params()
    _run(AdamWTau, a, 60, lr=1e-2, weight_decay=0.05, amsgrad=True, maximize=True, backend="reference")
    _run(torch.optim.AdamW, b, 60, lr=1e-2, weight_decay=0.05, amsgrad=True, maximize=True)
    for x, y in zip(a, b):
        assert torch.allclose(x, y, rtol=1e-5, atol=1e-6)


def test_tau_form_equals_lambda_form_at_constant_lr():
    """The same per-step decay factor in fp32, so the same bits (not merely close)."""
    lr, lam = 2e-3, 0.1
    a, b = _params(), _params()
    opt_a = _run(AdamWTau, a, 50, lr=lr, tau_iters=timescale.tau_iter_from_lambda(lr, lam), backend="reference")
    opt_b = _run(AdamWTau, b, 50, lr=lr, weight_decay=lam, backend="reference")
    assert differing_optimizers(a, opt_a, b, opt_b) == {}
    assert differing_lists(a, _params()) > 0


def test_tau_epochs_is_tau_iters_times_iters_per_epoch():
    a, b = _params(), _params()
    opt_a = _run(AdamWTau, a, 10, lr=1e-3, tau_epochs=2.0, iters_per_epoch=150, backend="reference")
    opt_b = _run(AdamWTau, b, 10, lr=1e-3, tau_iters=300.0, backend="reference")
    assert differing_optimizers(a, opt_a, b, opt_b) == {}


def test_doubling_lr_leaves_tau_decay_unchanged_but_doubles_lambda_decay():
    p = _params()
    tau = AdamWTau(p, lr=1e-3, tau_iters=500.0)
    lam = AdamWTau(p, lr=1e-3, weight_decay=2.0)

    def per_step_decay(opt):
        from adamw_tau.core.contract import decay_factor
        g = opt.param_groups[0]
        return decay_factor(g["decay"], g["lr"], g["lr_peak"], g["tau_iters"], g["weight_decay"])

    d_tau, d_lam = per_step_decay(tau), per_step_decay(lam)
    for opt in (tau, lam):
        opt2 = type(opt)(p, lr=2e-3, **({"tau_iters": 500.0} if opt is tau else {"weight_decay": 2.0}))
        if opt is tau:
            assert per_step_decay(opt2) == d_tau == 1 - 1 / 500
        else:
            assert math.isclose(1 - per_step_decay(opt2), 2 * (1 - d_lam))
    # a schedule halving lr halves the tau-form decay: the schedule shapes it
    tau.param_groups[0]["lr"] = 5e-4
    assert math.isclose(1 - per_step_decay(tau), 0.5 / 500)


def test_lr_scheduler_drives_tau_decay_through_lr_peak():
    p = [torch.nn.Parameter(torch.ones(4))]
    opt = AdamWTau(p, lr=1e-2, tau_iters=10.0, backend="reference")
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda e: 0.5)
    assert opt.param_groups[0]["lr_peak"] == 1e-2 and opt.param_groups[0]["lr"] == 5e-3
    p[0].grad = torch.zeros(4)
    opt.step()
    sched.step()
    # zero gradient: w <- w * (1 - 0.5 / 10), the factor rounded once to fp32
    assert differing(p[0].detach(), torch.full((4,), 0.95)) == 0


def test_timescales_report():
    p = _params()
    opt = AdamWTau([{"params": p[:1]}, {"params": p[1:2], "weight_decay": 0.1, "lr": 1e-2},
                    {"params": p[2:], "tau_iters": None, "weight_decay": 0.0}],
                   lr=1e-3, tau_epochs=3.0, iters_per_epoch=100)
    r = opt.timescales()
    assert r[0]["decay"] == "tau" and r[0]["tau_iters"] == 300.0 and r[0]["tau_epochs"] == 3.0
    assert math.isclose(r[0]["weight_decay"], 1 / (1e-3 * 300))
    assert r[1]["decay"] == "lambda" and math.isclose(r[1]["tau_iters"], 1000.0)
    assert r[2]["decay"] == "none" and math.isinf(r[2]["tau_iters"])


def test_group_without_decay_inherits_optimizer_decay():
    p = _params()
    opt = AdamWTau([{"params": p[:2]}, {"params": p[2:], "tau_iters": 7.0}], lr=1e-3, weight_decay=0.3)
    g0, g1 = opt.param_groups
    assert g0["decay"] == "lambda" and g0["weight_decay"] == 0.3
    assert g1["decay"] == "tau" and g1["tau_iters"] == 7.0


def test_state_dict_keys_match_torch_and_cross_load():
    a = _params()
    ours = _run(AdamWTau, a, 3, lr=1e-3, weight_decay=0.1, amsgrad=True, backend="reference")
    b = _params()
    theirs = _run(torch.optim.AdamW, b, 3, lr=1e-3, weight_decay=0.1, amsgrad=True)
    assert set(ours.state_dict()["state"][0]) == set(theirs.state_dict()["state"][0])
    c = _params()
    loaded = AdamWTau(c, lr=1e-3, backend="reference")
    loaded.load_state_dict(theirs.state_dict())
    assert loaded.param_groups[0]["decay"] == "lambda" and loaded.param_groups[0]["weight_decay"] == 0.1
    t2 = torch.optim.AdamW(_params(), lr=1e-3)
    t2.load_state_dict(ours.state_dict())
    assert t2.state_dict()["state"][0]["step"].item() == 3


@pytest.mark.parametrize("kwargs, exc, words", [
    (dict(lr=float("nan")), ValueError, "lr"),
    (dict(lr=-1.0), ValueError, "lr"),
    (dict(eps=float("inf")), ValueError, "eps"),
    (dict(betas=(1.0, 0.999)), ValueError, "betas[0]"),
    (dict(betas=(0.9, -0.1)), ValueError, "betas[1]"),
    (dict(tau_iters=-5.0), ValueError, "tau_iters"),
    (dict(tau_iters=float("inf")), ValueError, "tau_iters"),
    (dict(weight_decay=-0.1), ValueError, "weight_decay"),
    (dict(weight_decay=0.1, tau_iters=10.0), ValueError, "exactly one"),
    (dict(tau_epochs=2.0), ValueError, "iters_per_epoch"),
    (dict(iters_per_epoch=10), ValueError, "tau_epochs"),
    (dict(backend="warp"), ValueError, "backend"),
    (dict(state_dtype=torch.float16), TypeError, "state_dtype"),
])
def test_bad_arguments_raise_with_the_name(kwargs, exc, words):
    with pytest.raises(exc, match=words.replace("[", r"\[").replace("]", r"\]")):
        AdamWTau(_params(), **kwargs)


@pytest.mark.parametrize("param, words", [
    (torch.zeros(3, dtype=torch.int64), "dtype"),
    (torch.zeros(3, dtype=torch.complex64), "view_as_real"),
    (torch.zeros(3, dtype=torch.float64), "dtype"),
])
def test_bad_params_raise(param, words):
    with pytest.raises(TypeError, match=words):
        AdamWTau([param])


def test_named_backend_unavailable_says_why():
    with pytest.raises(BackendUnavailable, match="cuda"):
        AdamWTau(_params(), backend="cuda")


@pytest.mark.parametrize("backend", ["reference", "cpu"])  # cpu: the cached-tables path checks on new grads
def test_bad_step_input_changes_nothing(backend):
    p = _params()
    opt = _run(AdamWTau, p, 2, lr=1e-3, weight_decay=0.1, backend=backend)
    before = _snapshot(p, opt)
    for p_ in p:
        p_.grad = torch.randn(p_.shape)
    p[2].grad = p[2].grad.to_sparse()
    with pytest.raises(RuntimeError, match="sparse"):
        opt.step()
    p[2].grad = torch.randn(p[2].shape)
    p[2].grad.data = torch.randn(p[2].numel() + 1)  # torch's setter checks shapes; .data does not
    with pytest.raises(RuntimeError, match=r"param group 0: params\[2\] has a gradient of shape"):
        opt.step()
    p[2].grad = torch.randn(p[2].shape)
    for bad in (float("nan"), -1e-3, float("inf"), "0.1"):  # lr alone changed: its own check
        opt.param_groups[0]["lr"] = bad
        with pytest.raises((ValueError, TypeError), match="param group 0: lr"):
            opt.step()
    opt.param_groups[0]["lr"] = 1e-3
    opt.param_groups[0]["eps"] = -1.0
    with pytest.raises(ValueError, match="param group 0: eps"):
        opt.step()
    opt.param_groups[0]["eps"] = 1e-8
    opt.param_groups[0]["lr"] = 20.0  # lr * lambda > 1: the decay factor would be negative
    with pytest.raises(ValueError, match="decay factor"):
        opt.step()
    after = _snapshot(p, opt)
    assert differing_lists(before, after) == 0


def test_tau_form_with_zero_lr_peak_raises_at_step():
    p = _params()
    opt = AdamWTau(p, lr=0.0, tau_iters=10.0, backend="reference")
    for p_ in p:
        p_.grad = torch.ones_like(p_)
    with pytest.raises(ValueError, match="lr_peak"):
        opt.step()
    opt.param_groups[0]["lr_peak"] = 1e-3
    opt.step()
    lam = AdamWTau(_params(), lr=0.0, weight_decay=0.1, backend="reference")  # the λ form needs no lr_peak
    for p_ in lam.param_groups[0]["params"]:
        p_.grad = torch.ones_like(p_)
    lam.step()


def test_bf16_master_weights_param_is_rne_of_master():
    p = [torch.nn.Parameter(torch.randn(64).bfloat16())]
    opt = _run(AdamWTau, p, 5, lr=1e-2, master_weights=True, backend="reference")
    st = opt.state[p[0]]
    assert st["master_param"].dtype == torch.float32 and st["exp_avg"].dtype == torch.float32
    assert differing(p[0].detach(), st["master_param"].bfloat16()) == 0


def test_stochastic_rounding_is_reproducible_and_keyed_by_seed():
    def run(seed):
        p = [torch.nn.Parameter(torch.linspace(-1, 1, 512).bfloat16())]
        _run(AdamWTau, p, 4, lr=1e-3, stochastic_rounding=True, seed=seed, backend="reference")
        return p[0].detach().float()
    assert differing(run(1), run(1)) == 0
    assert differing(run(1), run(2)) > 0
