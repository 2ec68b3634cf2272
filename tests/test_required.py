"""The guards against quiet fallbacks: a backend that cannot run fails in CI, and a
TRITON_INTERPRET that would switch the Triton tests off is refused."""
import os
import subprocess
import sys

import pytest
import torch
from required import require


def test_an_unavailable_backend_skips_locally_and_fails_in_ci(monkeypatch):
    monkeypatch.setenv("ADAMW_TAU_NO_EXTENSION", "1")  # the cpu backend cannot run
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="ADAMW_TAU_NO_EXTENSION"):
        require("cpu")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true"):
        require("cpu")
    require("reference")  # always runs


@pytest.mark.slow  # full tier: a pytest subprocess, 6 CPU s measured
@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is for machines without a GPU")
def test_conftest_refuses_a_triton_interpret_that_is_not_1():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, TRITON_INTERPRET="0")
    out = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                          os.path.join(root, "tests", "test_required.py")], cwd=root, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode != 0 and "TRITON_INTERPRET='0'" in out.stdout + out.stderr, out.stdout[-2000:]
    assert os.environ.get("TRITON_INTERPRET") == "1"  # and this run has it set
