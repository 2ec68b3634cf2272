"""Randomized parity on a GPU: the Triton and CUDA kernels against the reference, 0 words.

Each case draws a dtype path, amsgrad, maximize, the decay form, a GradScaler scale,
beta1 = 0 and beta2 = 0 among the betas, eps = 0, odd sizes, misaligned storages, and
gradients with zeros of both signs, subnormals and values up to 1e18, over several steps
(the last with zero gradients). Seeded (random.Random), so a failure names its case.
Compiled Triton is not the interpreter: these cases are why this file exists
(docs/numerics.md).
"""
import pytest
import torch

from adamw_tau.launch.backends import availability
from adamw_tau.testing.parity import random_parity

CASES = 60


@pytest.mark.cuda
@pytest.mark.parametrize("backend", ["triton", "cuda"])
def test_random_cases_match_the_reference(backend):
    reason = availability(backend, torch.device("cuda"))
    assert reason is None, f"{backend} must run on this GPU: {reason}"
    failures = []
    for seed in range(CASES):
        cfg, bits = random_parity(backend, "cuda", seed)
        if bits:
            failures.append(f"seed {seed}: {bits} words differ in {cfg}")
    assert not failures, "\n".join(failures)


@pytest.mark.cuda
@pytest.mark.parametrize("backend", ["triton", "cuda"])
def test_maximize_with_a_zero_gradient_keeps_the_sign_of_zero(backend):
    """The H100 repro: compiled Triton's -g gave +0.0 for g = +0.0."""
    from adamw_tau import AdamWTau
    outs = {}
    for name in (backend, "reference"):
        p = torch.nn.Parameter(torch.tensor([1.0, -2.0, 3.0, 0.5], device="cuda"))
        opt = AdamWTau([p], lr=1e-2, betas=(0.0, 0.95), maximize=True, backend=name)
        for g in ([1.0, -1.0, 2.0, -3.0], [0.0, 0.0, 0.0, 0.0]):
            p.grad = torch.tensor(g, device="cuda")
            opt.step()
        st = opt.state[p]
        outs[name] = [t.view(torch.int32).cpu() for t in (p.detach(), st["exp_avg"], st["exp_avg_sq"])]
    for ours, ref in zip(outs[backend], outs["reference"]):
        assert torch.equal(ours, ref)
    assert torch.signbit(outs[backend][1].view(torch.float32)).tolist() == [True, False, True, False]


def _steps(backend, device, path_kw, replace_data_at=3):
    """AdamWTau over misaligned and odd parameters: fresh gradients most steps, the same
    gradient tensors on others (cached tables), and p.data replaced once."""
    from adamw_tau import AdamWTau
    torch.manual_seed(0)
    dtype = path_kw.pop("dtype")
    buf = torch.randn(20_000, device=device).to(dtype)
    params = [torch.nn.Parameter(buf[1:4098]), torch.nn.Parameter(buf[4100:12292]),
              torch.nn.Parameter(torch.randn(33, 65, device=device).to(dtype)),
              torch.nn.Parameter(torch.randn(8, device=device).to(dtype))]
    opt = AdamWTau(params, lr=1e-2, tau_iters=50.0, backend=backend, **path_kw)
    gen = torch.Generator(device=device).manual_seed(1)
    grads = None
    for t in range(6):
        if t % 2 == 0:
            grads = [torch.randn(p.shape, device=device, generator=gen).to(dtype) for p in params]
        for p, g in zip(params, grads):
            p.grad = g
        if t == replace_data_at:
            params[2].data = params[2].data.clone()
        opt.step()
    return [p.detach().clone() for p in params] + [opt.state[p]["exp_avg"].clone() for p in params]


@pytest.mark.parametrize("path_kw", [dict(dtype=torch.float32), dict(dtype=torch.bfloat16, master_weights=True),
                                     dict(dtype=torch.bfloat16, state_dtype=torch.bfloat16, amsgrad=True)],
                         ids=["fp32", "bf16_master", "bf16_states"])
@pytest.mark.cuda
@pytest.mark.parametrize("backend", ["triton", "cuda"])
def test_optimizer_steps_match_the_reference(backend, path_kw):
    ours = _steps(backend, "cuda", dict(path_kw))
    ref = _steps("reference", "cuda", dict(path_kw))
    for a, b in zip(ours, ref):
        assert torch.equal(a.view(torch.int16 if a.element_size() == 2 else torch.int32),
                           b.view(torch.int16 if b.element_size() == 2 else torch.int32))


@pytest.mark.parametrize("path_kw", [dict(dtype=torch.float32), dict(dtype=torch.bfloat16, master_weights=True)],
                         ids=["fp32", "bf16_master"])
def test_optimizer_steps_match_the_reference_on_cpu(path_kw):
    """The same eager path (cached tables, misaligned views, a replaced p.data) with the CPU op, in CI."""
    ours = _steps("cpu", "cpu", dict(path_kw))
    ref = _steps("reference", "cpu", dict(path_kw))
    for a, b in zip(ours, ref):
        assert torch.equal(a.view(torch.int16 if a.element_size() == 2 else torch.int32),
                           b.view(torch.int16 if b.element_size() == 2 else torch.int32))
