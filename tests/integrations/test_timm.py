"""timm's create_optimizer_v2 builds AdamWTau as "adamwtau" (the recipe in docs/integrations.md):
its split leaves biases and norms undecayed and decays the weights, in λ and in τ form."""
import pytest
import torch

from frameworks import bits, need, run_recipe

need("timm")
from timm.optim import create_optimizer_v2  # noqa: E402

from adamw_tau import AdamWTau  # noqa: E402


class _Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 8, 3)
        self.bn = torch.nn.BatchNorm2d(8)
        self.pos = torch.nn.Parameter(torch.randn(1, 8, 4, 4))
        self.head = torch.nn.Linear(8, 5)
        self.ln = torch.nn.LayerNorm(5)

    def forward(self, x):
        h = self.bn(self.conv(x)) + self.pos
        return self.ln(self.head(h.mean((2, 3))))

    def no_weight_decay(self):  # timm's hook: names to keep out of decay
        return {"pos"}


PLAIN = ("conv.bias", "bn.weight", "bn.bias", "pos", "head.bias", "ln.weight", "ln.bias")
DECAYED = ("conv.weight", "head.weight")


def _step_at_zero_grad(model, opt):
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    return before


def _check(model, opt, decay):
    before = _step_at_zero_grad(model, opt)
    d = torch.tensor(decay, dtype=torch.float64).float()
    for n, p in model.named_parameters():
        want = before[n] * d if n in DECAYED else before[n]
        assert torch.equal(bits(p), bits(want)), n
        if n in DECAYED:
            assert not torch.equal(bits(p), bits(before[n])), f"{n} should have decayed"


def test_lambda_form_splits_as_timm_does():
    model = _Net()
    ns = run_recipe("timm", model=model)
    opt = ns["optimizer"]
    assert isinstance(opt, AdamWTau)
    names = {id(p): n for n, p in model.named_parameters()}
    by_decay = {g["decay"]: {names[id(p)] for p in g["params"]} for g in opt.param_groups}
    assert by_decay == {"none": set(PLAIN), "lambda": set(DECAYED)}
    assert all(g["betas"] == (0.9, 0.95) for g in opt.param_groups)
    assert [g["weight_decay"] for g in opt.param_groups if g["decay"] == "lambda"] == [0.05]
    _check(model, opt, 1 - 1e-3 * 0.05)


def test_tau_form_on_timms_split():
    model = _Net()
    opt = run_recipe("timm", model=model)["optimizer_tau"]
    names = {id(p): n for n, p in model.named_parameters()}
    by_decay = {g["decay"]: {names[id(p)] for p in g["params"]} for g in opt.param_groups}
    assert by_decay == {"none": set(PLAIN), "tau": set(DECAYED)}
    assert [g["tau_iters"] for g in opt.param_groups if g["decay"] == "tau"] == [10_000]
    _check(model, opt, 1 - 1 / 10_000)  # lr = lr_peak


def test_tau_without_timms_split_is_a_clear_error():
    run_recipe("timm", model=_Net())
    with pytest.raises(ValueError, match="weight_decay > 0"):
        create_optimizer_v2(_Net(), "adamwtau", lr=1e-3, tau_iters=100.0)


def test_foreach_and_lookahead_pass_through():
    run_recipe("timm", model=_Net())
    model = _Net()
    opt = create_optimizer_v2(model, "lookahead_adamwtau", lr=1e-3, weight_decay=0.05, foreach=False)
    inner = [o for o in vars(opt).values() if isinstance(o, AdamWTau)]
    assert type(opt).__name__ == "Lookahead" and len(inner) == 1
    model(torch.randn(2, 3, 6, 6)).square().mean().backward()
    opt.step()
    assert all(inner[0].state[p]["step"].item() == 1 for p in model.parameters())


def test_layer_decay_keeps_each_groups_tau_under_timms_scheduler():
    """timm's layer_decay gives each layer group an lr_scale that its schedulers multiply into
    the group's lr; the τ given holds per group, whatever the scale, and timescales() says so."""
    import timm
    from timm.scheduler import CosineLRScheduler

    from adamw_tau.integrations.timm import register

    register()
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=16, depth=3,
                              embed_dim=16, num_heads=2, num_classes=3)
    opt = create_optimizer_v2(model, "adamwtau", lr=1e-3, weight_decay=0.05, tau_iters=100.0, layer_decay=0.5)
    sched = CosineLRScheduler(opt, t_initial=10, warmup_t=2, warmup_lr_init=1e-4)
    sched.step(3)  # past warmup: every group at 1e-3 * cos-shaped factor * its lr_scale
    tau_groups = [g for g in opt.param_groups if g["decay"] == "tau"]
    assert len({g["lr_scale"] for g in tau_groups}) >= 4
    for g in tau_groups:  # a one in every weight: after a zero-gradient step it is the factor d
        for p in g["params"]:
            with torch.no_grad():
                p.fill_(1.0)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    reported = opt.timescales()
    factors = set()
    for g, t in zip(opt.param_groups, reported):
        if g["decay"] != "tau":
            continue
        assert t["tau_iters"] == 100.0
        want = torch.tensor(1 - (g["lr"] / t["lr_peak"]) / t["tau_iters"], dtype=torch.float64).float()
        for p in g["params"]:
            assert torch.equal(bits(p), bits(torch.full_like(p, want.item()))), g["lr_scale"]
        factors.add(want.item())
    assert len(factors) == 1  # one τ, one schedule shape: the same decay in every layer
