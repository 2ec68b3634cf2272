"""The Triton kernel against the reference, 0 bits, under TRITON_INTERPRET=1 on CPU (CI) or on CUDA."""
import os

import pytest
import torch

triton = pytest.importorskip("triton")

from adamw_tau.testing.parity import PATHS, parity_bits  # noqa: E402

SIZES = [1, 3, 1023, 4097, 2048, 5]
INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
DEVICES = (["cpu"] if INTERPRET else []) + ([pytest.param("cuda", marks=pytest.mark.cuda)] if torch.cuda.is_available() else [])
pytestmark = pytest.mark.skipif(not DEVICES, reason="Triton runs on CUDA, or on CPU with TRITON_INTERPRET=1")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("amsgrad,maximize,decay,scale,found_inf", [
    (False, False, "tau", None, None), (True, True, "lambda", 65536.0, 0.0), (False, False, "none", None, None),
    (True, False, "tau", 65536.0, 1.0),  # every step skipped: nothing may change, as in the reference
])
def test_triton_bitwise_equals_reference(device, path, amsgrad, maximize, decay, scale, found_inf):
    assert parity_bits("triton", PATHS[path], SIZES, steps=3, device=device, amsgrad=amsgrad, maximize=maximize,
                       decay=decay, grad_scale=scale, found_inf=found_inf) == 0


@pytest.mark.parametrize("device", DEVICES)
def test_triton_many_tensors_one_launch(device, monkeypatch):
    from adamw_tau.triton_kernels import adamw_fused
    launches = []
    real = adamw_fused.adamw_fused_kernel
    monkeypatch.setattr(adamw_fused, "adamw_fused_kernel",
                        type("Spy", (), {"__getitem__": lambda self, grid: launches.append(grid) or real[grid]})())
    sizes = [(i * 37) % 301 + 1 for i in range(150)]
    assert parity_bits("triton", PATHS["bf16_master"], sizes, steps=2, device=device, amsgrad=True) == 0
    # one launch per step for the tensors the wide path takes (fresh storages are 16-byte
    # aligned, so numel % 8 decides), one for the rest
    classes = {n % 8 == 0 for n in sizes}
    assert len(classes) == 2 and len(launches) == 2 * len(classes)


@pytest.mark.parametrize("device", DEVICES)
def test_triton_table_is_rebuilt_when_storages_change(device):
    from adamw_tau.launch import tables
    tables._PLANNERS.clear()
    assert parity_bits("triton", PATHS["fp32"], [10, 20], steps=3, device=device) == 0
    # fresh gradients every step: a table per distinct set of pointers, never a stale one
    assert 1 <= len(tables._PLANNERS) <= 3


@pytest.mark.cuda
@pytest.mark.slow
def test_triton_tensor_over_2_31_elements():
    from adamw_tau.testing.parity import check_past_2_31
    assert check_past_2_31("triton") == 0
