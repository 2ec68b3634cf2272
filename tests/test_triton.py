"""The Triton kernel against the reference, 0 bits, under TRITON_INTERPRET=1 on CPU (CI) or on CUDA."""
import os

import pytest
import torch

triton = pytest.importorskip("triton")

from adamw_tau.testing import PATHS, parity_bits  # noqa: E402

SIZES = [1, 3, 1023, 4097, 2048, 5]
INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
DEVICES = (["cpu"] if INTERPRET else []) + (["cuda"] if torch.cuda.is_available() else [])
pytestmark = pytest.mark.skipif(not DEVICES, reason="Triton runs on CUDA, or on CPU with TRITON_INTERPRET=1")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("amsgrad,maximize,decay,scale", [
    (False, False, "tau", None), (True, True, "lambda", 65536.0), (False, False, "none", None),
])
def test_triton_bitwise_equals_reference(device, path, amsgrad, maximize, decay, scale):
    assert parity_bits("triton", PATHS[path], SIZES, steps=3, device=device, amsgrad=amsgrad, maximize=maximize,
                       decay=decay, grad_scale=scale) == 0
