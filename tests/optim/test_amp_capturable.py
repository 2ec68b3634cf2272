"""GradScaler inside the kernel, device-counted steps (capturable=True, tensor lr), CUDA graphs."""
import random

import pytest
import torch
from required import require

from adamw_tau import AdamWTau
from adamw_tau.core.contract import DeviceScalarBuilder, bias_table_rows, host_scalars
from adamw_tau.testing.bits import differing, differing_lists, differing_optimizers

CPU_BACKENDS = ["cpu", "triton", "reference"]  # each must run in CI (required.require)
CUDA_BACKENDS = ["triton", "cuda", "reference"]


def _model(device="cpu", seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 3)).to(device)


def _batch(t, device):
    g = torch.Generator().manual_seed(t)
    return torch.randn(6, 5, generator=g).to(device), torch.randn(6, 3, generator=g).to(device)


def _everything(model, opt):
    out = list(model.parameters())
    for st in opt.state.values():
        out += [v for v in st.values() if isinstance(v, torch.Tensor)]
    return [t.detach().clone() for t in out]


def test_device_scalars_equal_host_scalars_bit_for_bit():
    rng = random.Random(0)
    for betas in ((0.9, 0.999), (0.8, 0.95), (0.0, 0.5)):
        rows = max(bias_table_rows(b) for b in betas)
        for mode in ("tau", "lambda", "none"):
            build = DeviceScalarBuilder(lr_peak=3e-3, beta1=betas[0], beta2=betas[1], eps=1e-8, decay_mode=mode,
                                        tau_iters=77.7, weight_decay=0.05, device=torch.device("cpu"))
            # steps past the table's end (both corrections exactly 1.0 there) are clamped to its last row
            for t in [1, 2, rows - 1, rows, rows + 5] + [rng.randint(1, 3 * rows) for _ in range(200)]:
                lr = rng.uniform(0.0, 3e-3)
                host = host_scalars(lr=lr, lr_peak=3e-3, beta1=betas[0], beta2=betas[1], eps=1e-8, step=t,
                                    decay_mode=mode, tau_iters=77.7, weight_decay=0.05).as_tensor()
                dev = build(torch.tensor([lr], dtype=torch.float64), torch.tensor([float(t)]))
                assert differing(host, dev) == 0, (betas, mode, t, lr)


def test_betas_too_close_to_one_for_the_table_raise_clearly():
    with pytest.raises(ValueError, match="too close to 1"):
        bias_table_rows(1.0 - 1e-9)


def _scaled_run(device, backend, steps, bad_steps, unscale_first):
    """AdamWTau + GradScaler; on bad_steps one gradient entry is set to inf after backward."""
    model = _model(device)
    opt = AdamWTau(model.parameters(), lr=1e-2, tau_iters=50.0, amsgrad=True, backend=backend)
    scaler = torch.amp.GradScaler(device, init_scale=2.0 ** 12, growth_interval=2)
    scales, skipped_ok = [], []
    for t in range(steps):
        x, y = _batch(t, device)
        opt.zero_grad()
        scaler.scale(((model(x) - y) ** 2).mean()).backward()
        if t in bad_steps:
            model[0].weight.grad[1, 2] = float("inf")
        before = _everything(model, opt) if t in bad_steps else None
        if unscale_first:
            scaler.unscale_(opt)
        scaler.step(opt)
        if before is not None:
            skipped_ok.append(differing_lists(before, _everything(model, opt)) == 0)
        scaler.update()
        scales.append(scaler.get_scale())
    return model, opt, scales, skipped_ok


def _unscaled_run(device, steps, bad_steps):
    """The same training with no scaler: the bad steps are simply not taken."""
    model = _model(device)
    opt = AdamWTau(model.parameters(), lr=1e-2, tau_iters=50.0, amsgrad=True, backend="reference")
    for t in range(steps):
        x, y = _batch(t, device)
        opt.zero_grad()
        ((model(x) - y) ** 2).mean().backward()
        if t not in bad_steps:
            opt.step()
    return model, opt


def _check_gradscaler(device, backend, unscale_first):
    steps, bad = 9, {2, 3, 6}
    model, opt, scales, skipped_ok = _scaled_run(device, backend, steps, bad, unscale_first)
    # power-of-two scales: the scaled backward and the division by the scale are exact
    ref, ref_opt = _unscaled_run(device, steps, bad)
    assert skipped_ok == [True] * len(bad), "a skipped step changed a parameter or state"
    assert differing_optimizers(list(model.parameters()), opt, list(ref.parameters()), ref_opt) == {}
    for p in model.parameters():
        assert set(opt.state[p]) == {"exp_avg", "exp_avg_sq", "max_exp_avg_sq", "step"}
        assert float(opt.state[p]["step"]) == steps - len(bad)
    # the scale's path is torch's own: halved on each bad step, doubled every 2 good ones
    assert scales == [4096.0, 8192.0, 4096.0, 2048.0, 2048.0, 4096.0, 2048.0, 2048.0, 4096.0]


@pytest.mark.parametrize("unscale_first", [False, True], ids=["in_kernel_unscale", "unscale_then_step"])
@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_gradscaler_unscales_and_skips_inside_the_step(backend, unscale_first):
    require(backend)
    _check_gradscaler("cpu", backend, unscale_first)


