"""μP groups: lr and decay per group by formula, at two widths; rules; tied weights; mup's infshapes."""
import math

import pytest
import torch
from torch import nn

from adamw_tau import AdamWTau, mup_param_groups
from adamw_tau.testing.bits import differing


class Net(nn.Module):
    def __init__(self, width, vocab=37, out=5, readout=nn.Linear):
        super().__init__()
        self.emb = nn.Embedding(vocab, width)
        self.hidden = nn.Linear(width, width)
        self.norm = nn.LayerNorm(width)
        self.readout = readout(width, out)

    def forward(self, x):
        return self.readout(self.norm(torch.relu(self.hidden(self.emb(x)))))


def _by_class(groups):
    out = {}
    for g in groups:
        out.setdefault(g["mup_class"], []).append(g)
    return out


@pytest.mark.parametrize("width", [256, 1024])
def test_lr_and_decay_by_formula(width):
    base, lr, tau = Net(64), 1e-2, 1000.0
    m = width / 64
    groups = mup_param_groups(Net(width), base, lr=lr)
    names = {n: g for g in groups for n in g["param_names"]}
    assert names["emb.weight"]["mup_class"] == "input" and names["emb.weight"]["lr"] == lr
    assert names["hidden.weight"]["mup_class"] == "hidden" and math.isclose(names["hidden.weight"]["lr"], lr / m)
    assert names["readout.weight"]["mup_class"] == "output" and math.isclose(names["readout.weight"]["lr"], lr / m)
    for vec in ("hidden.bias", "norm.weight", "norm.bias"):
        assert names[vec]["mup_class"] == "vector" and names[vec]["lr"] == lr and names[vec]["weight_decay"] == 0.0
    assert names["readout.bias"]["mup_class"] == "vector"
    opt = AdamWTau(groups, lr=lr, tau_iters=tau)
    for g, ts in zip(opt.param_groups, opt.timescales()):
        if g["mup_class"] == "vector":
            assert ts["decay"] == "none"
        else:
            # τ form: the implied torch λ = 1 / (lr_group · τ_iter) grows with width
            assert ts["decay"] == "tau" and math.isclose(ts["weight_decay"], 1 / (g["lr"] * tau))
    hid = next(t for g, t in zip(opt.param_groups, opt.timescales()) if g["mup_class"] == "hidden")
    assert math.isclose(hid["weight_decay"], m / (lr * tau))


def test_tau_form_decays_alike_at_every_width():
    """Zero gradients: one step multiplies each decayed weight by d, exactly, the same d at every width."""
    d = torch.tensor(1 - 1 / 50, dtype=torch.float32)
    for width in (128, 512):
        model = Net(width)
        opt = AdamWTau(mup_param_groups(model, Net(64), lr=1e-2), lr=1e-2, tau_iters=50.0, backend="reference")
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        for p in model.parameters():
            p.grad = torch.zeros_like(p)
        opt.step()
        for n, p in model.named_parameters():
            want = before[n] if n.startswith("norm") or n.endswith("bias") else before[n] * d
            assert differing(p.detach(), want) == 0, (width, n)


def test_lambda_form_keeps_lr_times_lambda():
    groups = mup_param_groups(Net(512), Net(64), lr=1e-2, weight_decay=0.1)
    for g in groups:
        if g["mup_class"] == "vector":
            assert g["weight_decay"] == 0.0
        else:
            assert math.isclose(g["lr"] * g["weight_decay"], 1e-2 * 0.1)


def test_rules_and_overrides():
    groups = mup_param_groups(Net(128), Net(64), lr=1e-3, no_decay=["emb.*"], decay=[lambda n, p: n == "norm.weight"],
                              overrides=[("readout.*", {"lr_mult": 0.5, "tau_iters": 77.0})])
    names = {n: g for g in groups for n in g["param_names"]}
    assert names["emb.weight"]["weight_decay"] == 0.0
    assert "weight_decay" not in names["norm.weight"]
    assert names["norm.bias"]["weight_decay"] == 0.0
    assert math.isclose(names["readout.weight"]["lr"], 1e-3 / 2 * 0.5)
    assert names["readout.bias"]["tau_iters"] == 77.0 and "weight_decay" not in names["readout.bias"]
    opt = AdamWTau(groups, lr=1e-3, weight_decay=0.01)
    for g in opt.param_groups:
        if "readout.weight" in g["param_names"]:
            assert g["decay"] == "tau" and g["tau_iters"] == 77.0
        if "hidden.weight" in g["param_names"]:
            assert g["decay"] == "lambda" and g["weight_decay"] == 0.01


def test_tied_and_frozen_parameters():
    model = Net(128)
    model.readout = nn.Linear(128, 37, bias=False)
    model.readout.weight = model.emb.weight  # tied
    model.norm.bias.requires_grad_(False)
    base = Net(64)
    base.readout = nn.Linear(64, 37, bias=False)
    base.readout.weight = base.emb.weight
    groups = mup_param_groups(model, base, lr=1e-3)
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids))
    assert id(model.emb.weight) in ids and id(model.norm.bias) not in ids
    AdamWTau(groups, lr=1e-3)


def test_base_width_rule_matches_base_model():
    a = mup_param_groups(Net(256), Net(64), lr=1e-3)
    b = mup_param_groups(Net(256), lr=1e-3, width=256, base_width=64)
    assert [(g["mup_class"], g["lr"], g["param_names"]) for g in a] == \
        [(g["mup_class"], g["lr"], g["param_names"]) for g in b]


def test_bad_base_model_names_the_parameter():
    class Other(Net):
        def __init__(self, w):
            super().__init__(w)
            self.extra = nn.Linear(w, w)
    with pytest.raises(ValueError, match="extra.weight"):
        mup_param_groups(Other(128), Net(64), lr=1e-3)
    bad = Net(64)
    bad.hidden = nn.Conv1d(64, 64, 3)
    with pytest.raises(ValueError, match="hidden.weight"):
        mup_param_groups(Net(128), bad, lr=1e-3)
    with pytest.raises(ValueError, match="cannot tell"):
        mup_param_groups(Net(128), lr=1e-3)


def test_mup_infshapes_give_the_same_groups():
    mup = pytest.importorskip("mup")
    def net(w):
        return Net(w, readout=mup.MuReadout)
    model = net(256)
    mup.set_base_shapes(model, net(64), delta=net(32))
    ours = mup_param_groups(Net(256), Net(64), lr=1e-3)
    theirs = mup_param_groups(model, lr=1e-3)
    assert [(g["mup_class"], g["width_mult"], g["lr"], g["param_names"]) for g in ours] == \
        [(g["mup_class"], g["width_mult"], g["lr"], g["param_names"]) for g in theirs]
