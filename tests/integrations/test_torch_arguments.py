"""AdamWTau takes every argument torch.optim.AdamW takes, in the same places; the
implementation switches (fused, foreach) change no bit; differentiable=True and non-bool
switches are clear errors."""
import inspect

import pytest
import torch

from adamw_tau import AdamWTau
from frameworks import optimizer_tensors, same_bits

TORCH = inspect.signature(torch.optim.AdamW).parameters
OURS = inspect.signature(AdamWTau).parameters
SAME_DEFAULTS = ("lr", "betas", "eps", "amsgrad", "maximize", "foreach", "capturable", "differentiable", "fused")


def _params():
    torch.manual_seed(0)
    return [torch.nn.Parameter(torch.randn(5, 7)), torch.nn.Parameter(torch.randn(7))]


def test_every_torch_adamw_argument_is_ours_in_the_same_place():
    for name, p in TORCH.items():
        assert name in OURS, f"torch.optim.AdamW takes {name!r}; AdamWTau should accept it too"
        assert OURS[name].kind == p.kind, f"{name!r} is {p.kind} in torch.optim.AdamW, {OURS[name].kind} here"
    positional = [n for n, p in TORCH.items() if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD]
    assert positional == [n for n, p in OURS.items() if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD]
    for name in SAME_DEFAULTS:
        assert OURS[name].default == TORCH[name].default, name
    assert OURS["weight_decay"].default is None  # documented: no decay unless asked (torch: 0.01)


def test_constructed_with_torch_adamws_full_signature():
    defaults = {n: p.default for n, p in TORCH.items() if n != "params"}
    by_name = AdamWTau(_params(), **defaults)
    positional = [defaults[n] for n, p in TORCH.items()
                  if n != "params" and p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD]
    keyword = {n: defaults[n] for n, p in TORCH.items() if p.kind is inspect.Parameter.KEYWORD_ONLY}
    by_place = AdamWTau(_params(), *positional, **keyword)
    for opt in (by_name, by_place):
        g = opt.param_groups[0]
        assert g["decay"] == "lambda" and g["weight_decay"] == TORCH["weight_decay"].default
        assert (g["lr"], g["betas"], g["eps"], g["amsgrad"]) == (1e-3, (0.9, 0.999), 1e-8, False)


def _run(**switches):
    ps = _params()
    opt = AdamWTau(ps, lr=1e-2, tau_iters=30.0, amsgrad=True, **switches)
    for t in range(4):
        g = torch.Generator().manual_seed(t)
        for p in ps:
            p.grad = torch.randn(p.shape, generator=g)
        opt.step()
    return ps, opt


@pytest.mark.parametrize("switches", [dict(fused=False), dict(foreach=False), dict(fused=False, foreach=False),
                                      dict(fused=True), dict(foreach=True), dict(fused=None, foreach=None)])
def test_fused_and_foreach_change_no_bit(switches):
    want_ps, want_opt = _run()
    got_ps, got_opt = _run(**switches)
    assert got_opt.backend_for("cpu") == want_opt.backend_for("cpu")
    for a, b in zip(want_ps, got_ps):
        assert same_bits(a, b)
    want, got = optimizer_tensors(want_opt), optimizer_tensors(got_opt)
    assert want.keys() == got.keys() and len(want) == 8  # step, exp_avg, exp_avg_sq, max_exp_avg_sq for 2
    for k in want:
        assert same_bits(want[k], got[k]), k
    assert "fused" not in got_opt.state_dict()["param_groups"][0]  # the state dict's format is unchanged


@pytest.mark.parametrize("kwargs, error, words", [
    (dict(fused="yes"), TypeError, ["fused must be None, True or False", "'yes'"]),
    (dict(foreach=1), TypeError, ["foreach must be None, True or False"]),
    (dict(differentiable=True), ValueError, ["differentiable=True is not supported",
                                             "torch.optim.AdamW(differentiable=True)"]),
    (dict(differentiable="no"), TypeError, ["differentiable must be True or False"]),
])
def test_bad_switches_say_what_and_what_to_do(kwargs, error, words):
    with pytest.raises(error) as e:
        AdamWTau(_params(), **kwargs)
    assert all(w in str(e.value) for w in words), str(e.value)


def test_switches_in_a_param_group_are_checked_too():
    # torchtitan's optimizer container puts fused= and foreach= into every group
    ps = _params()
    opt = AdamWTau([{"params": ps[:1], "fused": True, "foreach": False}, {"params": ps[1:]}], lr=1e-3)
    assert opt.param_groups[0]["fused"] is True
    with pytest.raises(TypeError, match="param group 1: fused must be None, True or False"):
        AdamWTau([{"params": ps[:1]}, {"params": ps[1:], "fused": "yes"}])
    with pytest.raises(ValueError, match="param group 0: differentiable=True is not supported"):
        AdamWTau([{"params": ps, "differentiable": True}])
