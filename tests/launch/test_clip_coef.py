"""The clipping coefficient inside the kernels: every backend multiplies each unscaled gradient
by it (csrc/adamw_math.h update(), the Triton kernel, the reference) and gives the reference's
bits, on every dtype path, with and without a GradScaler, by value and from a tensor."""
import pytest
from required import require
from tiers import tiered
import torch

from adamw_tau.testing import covering, host_body
from adamw_tau.testing.parity import PATHS, SCALAR_MODES, parity_bits

SIZES = [1, 3, 4097, 2048, 5]
BACKENDS = ("cpu", "triton", "cuda_body")
# 0.37: the product rounds; 1.0: a norm below c (the multiply changes nothing); 1e-30: clipped to
# subnormal gradients; 0.0: max_grad_norm=0 (every gradient zero, of its sign)
COEFS = (0.37, 1.0, 1e-30, 0.0)
CASES = [(b, path, scale, coef, mode) for b in BACKENDS for path in PATHS for scale in (None, 3.0)
         for coef in COEFS for mode in SCALAR_MODES]
FAST = [CASES[i] for i in covering.pairwise(
    [dict(backend=c[0], param=str(PATHS[c[1]].param_dtype), state=str(PATHS[c[1]].state_dtype),
          master=str(PATHS[c[1]].master), rounding=PATHS[c[1]].stochastic_rounding, scale=c[2], coef=c[3],
          mode=c[4]) for c in CASES])]


@pytest.fixture(scope="module")
def body(host_body_library):
    return host_body.HostBody(host_body_library)


def _step(backend, request, mode):
    if backend == "cuda_body":
        return request.getfixturevalue("body").step(by_value=mode == "values")
    require(backend, "cpu")
    return backend


@pytest.mark.parametrize("backend,path,scale,coef,mode", tiered(CASES, FAST))
def test_coefficient_bits_equal_reference(request, backend, path, scale, coef, mode):
    step = _step(backend, request, mode)
    assert parity_bits(step, PATHS[path], SIZES, steps=2, grad_scale=scale, grad_coef=coef,
                       scalars=mode if backend != "cuda_body" else "tensor", amsgrad=True) == 0


GPU_CASES = [(b, path, scale, coef) for b in ("triton", "cuda") for path in PATHS for scale in (None, 3.0)
             for coef in COEFS]


@pytest.mark.cuda
@pytest.mark.parametrize("backend,path,scale,coef", GPU_CASES)
def test_coefficient_bits_on_the_gpu(backend, path, scale, coef):
    """The compiled kernels (not the interpreter, not the host build of the body): every case."""
    require(backend, "cuda")
    for mode in SCALAR_MODES:
        assert parity_bits(backend, PATHS[path], SIZES, steps=2, grad_scale=scale, grad_coef=coef, device="cuda",
                           scalars=mode, amsgrad=True) == 0
