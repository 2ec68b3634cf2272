"""AdamWTau as a drop-in: schedulers, checkpoints, odd tensors, bad state dicts, fuzzed parity."""
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from required import require

from adamw_tau import AdamWTau
from adamw_tau.testing.bits import differing, differing_lists, differing_optimizers


def _model(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(6, 9), torch.nn.Tanh(), torch.nn.Linear(9, 2))


def _train(model, opt, steps, start=0, sched=None):
    for t in range(start, start + steps):
        g = torch.Generator().manual_seed(t)
        x, y = torch.randn(8, 6, generator=g), torch.randn(8, 2, generator=g)
        opt.zero_grad()
        ((model(x) - y) ** 2).mean().backward()
        opt.step()
        if sched is not None:
            sched.step()


def _bits(model):
    return [p.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize("make_sched", [
    lambda o: torch.optim.lr_scheduler.StepLR(o, 3, 0.5),
    lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, 10),
    lambda o: torch.optim.lr_scheduler.LinearLR(o, 0.1, 1.0, 4),
    lambda o: torch.optim.lr_scheduler.OneCycleLR(o, max_lr=1e-2, total_steps=12),
])
def test_schedulers_drive_tau_decay_through_lr_over_lr_peak(make_sched):
    model = _model()
    opt = AdamWTau(model.parameters(), lr=1e-2, tau_iters=20.0, backend="cpu")
    sched = make_sched(opt)
    for _ in range(6):
        lr = opt.param_groups[0]["lr"]
        w = model[0].weight.detach().clone()
        for p in model.parameters():
            p.grad = torch.zeros_like(p)
        opt.step()
        sched.step()
        d = torch.tensor(1 - (lr / 1e-2) / 20.0, dtype=torch.float64).float()
        assert differing(model[0].weight.detach(), w * d) == 0


def test_checkpoint_resume_is_bitwise_the_same_as_running_through(tmp_path):
    straight = _model()
    opt = AdamWTau(straight.parameters(), lr=3e-3, tau_epochs=2.0, iters_per_epoch=5, amsgrad=True, backend="cpu")
    _train(straight, opt, 10)

    first = _model()
    opt1 = AdamWTau(first.parameters(), lr=3e-3, tau_epochs=2.0, iters_per_epoch=5, amsgrad=True, backend="cpu")
    _train(first, opt1, 4)
    torch.save({"model": first.state_dict(), "opt": opt1.state_dict()}, tmp_path / "ck.pt")
    ck = torch.load(tmp_path / "ck.pt")
    resumed = _model(seed=123)
    resumed.load_state_dict(ck["model"])
    opt2 = AdamWTau(resumed.parameters(), lr=3e-3, tau_epochs=2.0, iters_per_epoch=5, amsgrad=True, backend="cpu")
    opt2.load_state_dict(ck["opt"])
    _train(resumed, opt2, 6, start=4)
    assert differing_optimizers(list(straight.parameters()), opt, list(resumed.parameters()), opt2) == {}


def test_torch_adamw_checkpoint_continues_in_adamwtau_and_back():
    a, b = _model(), _model()
    ta = torch.optim.AdamW(a.parameters(), lr=1e-3, weight_decay=0.1)
    tb = torch.optim.AdamW(b.parameters(), lr=1e-3, weight_decay=0.1)
    _train(a, ta, 3)
    _train(b, tb, 3)
    ours = AdamWTau(b.parameters(), lr=1e-3, backend="cpu")
    ours.load_state_dict(tb.state_dict())
    _train(a, ta, 5, start=3)
    _train(b, ours, 5, start=3)
    for x, y in zip(a.parameters(), b.parameters()):
        assert torch.allclose(x, y, rtol=1e-5, atol=1e-7)
    back = torch.optim.AdamW(b.parameters(), lr=1e-3)
    back.load_state_dict(ours.state_dict())
    _train(b, back, 2, start=8)
    assert back.state_dict()["state"][0]["step"].item() == 10


