"""The C++ chunk sums (csrc/grad_norm_cpu.cpp) are the torch ops' (core/grad_norm.py) bit for
bit: every gradient dtype, chunk boundaries, a GradScaler's scale, and the values where the
float64 sums earn their keep (huge, tiny, subnormal, inf, NaN); and the clipping step uses them
on the CPU, with the same norm."""
import pytest
import torch

from adamw_tau.core import grad_norm
from adamw_tau.launch import clipping, extension

SIZES = [0, 1, 2047, 2048, 2049, 5000, 70_001]


@pytest.fixture(scope="module", autouse=True)
def built():
    assert extension.unavailable_reason(cuda=False) is None
    extension.load(cuda=False)


def _python_sums(grads, scale):
    """core/grad_norm.py's chunk sums, a gradient at a time (the torch ops)."""
    out = []
    for g in grads:
        flat = g.reshape(-1).to(torch.float64)
        flat = torch.nn.functional.pad(flat, (0, grad_norm.padded_numel(flat.numel()) - flat.numel()))
        out.append(grad_norm.chunk_sums(grad_norm.squares(flat, scale)))
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.float64)


def _hard(n: int, dtype, gen) -> torch.Tensor:
    x = torch.randn(n, generator=gen) * 10 ** (torch.randint(-30, 25, (n,), generator=gen).float())
    special = torch.tensor([0.0, -0.0, 1e19, -3e38, 1e-25, 1e-40, 1e-45, float("inf"), float("nan"), 65504.0])
    pick = torch.randint(0, 8, (n,), generator=gen) == 0  # an eighth of the values special
    x[pick] = special[torch.randint(0, len(special), (int(pick.sum()),), generator=gen)]
    return x.to(dtype)


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and torch.equal(a.view(torch.int64), b.view(torch.int64))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("scale", [None, 3.0, 65536.0, 0.1])
def test_the_kernels_chunk_sums_are_the_torch_ops(dtype, scale):
    gen = torch.Generator().manual_seed(7)
    for hard in (False, True):
        grads = [(_hard(n, dtype, gen) if hard else torch.randn(n, generator=gen).to(dtype)) for n in SIZES]
        s = None if scale is None else torch.tensor([scale])
        got = torch.ops.adamw_tau.chunk_sums(grads, s)
        assert _same(got, _python_sums(grads, s)), (dtype, scale, hard)


def test_shapes_and_strides_flatten_row_major():
    g = torch.randn(300, 70).t()  # not contiguous: flattened as its row-major copy is
    assert _same(torch.ops.adamw_tau.chunk_sums([g], None), _python_sums([g.contiguous()], None))


def test_the_clipping_step_uses_it_on_the_cpu_with_the_same_norm(monkeypatch):
    grads = [torch.randn(n) for n in (5000, 3, 2048)]
    assert clipping._cpu_kernel()
    with_kernel = clipping.total_norm(grads)
    monkeypatch.setattr(clipping, "_cpu_kernel", lambda: False)
    assert torch.equal(clipping.total_norm(grads).view(torch.int32), with_kernel.view(torch.int32))
    calls = []
    monkeypatch.setattr(clipping, "_cpu_kernel", lambda: calls.append(1) or True)
    clipping.total_norm(grads)
    assert calls


def test_bad_gradients_are_refused_by_name():
    with pytest.raises(RuntimeError, match="gradient 1 is Double"):
        torch.ops.adamw_tau.chunk_sums([torch.zeros(3), torch.zeros(3, dtype=torch.float64)], None)
    with pytest.raises(RuntimeError, match="one value"):
        torch.ops.adamw_tau.chunk_sums([torch.zeros(3)], torch.ones(2))


def test_the_chunk_is_the_contracts():
    src = (extension.CSRC / "grad_norm_cpu.cpp").read_text()
    assert f"constexpr int64_t kChunk = {grad_norm.CHUNK};" in src
