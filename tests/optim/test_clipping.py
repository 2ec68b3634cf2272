"""AdamWTau(max_grad_norm=c): torch's clip_grad_norm_ inside the step.

The step's bits are those of clipping the gradients first with our norm and torch's
coefficient (``torch.nn.utils.clip_grads_with_norm_``) and stepping without clipping, on every
backend, state format and master form (a covering set in the fast tier); the training loss
of TinyGPT follows torch's clip + AdamW within rounding; a GradScaler's scale is taken off
first; a step whose norm is not finite changes no bit; bad values raise before any write."""
import copy
import math
import pickle

import pytest
import torch
from required import require
from tiers import tiered

from adamw_tau import AdamWTau
from adamw_tau.core import grad_norm
from adamw_tau.experiments.lm.tiny_gpt import TinyGPT
from adamw_tau.formats import registry
from adamw_tau.testing import covering
from adamw_tau.testing.bits import differing_lists, differing_optimizers

BACKENDS = ("reference", "cpu", "triton")
# (param dtype, options): the state formats and master forms; every quantized format of the
# registry with fp32 params and with a bf16 param's remainder master
FORMATS = {
    "fp32": (torch.float32, {}),
    "fp32_bf16_states": (torch.float32, dict(state_dtype=torch.bfloat16)),
    "bf16_master": (torch.bfloat16, dict(master_weights=True)),
    "bf16_states": (torch.bfloat16, {}),
    "bf16_stochastic": (torch.bfloat16, dict(stochastic_rounding=True, seed=7)),
    "fp16_master_amsgrad": (torch.float16, dict(master_weights=True, amsgrad=True)),
    **{f"fp32_{f.option}": (torch.float32, dict(state_dtype=f.option, min_quantized_numel=0))
       for f in registry.QUANTIZED},
    **{f"bf16_remainder_{f.option}": (torch.bfloat16, dict(master_weights="remainder", state_dtype=f.option,
                                                           min_quantized_numel=0))
       for f in registry.QUANTIZED},
}
MAX_NORMS = (0.05, 1e4)  # clipped every step; never clipped (coefficient 1)
CASES = [(b, f, c, cap) for b in BACKENDS for f in FORMATS for c in MAX_NORMS for cap in (False, True)]
FAST = [CASES[i] for i in covering.pairwise(
    [dict(backend=c[0], dtype=str(FORMATS[c[1]][0]), options=str(sorted(FORMATS[c[1]][1])),
          state=str(FORMATS[c[1]][1].get("state_dtype")), c=c[2], cap=c[3])
     for c in CASES], singles=())]


def _model(dtype=torch.float32):
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(40, 300), torch.nn.Tanh(), torch.nn.Linear(300, 7)).to(dtype)


def _grads(model, t, scale=1.0):
    gen = torch.Generator().manual_seed(t)
    return [(torch.randn(p.shape, generator=gen) * scale).to(p.dtype) for p in model.parameters()]


@pytest.mark.parametrize("backend,fmt,max_norm,capturable", tiered(CASES, FAST))
def test_step_equals_torch_clip_then_step(backend, fmt, max_norm, capturable):
    """Clipping inside the step == clip_grads_with_norm_ (our norm) then an unclipped step. For
    bf16/fp16 params the unclipped run gets fp32 gradients (the kernels multiply in fp32: torch
    would round the clipped gradient to the param's dtype, docs/numerics.md)."""
    require(backend)
    dtype, options = FORMATS[fmt]
    ours_model, theirs_model = _model(dtype), _model(dtype)
    kw = dict(lr=1e-2, tau_iters=50.0, backend=backend, capturable=capturable, **options)
    ours = AdamWTau(ours_model.parameters(), max_grad_norm=max_norm, **kw)
    theirs = AdamWTau(theirs_model.parameters(), **kw)
    for p in theirs_model.parameters():
        p.grad_dtype = torch.float32
    for t in range(3):
        grads = _grads(ours_model, t)
        for p, g in zip(ours_model.parameters(), grads):
            p.grad = g.clone()
        ours.step()
        norm = grad_norm.grad_norm(grads)
        for p, g in zip(theirs_model.parameters(), grads):
            p.grad = g.float()
        torch.nn.utils.clip_grads_with_norm_(list(theirs_model.parameters()), max_norm, norm)
        theirs.step()
        assert torch.equal(ours.grad_norm, norm)
        clipped = float(norm) > max_norm
        assert clipped == (max_norm < 1)
    assert differing_optimizers(list(ours_model.parameters()), ours, list(theirs_model.parameters()), theirs) == {}


