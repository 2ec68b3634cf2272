import os

import pytest
import torch

# Without a GPU, Triton kernels run in its interpreter (NumPy on CPU, IEEE fp32): set before
# any kernel module is imported, since triton.jit reads it at decoration time.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from adamw_tau.testing.parity import hard_values  # noqa: F401  (re-exported for tests)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)
