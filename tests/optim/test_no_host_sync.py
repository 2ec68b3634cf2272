"""No host synchronisation in step(): torch's sync debug mode set to "error" around the steps
turns any synchronising call (.item(), a blocking copy, nonzero, ...) into an exception.

Claimed in README.md and docs/numerics.md for GradScaler steps (the scale and found_inf read
inside the kernel), device-counted steps (capturable=True, a tensor lr) and plain steps (the
scalars and tables copied from pinned memory). cuda-marked: gpu_check.sh runs it.
"""
import contextlib

import pytest
import torch

from adamw_tau import AdamWTau

BACKENDS = ["triton", "cuda", "reference"]


@contextlib.contextmanager
def sync_is_an_error():
    before = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode(before)


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(64, 33), torch.nn.Tanh(), torch.nn.Linear(33, 8)).cuda()


def _backward(model, t, scaler=None):
    gen = torch.Generator(device="cuda").manual_seed(t)
    x = torch.randn(16, 64, device="cuda", generator=gen)
    loss = model(x).square().mean()
    (scaler.scale(loss) if scaler is not None else loss).backward()


@pytest.mark.cuda
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mode", ["plain", "capturable", "tensor_lr"])
def test_step_never_syncs(backend, mode):
    model = _model()
    kw = dict(tau_iters=50.0, amsgrad=True, backend=backend)
    lr = torch.tensor(1e-3, device="cuda") if mode == "tensor_lr" else 1e-3
    opt = AdamWTau(model.parameters(), lr=lr, capturable=mode == "capturable", **kw)
    _backward(model, 0)
    opt.step()  # the first step builds buckets, states and kernels: not checked
    torch.cuda.synchronize()
    for t in range(1, 5):
        opt.zero_grad()
        _backward(model, t)  # new gradient tensors: the tables are rebuilt on some steps
        with sync_is_an_error():
            opt.step()
    torch.cuda.synchronize()


@pytest.mark.cuda
@pytest.mark.parametrize("backend", BACKENDS)
def test_gradscaler_step_never_syncs(backend):
    model = _model()
    opt = AdamWTau(model.parameters(), lr=1e-3, tau_iters=50.0, backend=backend)
    scaler = torch.amp.GradScaler("cuda", init_scale=2.0 ** 10)
    _backward(model, 0, scaler)
    scaler.step(opt)
    scaler.update()
    torch.cuda.synchronize()
    for t in range(1, 5):
        opt.zero_grad()
        _backward(model, t, scaler)
        if t == 3:
            next(model.parameters()).grad[0, 0] = float("inf")  # a skipped step too
        with sync_is_an_error():
            scaler.step(opt)
        scaler.update()
    torch.cuda.synchronize()
    assert float(opt.state[next(model.parameters())]["step"]) == 4