def test_grad_norm_is_clip_grad_norm_s_value():
    """opt.grad_norm: the norm before clipping, as clip_grad_norm_ returns it (within 2 ulp:
    torch's fp32 sums), a tensor on the parameters' device."""
    model = _model()
    opt = AdamWTau(model.parameters(), lr=1e-3, max_grad_norm=1.0)
    assert math.isnan(float(opt.grad_norm)) and AdamWTau(model.parameters()).grad_norm is None
    holder = opt.grad_norm
    for t in range(3):
        for p, g in zip(model.parameters(), _grads(model, t)):
            p.grad = g
        theirs = torch.nn.utils.get_total_norm([p.grad for p in model.parameters()])
        opt.step()
        assert opt.grad_norm is holder and opt.grad_norm.dtype == torch.float32  # written in place
        ulp = math.ulp(float(theirs)) * 2 ** 29  # an fp32 ulp
        assert abs(float(opt.grad_norm) - float(theirs)) <= 2 * ulp


def _tiny_gpt_losses(clip_inside: bool, steps: int = 12):
    torch.manual_seed(0)
    model = TinyGPT(width=32, layers=1, ctx=8, head_dim=16)
    if clip_inside:
        opt = AdamWTau(model.parameters(), lr=3e-3, weight_decay=0.1, max_grad_norm=0.5, backend="cpu")
    else:
        opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.1)
    losses, norms = [], []
    for t in range(steps):
        xy = torch.randint(0, 256, (4, 9), generator=torch.Generator().manual_seed(t))
        opt.zero_grad()
        loss = model.loss(xy)
        loss.backward()
        if not clip_inside:
            norms.append(float(torch.nn.utils.clip_grad_norm_(model.parameters(), 0.5)))
        opt.step()
        if clip_inside:
            norms.append(float(opt.grad_norm))
        losses.append(loss.item())
    return losses, norms


def test_tiny_gpt_loss_follows_torch_clip_and_adamw():
    """Clipping is active (the norm is above 0.5 at every step) and the losses agree within
    rounding: the two differ in the norm's last bits and in fp32 rounding of the update."""
    require("cpu")
    (ours, our_norms), (theirs, their_norms) = _tiny_gpt_losses(True), _tiny_gpt_losses(False)
    for a, b in zip(ours, theirs):
        assert a == pytest.approx(b, rel=1e-5, abs=1e-6)
    assert min(our_norms) > 0.5
    assert our_norms == pytest.approx(their_norms, rel=1e-5)


def _bad_step(opt, model, poison):
    for p, g in zip(model.parameters(), _grads(model, 0)):
        p.grad = g
    opt.step()
    before = [p.clone() for p in model.parameters()], copy.deepcopy(opt.state_dict())
    for p, g in zip(model.parameters(), _grads(model, 1)):
        p.grad = g
    poison(model)
    opt.step()
    after = opt.state_dict()
    assert differing_lists(before[0], list(model.parameters())) == 0
    for i, st in before[1]["state"].items():
        for k, v in st.items():
            assert differing_lists([v], [after["state"][i][k]]) == 0, (i, k)


