"""GPU parity for the dtype combinations torch users get by default and that the path table
does not name: fp16 params with fp16 states (torch's choice for fp16 params), and 16-bit
params with fp32 gradients (autocast or a grad hook). Every state word is compared.

cuda-marked: bench/gpu_check.sh runs them. The same steps run on the CPU with the cpu
backend in test_cpu_runs_the_same_steps, so the cases themselves are checked in CI."""
import pytest
import torch

from adamw_tau import AdamWTau

CASES = {
    "fp16_states": dict(dtype=torch.float16, grad_dtype=torch.float16, kw=dict()),
    "fp16_states_sr": dict(dtype=torch.float16, grad_dtype=torch.float16, kw=dict(stochastic_rounding=True)),
    "bf16_fp32_grads": dict(dtype=torch.bfloat16, grad_dtype=torch.float32, kw=dict(state_dtype=torch.float32)),
    "fp16_fp32_grads_master": dict(dtype=torch.float16, grad_dtype=torch.float32, kw=dict(master_weights=True)),
    "bf16_fp32_grads_sr": dict(dtype=torch.bfloat16, grad_dtype=torch.float32,
                               kw=dict(stochastic_rounding=True, amsgrad=True)),
}


def _run(backend, device, case):
    torch.manual_seed(0)
    dtype, gdtype = case["dtype"], case["grad_dtype"]
    buf = torch.randn(9_000, device=device).to(dtype)
    params = [torch.nn.Parameter(buf[1:4098]), torch.nn.Parameter(torch.randn(33, 65, device=device).to(dtype)),
              torch.nn.Parameter(torch.randn(8, device=device).to(dtype))]
    opt = AdamWTau(params, lr=1e-2, tau_iters=50.0, backend=backend, seed=7, **case["kw"])
    assert opt.state == {} and all(p.dtype == dtype for p in params)
    gen = torch.Generator(device=device).manual_seed(1)
    for t in range(4):
        for p in params:
            if gdtype != p.dtype:
                p.grad_dtype = None  # torch lets a 16-bit param take an fp32 gradient only when asked
            p.grad = (torch.randn(p.shape, device=device, generator=gen) * 10 ** (t - 2)).to(gdtype)
            assert p.grad.dtype == gdtype
        opt.step()
    out = [p.detach().clone() for p in params]
    for p in params:
        st = opt.state[p]
        out += [st[k].clone() for k in sorted(st) if k != "step"]
    return out


def _differing(a, b):
    bad = 0
    for x, y in zip(a, b):
        assert x.dtype == y.dtype and x.shape == y.shape
        w = torch.int32 if x.element_size() == 4 else torch.int16
        bad += int((x.view(w) != y.view(w)).sum())
    return bad


@pytest.mark.cuda
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("backend", ["triton", "cuda"])
def test_gpu_backends_match_the_reference(backend, case):
    ours = _run(backend, "cuda", CASES[case])
    ref = _run("reference", "cuda", CASES[case])
    assert len(ours) == len(ref) and _differing(ours, ref) == 0


@pytest.mark.parametrize("case", CASES)
def test_cpu_runs_the_same_steps(case):
    ours = _run("cpu", "cpu", CASES[case])
    ref = _run("reference", "cpu", CASES[case])
    assert len(ours) == len(ref) and _differing(ours, ref) == 0
