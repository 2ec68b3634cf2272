"""GradScaler inside the kernel, device-counted steps (capturable=True, tensor lr), CUDA graphs."""
import random

import pytest
import torch
from required import require
from tiers import tiered

from adamw_tau import AdamWTau
from adamw_tau.formats import registry
from adamw_tau.core.contract import DeviceScalarBuilder, bias_table_rows, host_scalars
from adamw_tau.testing.bits import differing, differing_lists, differing_optimizers

CPU_BACKENDS = ["cpu", "triton", "reference"]  # each must run in CI (required.require)
CUDA_BACKENDS = ["triton", "cuda", "reference"]


def _model(device="cpu", seed=0, hidden=7):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(5, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, 3)).to(device)


def _quantized(fmt) -> dict:
    """Options and model width for a run with ``fmt``'s states on every tensor: hidden 60 gives
    tensors of 300, 60, 180 and 3 elements (several blocks, partial last ones, an odd count)."""
    return {"state_dtype": fmt.option, "min_quantized_numel": 0}


def _hidden(options) -> int:
    return 60 if options else 7


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


def _scaled_run(device, backend, steps, bad_steps, unscale_first, options=None):
    """AdamWTau + GradScaler; on bad_steps one gradient entry is set to inf after backward."""
    model = _model(device, hidden=_hidden(options))
    opt = AdamWTau(model.parameters(), lr=1e-2, tau_iters=50.0, amsgrad=True, backend=backend, **(options or {}))
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


def _unscaled_run(device, steps, bad_steps, options=None):
    """The same training with no scaler: the bad steps are simply not taken."""
    model = _model(device, hidden=_hidden(options))
    opt = AdamWTau(model.parameters(), lr=1e-2, tau_iters=50.0, amsgrad=True, backend="reference", **(options or {}))
    for t in range(steps):
        x, y = _batch(t, device)
        opt.zero_grad()
        ((model(x) - y) ** 2).mean().backward()
        if t not in bad_steps:
            opt.step()
    return model, opt


def _check_gradscaler(device, backend, unscale_first, fmt=registry.FP32):
    steps, bad = 9, {2, 3, 6}
    options = _quantized(fmt) if fmt.quantized else None
    model, opt, scales, skipped_ok = _scaled_run(device, backend, steps, bad, unscale_first, options)
    # power-of-two scales: the scaled backward and the division by the scale are exact
    ref, ref_opt = _unscaled_run(device, steps, bad, options)
    assert skipped_ok == [True] * len(bad), "a skipped step changed a parameter or state"
    assert differing_optimizers(list(model.parameters()), opt, list(ref.parameters()), ref_opt) == {}
    for p in model.parameters():
        assert set(opt.state[p]) == {k for m in registry.MOMENTS for k in fmt.keys(m)} | {"step"}
        assert float(opt.state[p]["step"]) == steps - len(bad)
    # the scale's path is torch's own: halved on each bad step, doubled every 2 good ones
    assert scales == [4096.0, 8192.0, 4096.0, 2048.0, 2048.0, 4096.0, 2048.0, 2048.0, 4096.0]


@pytest.mark.parametrize("unscale_first", [False, True], ids=["in_kernel_unscale", "unscale_then_step"])
@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_gradscaler_unscales_and_skips_inside_the_step(backend, unscale_first):
    require(backend)
    _check_gradscaler("cpu", backend, unscale_first)


@pytest.mark.parametrize("backend,fmt", tiered([(b, f) for b in CPU_BACKENDS for f in registry.QUANTIZED],
                                               [("cpu", registry.Q4)]), ids=lambda v: getattr(v, "name", v))
def test_gradscaler_with_quantized_states_unscales_and_skips_inside_the_step(backend, fmt):
    """8-bit and 4-bit states under a GradScaler: a skipped step leaves codes and scales as they
    were, the others have the unscaled run's bits."""
    require(backend)
    _check_gradscaler("cpu", backend, False, fmt)


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


def _check_quantized_capturable(backend, fmt, device):
    """Device-counted steps (capturable; a tensor lr a scheduler drives) with quantized states
    equal host-counted ones."""
    models = [_model(device, hidden=60) for _ in range(3)]
    kw = dict(tau_iters=30.0, amsgrad=True, backend=backend, **_quantized(fmt))
    host = AdamWTau(models[0].parameters(), lr=1e-2, **kw)
    capt = AdamWTau(models[1].parameters(), lr=1e-2, capturable=True, **kw)
    tens = AdamWTau(models[2].parameters(), lr=torch.tensor(1e-2, dtype=torch.float64, device=device), **kw)
    sched = torch.optim.lr_scheduler.OneCycleLR(tens, max_lr=1e-2, total_steps=10)
    for t in range(6):
        lr = float(tens.param_groups[0]["lr"])
        host.param_groups[0]["lr"] = capt.param_groups[0]["lr"] = lr
        host.param_groups[0]["betas"] = capt.param_groups[0]["betas"] = tens.param_groups[0]["betas"]
        x, y = _batch(t, device)
        for m, o in zip(models, (host, capt, tens)):
            o.zero_grad()
            ((m(x) - y) ** 2).mean().backward()
            o.step()
        sched.step()
    params = [list(m.parameters()) for m in models]
    assert differing_optimizers(params[0], host, params[1], capt) == {}
    assert differing_optimizers(params[0], host, params[2], tens) == {}
    assert capt.state[params[1][0]][fmt.key("exp_avg")].dtype == torch.uint8


@pytest.mark.parametrize("backend,fmt", tiered([(b, f) for b in CPU_BACKENDS for f in registry.QUANTIZED],
                                               [("cpu", registry.Q4)]), ids=lambda v: getattr(v, "name", v))
def test_capturable_quantized_states_give_the_host_counted_bits(backend, fmt):
    require(backend)
    _check_quantized_capturable(backend, fmt, "cpu")


def test_tensor_lr_must_be_one_float():
    with pytest.raises(TypeError, match="one floating-point value"):
        AdamWTau(_model().parameters(), lr=torch.tensor([1e-3, 2e-3]))


# --- on a GPU ------------------------------------------------------------------------------------
@pytest.mark.cuda
@pytest.mark.parametrize("backend", CUDA_BACKENDS)
@pytest.mark.parametrize("fmt", [registry.FP32, *registry.QUANTIZED], ids=lambda f: f.name)
def test_gradscaler_on_cuda(backend, fmt):
    _check_gradscaler("cuda", backend, False, fmt)


@pytest.mark.cuda
@pytest.mark.parametrize("backend", CUDA_BACKENDS)
@pytest.mark.parametrize("fmt", registry.QUANTIZED, ids=lambda f: f.name)
def test_capturable_quantized_states_on_cuda(backend, fmt):
    _check_quantized_capturable(backend, fmt, "cuda")


@pytest.mark.cuda
@pytest.mark.parametrize("backend", CUDA_BACKENDS)
@pytest.mark.parametrize("fmt", [registry.FP32, *registry.QUANTIZED], ids=lambda f: f.name)
def test_cuda_graph_replays_bit_identical_to_eager_with_a_scheduler(backend, fmt):
    options = _quantized(fmt) if fmt.quantized else {}
    eager_model, graph_model = _model("cuda", hidden=_hidden(options)), _model("cuda", hidden=_hidden(options))
    kw = dict(tau_iters=40.0, amsgrad=True, backend=backend, capturable=True, **options)
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
