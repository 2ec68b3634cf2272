"""The Triton launch runs on the tables' device, not on whichever device is current.

Triton launches on ``torch.cuda.current_device()`` and its current stream; ``launch`` makes
the tables' device current when it is not ([note: device] in adamw_fused.py). The CPU
tests stand a fake current device and ``torch.cuda.device`` in for CUDA's and spy on the
kernel launch: which device was current when the kernel was launched, and whether a guard
was entered. The cuda-marked test steps params on cuda:1 while cuda:0 is current (two
GPUs) and compares the bits with the reference.
"""
from dataclasses import dataclass, field

import pytest
import torch

pytest.importorskip("triton")

from adamw_tau.core.contract import host_scalars  # noqa: E402
from adamw_tau.launch.tables import LaunchTables  # noqa: E402


class _Table:
    """A table on CUDA device ``index`` (-1: the CPU); launch asks it nothing else."""

    def __init__(self, index: int):
        self.index = index

    def get_device(self) -> int:
        return self.index


@dataclass
class _FakeCuda:
    current: int
    entered: list = field(default_factory=list)   # devices made current by torch.cuda.device
    launched_on: list = field(default_factory=list)  # the current device at each kernel launch
    queries: int = 0

    def current_device(self) -> int:
        self.queries += 1
        return self.current

    def device(self, index):
        fake = self

        class Guard:
            def __enter__(self):
                fake.entered.append(index)
                self.prev, fake.current = fake.current, index

            def __exit__(self, *exc):
                fake.current = self.prev
        return Guard()


@pytest.fixture
def fake_cuda(monkeypatch):
    from adamw_tau.triton_kernels import adamw_fused
    fake = _FakeCuda(current=0)
    monkeypatch.setattr(torch.cuda, "current_device", fake.current_device)
    monkeypatch.setattr(torch.cuda, "device", fake.device)

    class Kernel:  # adamw_fused_kernel[grid](...): records the current device, launches nothing
        def __getitem__(self, grid):
            return lambda *args, **kwargs: fake.launched_on.append(fake.current)
    monkeypatch.setattr(adamw_fused, "adamw_fused_kernel", Kernel())
    return fake


def _launch(index: int, device_scalars: bool = False):
    from adamw_tau.triton_kernels import adamw_fused
    table = _Table(index)
    tables = LaunchTables(tensors=table, blocks=table, n_blocks=3, aligned=True, chunk=2048)
    scalars = host_scalars(lr=1e-3, lr_peak=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, step=1, decay_mode="none")
    if device_scalars:
        scalars = torch.zeros(9)
    fp32_states = 0  # the state format's id (formats.registry)
    adamw_fused.launch(tables, scalars, torch.bfloat16, torch.bfloat16, fp32_states, 0, False, False, True, False)


@pytest.mark.parametrize("device_scalars", [False, True])
def test_a_table_on_another_device_is_launched_there(fake_cuda, device_scalars):
    _launch(1, device_scalars)
    assert fake_cuda.launched_on == [1]   # the kernel went to the tables' device (cuda:1) ...
    assert fake_cuda.entered == [1]
    assert fake_cuda.current == 0         # ... and the caller's device is current again after


def test_a_table_on_the_current_device_enters_no_guard(fake_cuda):
    fake_cuda.current = 1
    _launch(1)
    _launch(1)
    assert fake_cuda.launched_on == [1, 1] and fake_cuda.entered == []
    assert fake_cuda.queries == 2  # one device query per launch, nothing more


def test_a_cpu_table_asks_no_cuda_device(fake_cuda):
    """The interpreter: no CUDA device is queried (CPU machines have none) nor entered."""
    _launch(-1)
    assert fake_cuda.launched_on == [0] and fake_cuda.entered == [] and fake_cuda.queries == 0


@pytest.mark.cuda
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
@pytest.mark.parametrize("path", ["fp32", "bf16_states", "bf16_sr", "bf16_master"])
def test_params_on_cuda1_step_while_cuda0_is_current(path):
    from adamw_tau.testing.parity import PATHS, parity_bits
    with torch.cuda.device(0):
        assert parity_bits("triton", PATHS[path], [1, 3, 4096, 4097, 2048], steps=3, device="cuda:1",
                           amsgrad=True, grad_scale=65536.0) == 0
        assert torch.cuda.current_device() == 0


@pytest.mark.cuda
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_optimizer_on_cuda1_with_gradscaler_while_cuda0_is_current():
    """AdamWTau with GradScaler (found_inf, device scalars) on cuda:1; each step's gradients
    are written on cuda:1's current stream behind a sleep, so a kernel on any other stream
    would read them early."""
    from adamw_tau import AdamWTau
    dev = torch.device("cuda:1")
    gen = torch.Generator().manual_seed(0)
    init = [torch.randn(n, generator=gen) for n in (4096, 33, 2048 + 5)]
    grads = [[torch.randn(n.shape, generator=gen) for n in init] for _ in range(4)]
    grads[2][1][3] = float("inf")  # a skipped step
    out = {}
    for backend in ("triton", "reference"):
        params = [torch.nn.Parameter(t.to(dev)) for t in init]
        opt = AdamWTau(params, lr=1e-2, tau_iters=50.0, amsgrad=True, backend=backend)
        opt.grad_scale = torch.tensor(4.0, device=dev)
        with torch.cuda.device(0):
            for gs in grads:
                opt.found_inf = torch.tensor(float(any(not torch.isfinite(g).all() for g in gs)), device=dev)
                with torch.cuda.device(1):
                    torch.cuda._sleep(20_000_000)
                for p, g in zip(params, gs):
                    p.grad = torch.empty_like(p)
                    p.grad.copy_(g * 4.0, non_blocking=True)
                opt.step()
            assert torch.cuda.current_device() == 0
        torch.cuda.synchronize(dev)
        out[backend] = [t.detach().cpu().view(torch.int32) for p in params
                        for t in (p, opt.state[p]["exp_avg"], opt.state[p]["exp_avg_sq"],
                                  opt.state[p]["max_exp_avg_sq"])]
    assert all(torch.equal(a, b) for a, b in zip(out["triton"], out["reference"]))
