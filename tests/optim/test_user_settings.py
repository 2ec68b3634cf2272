"""Settings a user writes into the groups after construction, and parameters given twice:
each either applies, as ``timescales()`` reports, or raises before any tensor changes."""
import pytest
import torch

from adamw_tau import AdamWTau
from adamw_tau.testing.bits import differing


def _ones(n=3):
    return [torch.nn.Parameter(torch.ones(8)) for _ in range(n)]


def _zero_grad_step(opt, params):
    for p in params:
        p.grad = torch.zeros_like(p)
    opt.step()


def _factor(p):
    return p.detach()[0].item()  # a one started it; zero gradients and zero states: p = d * 1


def test_a_parameter_twice_in_one_group_is_refused_by_name():
    a, b = _ones(2)
    with pytest.raises(ValueError, match=r"params\[2\] is params\[0\]"):
        AdamWTau([a, b, a], lr=1e-3)
    with pytest.raises(ValueError, match=r"params\[1\] \('w'\) is params\[0\]"):
        AdamWTau([{"params": [a, a], "param_names": ["w", "w"]}], lr=1e-3)
    opt = AdamWTau([a], lr=1e-3)
    with pytest.raises(ValueError, match=r"param group 1: params\[1\] is params\[0\]"):
        opt.add_param_group({"params": [b, b]})
    with pytest.raises(ValueError, match="more than one parameter group"):  # torch's own check, across groups
        AdamWTau([{"params": [a]}, {"params": [a]}], lr=1e-3)


def test_weight_decay_written_into_a_no_decay_group_applies_as_in_torch():
    ps = _ones(2)
    opt = AdamWTau([{"params": [ps[0]]}, {"params": [ps[1]], "weight_decay": 0.0}], lr=0.1, weight_decay=0.5)
    opt.param_groups[1]["weight_decay"] = 0.2  # a weight-decay schedule writes every group
    assert [t["decay"] for t in opt.timescales()] == ["lambda", "lambda"]
    assert opt.timescales()[1]["weight_decay"] == 0.2
    _zero_grad_step(opt, ps)
    assert _factor(ps[0]) == torch.tensor(1 - 0.1 * 0.5).item()
    assert _factor(ps[1]) == torch.tensor(1 - 0.1 * 0.2).item()
    opt.param_groups[0]["weight_decay"] = 0.0  # and back to none
    assert opt.timescales()[0]["decay"] == "none"
    before = ps[0].detach().clone()
    _zero_grad_step(opt, ps)
    assert differing(ps[0], before) == 0


def test_weight_decay_written_into_a_tau_group_raises_before_any_write():
    ps = _ones(2)
    opt = AdamWTau([{"params": [ps[0]], "weight_decay": 0.0}, {"params": [ps[1]]}], lr=0.1, tau_iters=50.0)
    _zero_grad_step(opt, ps)
    shown = opt.param_groups[1]["weight_decay"]
    assert shown == pytest.approx(1 / (0.1 * 50.0)) and opt.timescales()[1]["weight_decay"] == shown
    opt.param_groups[1]["weight_decay"] = 0.01
    before = [p.detach().clone() for p in ps]
    with pytest.raises(ValueError, match=r"param group 1: weight_decay was set to 0.01.*tau_iters"):
        _zero_grad_step(opt, ps)
    assert all(differing(p, b) == 0 for p, b in zip(ps, before))
    with pytest.raises(ValueError, match="weight_decay was set"):
        opt.timescales()  # never a report of what is not applied


def test_tau_written_into_a_tau_group_applies_and_the_report_follows():
    p = _ones(1)
    opt = AdamWTau(p, lr=0.1, tau_epochs=2.0, iters_per_epoch=10)
    opt.param_groups[0]["tau_iters"] = 40.0
    t = opt.timescales()[0]
    assert (t["tau_iters"], t["tau_epochs"]) == (40.0, 4.0)
    assert opt.param_groups[0]["weight_decay"] == pytest.approx(1 / (0.1 * 40.0))
    _zero_grad_step(opt, p)
    assert _factor(p[0]) == torch.tensor(1 - 1 / 40.0).item()
    opt.param_groups[0]["tau_epochs"] = 1.0  # the epoch view written: tau_iters follows
    assert opt.timescales()[0]["tau_iters"] == 10.0
    opt.param_groups[0]["tau_epochs"], opt.param_groups[0]["tau_iters"] = 3.0, 5.0  # both, disagreeing
    with pytest.raises(ValueError, match="tau_epochs"):
        _zero_grad_step(opt, p)


def test_tau_written_into_a_lambda_group_is_refused():
    p = _ones(1)
    opt = AdamWTau(p, lr=0.1, weight_decay=0.1)
    opt.param_groups[0]["tau_iters"] = 100.0
    with pytest.raises(ValueError, match="tau_iters"):
        _zero_grad_step(opt, p)
