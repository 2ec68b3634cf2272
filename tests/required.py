"""A backend a test needs: skipped where it cannot run, but a failure in CI.

In CI (``CI`` set to true, as GitHub Actions and most CI services do) every backend the
machine can run must run: reference, cpu (the C++ extension builds there) and triton (under
TRITON_INTERPRET=1). A failed build or a missing package must fail the run, not leave the
tests passing on the reference alone. Tests whose skip is the point (cuda-marked ones on a
machine without a GPU) do not use this.
"""
from __future__ import annotations

import importlib
import os

import pytest
import torch

from adamw_tau.launch.backends import availability


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def require(backend: str, device: str | torch.device = "cpu") -> None:
    """Skip the calling test unless ``backend`` can run on ``device``; in CI, fail instead."""
    reason = availability(backend, torch.device(device))
    if reason is None:
        return
    message = f"backend {backend!r} cannot run on {device}: {reason}"
    if in_ci():
        pytest.fail(f"{message} (CI=true: every CPU backend must run in CI)", pytrace=False)
    pytest.skip(message)


def require_package(module: str, extra: str):
    """``import module`` for a test of an optional extra, or skip saying how to install it.

    The optional anchors (torchao, bitsandbytes: ``pip install 'adamw-tau[anchors]'``) are left
    out of the test extra on purpose, so CI does not have them either: this skips there too,
    and the skip names the package. What runs without them (a missing package's row says why)
    is tested apart, with the import made to fail."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        pytest.skip(f"{module!r} is not installed ({e}); pip install 'adamw-tau[{extra}]' installs it")