@pytest.mark.parametrize("value", [math.inf, math.nan], ids=["inf", "nan"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_non_finite_norm_skips_the_step(backend, value):
    require(backend)
    model = _model()
    opt = AdamWTau(model.parameters(), lr=1e-2, tau_iters=50.0, backend=backend, max_grad_norm=1.0)

    def poison(m):
        m[0].weight.grad[3, 4] = value
    _bad_step(opt, model, poison)
    assert (math.isnan(float(opt.grad_norm)) if value != value else float(opt.grad_norm) == math.inf)
    assert all(float(s["step"]) == 1.0 for s in opt.state.values())


def _batch(t):
    gen = torch.Generator().manual_seed(t)
    return torch.randn(16, 40, generator=gen), torch.randn(16, 7, generator=gen)


@pytest.mark.parametrize("scale", [4096.0, 3.0])
def test_gradscaler_norm_is_of_the_unscaled_gradients(scale):
    """With a GradScaler: the norm of the unscaled gradients, as scaler.unscale_ then
    clip_grad_norm_ give it, and the step of those gradients clipped. The run without the scaler
    unscales by a correct division, as the kernel does (GradScaler multiplies by 1/scale, which
    rounds for a scale not a power of two). A step with an inf gradient is skipped."""
    require("cpu")
    bad = {2}
    model, plain_model = _model(), _model()
    opt = AdamWTau(model.parameters(), lr=1e-2, tau_iters=50.0, backend="cpu", max_grad_norm=0.05)
    plain = AdamWTau(plain_model.parameters(), lr=1e-2, tau_iters=50.0, backend="cpu", capturable=True)
    scaler = torch.amp.GradScaler("cpu", init_scale=scale, growth_interval=1000)
    for t in range(4):
        x, y = _batch(t)
        opt.zero_grad()
        scaler.scale(((model(x) - y) ** 2).mean()).backward()
        if t in bad:
            model[2].bias.grad[0] = math.inf
        used = scaler.get_scale()
        scaled = [p.grad.clone() for p in model.parameters()]
        scaler.step(opt)
        scaler.update()
        if t in bad:
            assert float(opt.grad_norm) == math.inf
            continue
        unscaled = [(g.double() / used).float() for g in scaled]
        norm = grad_norm.grad_norm(unscaled)
        assert torch.equal(opt.grad_norm, norm) and float(norm) > 0.05
        for p, g in zip(plain_model.parameters(), unscaled):
            p.grad = g
        torch.nn.utils.clip_grads_with_norm_(list(plain_model.parameters()), 0.05, norm)
        plain.step()
    assert differing_optimizers(list(model.parameters()), opt, list(plain_model.parameters()), plain) == {}
    assert all(float(s["step"]) == 3.0 for s in opt.state.values())


def test_zero_grad_scale_gives_a_nan_norm_and_skips():
    require("cpu")
    model = _model()
    opt = AdamWTau(model.parameters(), lr=1e-2, backend="cpu", max_grad_norm=1.0)

    def poison(m):
        opt.grad_scale = torch.zeros(1)  # as a GradScaler at scale 0 would hand it over
        for p in m.parameters():
            p.grad.zero_()
    _bad_step(opt, model, poison)
    assert math.isnan(float(opt.grad_norm))
    del opt.grad_scale


@pytest.mark.parametrize("value,error", [("1.0", TypeError), (True, TypeError), (-1.0, ValueError),
                                         (math.inf, ValueError), (math.nan, ValueError),
                                         (torch.tensor(1.0), TypeError)])
def test_bad_max_grad_norm_raises(value, error):
    with pytest.raises(error, match="max_grad_norm"):
        AdamWTau(_model().parameters(), max_grad_norm=value)


def test_step_in_backward_and_clipping_refused():
    with pytest.raises(ValueError, match="max_grad_norm needs every gradient"):
        AdamWTau(_model().parameters(), max_grad_norm=1.0, step_in_backward=True)


def test_max_grad_norm_survives_pickle_and_deepcopy():
    opt = AdamWTau(_model().parameters(), max_grad_norm=0.25)
    for other in (pickle.loads(pickle.dumps(opt)), copy.deepcopy(opt)):
        assert other._max_grad_norm == 0.25


def _cuda_run(backend, device, capturable=False, graph=False, steps=4):
    """A clipping run on ``device``; with ``graph``, steps 3.. replayed from a CUDA graph."""
    model = _model().to(device)
    opt = AdamWTau(model.parameters(), lr=1e-2, tau_iters=50.0, backend=backend, max_grad_norm=0.05,
                   capturable=capturable, amsgrad=True)
    params = list(model.parameters())
    static = [torch.zeros_like(p) for p in params]
    norms, captured = [], None
    for t in range(steps):
        for s, g in zip(static, _grads(model, t)):
            s.copy_(g)
        if graph and t >= 2:
            if captured is None:
                captured = torch.cuda.CUDAGraph()
                with torch.cuda.graph(captured):
                    opt.step()
            captured.replay()
        else:
            for p, s in zip(params, static):
                p.grad = s
            opt.step()
        norms.append(opt.grad_norm.clone())
    return model, opt, norms


@pytest.mark.cuda
@pytest.mark.parametrize("backend", ["triton", "cuda"])
def test_gpu_clipping_has_the_cpu_reference_bits(backend):
    require(backend, "cuda")
    gpu_model, gpu_opt, gpu_norms = _cuda_run(backend, "cuda", capturable=True)
    cpu_model, cpu_opt, cpu_norms = _cuda_run("reference", "cpu", capturable=True)
    assert all(torch.equal(a.cpu(), b) for a, b in zip(gpu_norms, cpu_norms))
    assert differing_lists([p.cpu() for p in gpu_model.parameters()], list(cpu_model.parameters())) == 0


@pytest.mark.cuda
@pytest.mark.parametrize("backend", ["triton", "cuda"])
def test_clipping_step_replays_from_a_cuda_graph(backend):
    """capturable=True: the norm, coefficient and step captured once, replayed on new gradients
    written into the same tensors, give the eager bits."""
    require(backend, "cuda")
    eager_model, eager_opt, eager_norms = _cuda_run(backend, "cuda", capturable=True)
    graph_model, graph_opt, graph_norms = _cuda_run(backend, "cuda", capturable=True, graph=True, steps=4)
    torch.cuda.synchronize()
    assert all(torch.equal(a, b) for a, b in zip(eager_norms, graph_norms))
    assert differing_optimizers(list(eager_model.parameters()), eager_opt, list(graph_model.parameters()),
                                graph_opt) == {}
