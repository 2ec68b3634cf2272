"""``import adamw_tau`` costs little over ``import torch``: it imports no heavy module that only
some uses need (DTensor support, trainer frameworks, Triton, plotting). A module-set check, not a
timer, so that it cannot flake on a busy machine. (Constructing any torch optimizer imports
torch._dynamo, and with it DTensor and Triton: that cost is torch's, paid by torch.optim.AdamW too.)"""
import subprocess
import sys

import pytest

# torch.distributed.tensor pulls in sympy (over half a second); the rest are optional frameworks
HEAVY = ("torch.distributed.tensor", "sympy", "transformers", "accelerate", "timm", "lightning", "pytorch_lightning",
         "torchtitan", "triton", "matplotlib")


def _heavy_after(code: str) -> list[str]:
    probe = f"import sys\n{code}\nprint(sorted(m for m in sys.modules if m in {HEAVY!r}))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return eval(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_import_adamw_tau_imports_no_heavy_module():
    assert _heavy_after("import torch\nimport adamw_tau\nfrom adamw_tau import AdamWTau") == []


@pytest.mark.slow
def test_the_probe_sees_a_heavy_import():  # the check above would notice one
    assert _heavy_after("import adamw_tau\nimport torch.distributed.tensor") == ["sympy", "torch.distributed.tensor"]
