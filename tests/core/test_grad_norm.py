"""The contract's gradient norm (core/grad_norm.py) and its device form (launch/clipping.py):
against torch's clip_grad_norm_, the exact norm, and each other, bit for bit where promised."""
import math

import pytest
import torch

from adamw_tau.core import grad_norm
from adamw_tau.launch import clipping


def _ulp(x: float) -> float:
    x32 = torch.tensor(abs(x), dtype=torch.float32)
    return (torch.nextafter(x32, torch.tensor(math.inf)) - x32).double().item()


def _grads(seed: int, sizes, dtype=torch.float32, span: float = 2.0):
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randn(n, generator=gen) * 10 ** (torch.rand(1, generator=gen).item() * 2 * span - span))
            .to(dtype) for n in sizes]


SIZE_SETS = [[1], [7, 2048, 2049, 1], [3000, 35, 1 << 20], [1 << 22]]


@pytest.mark.parametrize("sizes", SIZE_SETS, ids=lambda s: f"{len(s)}x{max(s)}")
def test_within_2_ulp_of_torch_in_float64(sizes):
    """clip_grad_norm_ on float64 copies of the gradients (torch's answer without fp32
    accumulation error) and ours agree within 2 fp32 ulp; ours is correctly rounded there."""
    for seed in range(3):
        gs = [g.requires_grad_() for g in _grads(seed, sizes)]
        for g in gs:
            g.grad = g.detach().clone()
        ours = grad_norm.grad_norm([g.grad for g in gs]).item()
        copies = [g.detach().double().requires_grad_() for g in gs]
        for c, g in zip(copies, gs):
            c.grad = g.grad.double()
        theirs = torch.nn.utils.clip_grad_norm_(copies, max_norm=1e30).item()
        assert abs(ours - theirs) <= 2 * _ulp(theirs), (ours, theirs)
        assert abs(ours - theirs) <= 0.5 * _ulp(theirs) * (1 + 1e-6)


def test_within_2_ulp_of_torch_fp32_on_small_gradients():
    """On few elements torch's own fp32 accumulation is within an ulp too."""
    for seed in range(10):
        gs = _grads(seed, [5, 17, 64])
        theirs = torch.nn.utils.get_total_norm(gs).item()
        assert abs(grad_norm.grad_norm(gs).item() - theirs) <= 2 * _ulp(theirs)


def test_range_beyond_fp32_squares():
    """float64 squares: no overflow at 1e19, no underflow at 1e-25 (where fp32 norms say inf and 0)."""
    for value in (1e19, 1e-25, 1e36, 1e-40):
        g = torch.full((4096,), value)
        exact = math.sqrt(4096) * float(torch.tensor(value))
        got = grad_norm.grad_norm([g]).item()
        assert math.isfinite(got) and abs(got - exact) <= 0.5 * _ulp(exact) * (1 + 1e-6)


def test_special_values():
    assert grad_norm.grad_norm([torch.zeros(5), torch.zeros(4097)]).item() == 0.0
    assert grad_norm.grad_norm([torch.zeros(5), -torch.zeros(1)]).view(torch.int32).item() == 0  # +0.0
    assert grad_norm.grad_norm([torch.ones(3), torch.tensor([math.inf])]).item() == math.inf
    assert math.isnan(grad_norm.grad_norm([torch.tensor([math.inf, math.nan]), torch.ones(3)]).item())
    assert math.isnan(grad_norm.grad_norm([torch.tensor([-math.inf]), torch.tensor([math.nan])]).item())
    assert grad_norm.grad_norm([]).item() == 0.0


@pytest.mark.parametrize("max_norm", [1.0, 0.5, 3.7, 1e-3, 0.0, 1e6])
def test_coefficient_is_torchs_bit_for_bit(max_norm):
    """clip_coef against torch's own ops (clamp(max_norm / (norm + 1e-6), max=1)), norms below
    and above max_norm, tiny, zero, inf and NaN."""
    gen = torch.Generator().manual_seed(1)
    norms = torch.cat([torch.rand(3000, generator=gen) * 10, torch.rand(300, generator=gen) * 1e-5,
                       torch.tensor([0.0, math.inf, math.nan, max_norm, 1.0, 0.999999])]).float()
    ours = torch.stack([grad_norm.clip_coef(n, max_norm) for n in norms])
    theirs = torch.clamp(max_norm / (norms + 1e-6), max=1.0)
    assert torch.equal(ours.view(torch.int32), theirs.view(torch.int32))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("scale", [None, 3.0, 65536.0])
def test_device_form_equals_reference(dtype, scale):
    """launch/clipping.py (one buffer a device) gives the reference's bits (a tensor at a time),
    unscaled by a GradScaler's scale first."""
    for seed in range(3):
        gs = _grads(seed, [1, 2047, 2048, 2049, 5000, 3], dtype, span=1.0)
        s = None if scale is None else torch.tensor([scale])
        ours = clipping.total_norm(gs, s)
        ref = grad_norm.grad_norm(gs, s)
        assert torch.equal(ours.view(torch.int32), ref.view(torch.int32))


def test_unscaled_norm_is_the_norm_of_unscaled_gradients():
    gs = _grads(0, [100, 4097])
    scale = torch.tensor([3.0])
    unscaled = [(g.double() / 3.0).float() for g in gs]
    assert torch.equal(grad_norm.grad_norm(gs, scale), grad_norm.grad_norm(unscaled))


def test_tree_sum_order_is_fixed():
    """The tree: halves added pairwise, zero-padded to a power of two (a fixed order, spelled
    out on three values where the order shows: (a + c) + (b + 0) != (a + b) + c)."""
    a, b, c = 1.0, 2.0 ** -53, -1.0
    x = torch.tensor([a, b, c], dtype=torch.float64)
    assert grad_norm.tree_sum(x).item() == (a + c) + (b + 0.0)
    assert (a + c) + b != (a + b) + c


@pytest.mark.cuda
@pytest.mark.parametrize("scale", [None, 3.0])
def test_cuda_norm_has_the_cpu_bits(scale):
    """Element-wise float64 ops on the GPU: the CPU reference's bits, millions of elements included."""
    for seed, sizes in enumerate([[1], [7, 2048, 2049, 1], [3000, 35, 1 << 20], [1 << 24, 5]]):
        gs = _grads(seed, sizes)
        s = None if scale is None else torch.tensor([scale])
        want = grad_norm.grad_norm(gs, s)
        got = clipping.total_norm([g.cuda() for g in gs], None if s is None else s.cuda())
        assert got.device.type == "cuda" and torch.equal(got.cpu().view(torch.int32), want.view(torch.int32))
        for c in (0.05, 1e9):
            assert torch.equal(grad_norm.clip_coef(got, c).cpu().view(torch.int32),
                               grad_norm.clip_coef(want, c).view(torch.int32))