def test_bad_state_dict_changes_nothing():
    model = _model()
    opt = AdamWTau(model.parameters(), lr=1e-3, backend="cpu")
    _train(model, opt, 2)
    other = torch.nn.Sequential(torch.nn.Linear(6, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2))
    oopt = AdamWTau(other.parameters(), lr=1e-3, backend="cpu")
    _train(other, oopt, 1)
    before = {k: v.clone() for k, v in opt.state_dict()["state"][0].items()}
    with pytest.raises(ValueError, match="shape"):
        opt.load_state_dict(oopt.state_dict())
    sd = opt.state_dict()
    sd["param_groups"] = sd["param_groups"] + sd["param_groups"]
    with pytest.raises(ValueError, match="param groups"):
        opt.load_state_dict(sd)
    after = opt.state_dict()["state"][0]
    assert set(before) == set(after) and all(differing(before[k], after[k]) == 0 for k in before)


def test_same_param_twice_and_zero_element_and_no_grad():
    p = torch.nn.Parameter(torch.randn(3))
    with pytest.raises(ValueError, match="more than one"):
        AdamWTau([{"params": [p]}, {"params": [p]}])
    empty, no_grad = torch.nn.Parameter(torch.empty(0, 4)), torch.nn.Parameter(torch.randn(5))
    opt = AdamWTau([p, empty, no_grad], lr=1e-2, backend="cpu")
    p.grad, empty.grad = torch.randn(3), torch.empty(0, 4)
    before = no_grad.detach().clone()
    opt.step()
    assert differing(no_grad.detach(), before) == 0 and no_grad not in opt.state
    assert opt.state[empty]["exp_avg"].shape == (0, 4)


@pytest.mark.parametrize("backend", ["cpu", pytest.param("triton", marks=pytest.mark.slow)])  # triton: 12 CPU s
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzzed_parity_through_the_optimizer(backend, data):
    """Random shapes, strides (transposed views), dtype paths and options: 0 bits from the reference."""
    require(backend)
    n = data.draw(st.integers(1, 4), label="tensors")
    shapes = [tuple(data.draw(st.lists(st.integers(1, 40), min_size=1, max_size=3), label="shape")) for _ in range(n)]
    dtype = data.draw(st.sampled_from([torch.float32, torch.bfloat16, torch.float16]), label="dtype")
    opts = dict(amsgrad=data.draw(st.booleans(), label="amsgrad"), maximize=data.draw(st.booleans(), label="max"),
                master_weights=dtype != torch.float32 and data.draw(st.booleans(), label="master"),
                stochastic_rounding=data.draw(st.booleans(), label="sr"),
                state_dtype=data.draw(st.sampled_from([None, torch.float32, torch.bfloat16]), label="sdt"),
                seed=data.draw(st.integers(0, 2 ** 40), label="seed"))
    decay = data.draw(st.sampled_from([{}, {"weight_decay": 0.3}, {"tau_iters": 40.0}]), label="decay")
    steps = data.draw(st.integers(1, 3), label="steps")
    transpose = data.draw(st.booleans(), label="transpose")
    gen = torch.Generator().manual_seed(data.draw(st.integers(0, 1000), label="data seed"))
    base = [torch.randn(s, generator=gen).to(dtype) for s in shapes]

    def make():
        ps = []
        for b in base:
            t = b.clone()
            if transpose and t.dim() >= 2:
                t = t.transpose(0, 1).contiguous().transpose(0, 1)  # same values, non-contiguous
            ps.append(torch.nn.Parameter(t))
        return ps

    ours, ref = make(), make()
    o1 = AdamWTau(ours, lr=2e-2, backend=backend, **opts, **decay)
    o2 = AdamWTau(ref, lr=2e-2, backend="reference", **opts, **decay)
    for _ in range(steps):
        for a, b in zip(ours, ref):
            g = torch.randn(a.shape, generator=gen).to(dtype)
            a.grad, b.grad = g.clone(), g.clone()
        o1.step()
        o2.step()
    # every state entry of either optimizer (a key one lacks differs), params, steps
    assert differing_optimizers(ours, o1, ref, o2) == {}


def test_gradient_dtype_change_rebuilds_the_buckets():
    p = torch.nn.Parameter(torch.randn(8).bfloat16())
    opt = AdamWTau([p], lr=1e-2, master_weights=True, backend="cpu")
    p.grad = torch.randn(8).bfloat16()
    opt.step()
    p.grad_dtype = None  # torch lets a bf16 param take an fp32 gradient only when asked
    p.grad = torch.randn(8)  # fp32 gradient for a bf16 param: another bucket, not a stale one
    opt.step()
    assert differing(p.detach(), opt.state[p]["master_param"].bfloat16()) == 0
    assert opt.state[p]["step"].item() == 2