def test_gradscaler_follows_torch_adamw_with_gradscaler():
    steps, bad = 9, {2, 3, 6}
    ours, opt, scales, _ = _scaled_run("cpu", "cpu", steps, bad, False)
    model = _model()
    topt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=1.0 / (1e-2 * 50.0), amsgrad=True)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 12, growth_interval=2)
    torch_scales = []
    for t in range(steps):
        x, y = _batch(t, "cpu")
        topt.zero_grad()
        scaler.scale(((model(x) - y) ** 2).mean()).backward()
        if t in bad:
            model[0].weight.grad[1, 2] = float("inf")
        scaler.step(topt)
        scaler.update()
        torch_scales.append(scaler.get_scale())
    assert scales == torch_scales
    for p, q in zip(ours.parameters(), model.parameters()):
        assert torch.allclose(p, q, rtol=1e-5, atol=1e-6)
        assert float(opt.state[p]["step"]) == float(topt.state[q]["step"]) == steps - len(bad)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_capturable_and_tensor_lr_give_the_host_counted_bits(backend):
    """Device-counted steps (capturable, tensor lr driven by a scheduler) equal host-counted ones."""
    require(backend)
    models = [_model() for _ in range(3)]
    host = AdamWTau(models[0].parameters(), lr=1e-2, tau_iters=30.0, backend=backend)
    capt = AdamWTau(models[1].parameters(), lr=1e-2, tau_iters=30.0, backend=backend, capturable=True)
    tens = AdamWTau(models[2].parameters(), lr=torch.tensor(1e-2, dtype=torch.float64), tau_iters=30.0, backend=backend)
    sched = torch.optim.lr_scheduler.OneCycleLR(tens, max_lr=1e-2, total_steps=10)
    for t in range(8):
        lr = float(tens.param_groups[0]["lr"])
        host.param_groups[0]["lr"] = capt.param_groups[0]["lr"] = lr
        # OneCycleLR also cycles beta1 (and with it the bias-correction table)
        host.param_groups[0]["betas"] = capt.param_groups[0]["betas"] = tens.param_groups[0]["betas"]
        x, y = _batch(t, "cpu")
        for m, o in zip(models, (host, capt, tens)):
            o.zero_grad()
            ((m(x) - y) ** 2).mean().backward()
            o.step()
        sched.step()
    params = [list(m.parameters()) for m in models]
    assert differing_optimizers(params[0], host, params[1], capt) == {}
    assert differing_optimizers(params[0], host, params[2], tens) == {}
    p = next(models[2].parameters())
    assert tens.state[p]["step"].device == p.device and float(tens.state[p]["step"]) == 8


def test_tensor_lr_must_be_one_float():
    with pytest.raises(TypeError, match="one floating-point value"):
        AdamWTau(_model().parameters(), lr=torch.tensor([1e-3, 2e-3]))


# --- on a GPU ------------------------------------------------------------------------------------
@pytest.mark.cuda
@pytest.mark.parametrize("backend", CUDA_BACKENDS)
def test_gradscaler_on_cuda(backend):
    _check_gradscaler("cuda", backend, False)


@pytest.mark.cuda
@pytest.mark.parametrize("backend", CUDA_BACKENDS)
def test_cuda_graph_replays_bit_identical_to_eager_with_a_scheduler(backend):
    eager_model, graph_model = _model("cuda"), _model("cuda")
    kw = dict(tau_iters=40.0, amsgrad=True, backend=backend, capturable=True)
    eager = AdamWTau(eager_model.parameters(), lr=torch.tensor(1e-2, device="cuda"), **kw)
    graphed = AdamWTau(graph_model.parameters(), lr=torch.tensor(1e-2, device="cuda"), **kw)
    sched_e = torch.optim.lr_scheduler.CosineAnnealingLR(eager, 12)
    sched_g = torch.optim.lr_scheduler.CosineAnnealingLR(graphed, 12)
    grads = [torch.zeros_like(p) for p in graph_model.parameters()]
    for p, g in zip(graph_model.parameters(), grads):
        p.grad = g

    def fill(t):
        gen = torch.Generator().manual_seed(t)
        return [torch.randn(g.shape, generator=gen).cuda() for g in grads]

    step = 0
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up: builds the kernels' tables before capture
        for _ in range(3):
            for g, v in zip(grads, fill(step)):
                g.copy_(v)
            graphed.step()
            step += 1
    torch.cuda.current_stream().wait_stream(side)
    for _ in range(3):
        for p, v in zip(eager_model.parameters(), fill(_)):
            p.grad = v
        eager.step()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        graphed.step()
    for t in range(step, step + 8):
        for g, v in zip(grads, fill(t)):
            g.copy_(v)
        graph.replay()
        for p, v in zip(eager_model.parameters(), fill(t)):
            p.grad = v
        eager.step()
        sched_e.step()
        sched_g.step()
        torch.cuda.synchronize()
        assert differing_optimizers(list(eager_model.parameters()), eager,
                                    list(graph_model.parameters()), graphed) == {}, t
    p = next(graph_model.parameters())
    assert float(graphed.state[p]["step"]) == step + 8