@pytest.mark.cuda
def test_params_on_two_devices_step_in_one_call_per_device():
    g = torch.Generator().manual_seed(3)
    host = [torch.randn(5, 3, generator=g), torch.randn(7, generator=g)]
    mixed = [torch.nn.Parameter(host[0].clone()), torch.nn.Parameter(host[1].clone().cuda())]
    ref = [torch.nn.Parameter(t.clone()) for t in host]
    o1 = AdamWTau(mixed, lr=1e-2, tau_iters=20.0)
    o2 = AdamWTau(ref, lr=1e-2, tau_iters=20.0, backend="reference")
    assert o1.backend_for("cpu") == "cpu" and o1.backend_for("cuda") in ("triton", "cuda")
    for _ in range(4):
        grads = [torch.randn(t.shape, generator=g) for t in host]
        for p, q, gr in zip(mixed, ref, grads):
            p.grad, q.grad = gr.to(p.device), gr.clone()
        o1.step()
        o2.step()
    assert differing_optimizers(mixed, o1, ref, o2) == {}


def test_step_hooks_run_and_the_profiler_sees_the_step(monkeypatch):
    """The step wrapper skips torch's profiler range and hook walk only when neither is in use."""
    from torch.optim.optimizer import register_optimizer_step_pre_hook
    model = _model()
    opt = AdamWTau(model.parameters(), lr=1e-2, tau_iters=50.0, backend="cpu")
    _train(model, opt, 1)
    calls = []
    pre = opt.register_step_pre_hook(lambda o, a, k: calls.append(("pre", o is opt)))
    post = opt.register_step_post_hook(lambda o, a, k: calls.append(("post", o is opt)))
    glob = register_optimizer_step_pre_hook(lambda o, a, k: calls.append(("global", o is opt)))
    _train(model, opt, 1)
    assert calls == [("global", True), ("pre", True), ("post", True)]
    for h in (pre, post, glob):
        h.remove()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        _train(model, opt, 1)
    assert "Optimizer.step#AdamWTau.step" in {e.name for e in prof.events()}
    # no hooks, no profiler: the step opens no profiler range (zero_grad and backward may)
    def no_range(*a, **k):
        raise AssertionError("record_function on the plain path")
    before = _bits(model)
    with monkeypatch.context() as mp:
        mp.setattr(torch.autograd.profiler, "record_function", no_range)
        opt.step()
    assert opt.state[next(model.parameters())]["step"].item() == 4
    assert differing_lists(before, _bits(model)) > 0


def test_replaced_param_data_of_a_new_shape_rebuilds_the_bucket():
    """p.data replaced by a tensor of another shape (with a gradient to match): the bucket is
    rebuilt for it, as for a move at the same shape. Its old states do not fit: a clear error,
    nothing written; with its state cleared, the step is the reference's first."""
    model = _model()
    opt = AdamWTau(model.parameters(), lr=1e-2, tau_iters=50.0, backend="cpu")
    _train(model, opt, 2)
    w = model[2].weight  # not the bucket's first tensor: its layout is not rebuilt for other reasons
    w.data = torch.randn(3, 2)
    w.grad = torch.randn(3, 2)
    before = _bits(model)
    with pytest.raises(RuntimeError, match=r"params\[2\] has shape \(3, 2\) but its state 'exp_avg' has shape"):
        opt.step()
    assert differing_lists(before, _bits(model)) == 0
    opt.state[w].clear()
    q = torch.nn.Parameter(w.detach().clone())
    q.grad = w.grad.clone()
    opt.step()
    AdamWTau([q], lr=1e-2, tau_iters=50.0, backend="reference").step()
    assert opt.state[w]["step"].item() == 1 and opt.state[w]["exp_avg"].shape == (3, 2)
    assert differing(w.detach(), q.detach()) == 0
    assert opt.state[model[0].weight]["step"].item() == 3  # the failed step counted nothing
