"""What the integration tests share: the framework check and the recipes of docs/integrations.md.

Under CI=true a missing framework FAILS the test: CI installs every framework (the test extra
includes them), so a skip there would hide a broken install. Elsewhere it skips.
"""
from __future__ import annotations

import importlib
import os
import pathlib
import re

import pytest
import torch

DOC = pathlib.Path(__file__).resolve().parents[2] / "docs" / "integrations.md"


def need(module: str):
    """``import module``; a missing one fails under CI=true and skips elsewhere.

    Called at a test module's top, a failure is a collection error: pytest stops and exits
    non-zero, naming the module that is missing.
    """
    try:
        return importlib.import_module(module)
    except ImportError as e:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true and {module!r} is not installed ({e}); the test extra must install it",
                        pytrace=False)
        pytest.skip(f"{module!r} is not installed (pip install -e '.[test]' installs it)", allow_module_level=True)


def recipe(name: str) -> str:
    """The python block after ``<!-- recipe: name -->`` in docs/integrations.md."""
    text = DOC.read_text()
    found = re.findall(r"<!-- recipe: " + re.escape(name) + r" -->\s*```python\n(.*?)```", text, re.S)
    assert len(found) == 1, f"docs/integrations.md should hold exactly one recipe {name!r}, found {len(found)}"
    return found[0]


def run_recipe(name: str, **given) -> dict:
    """Run a recipe with the names it is given; its namespace afterwards."""
    namespace = dict(given)
    exec(compile(recipe(name), f"docs/integrations.md:{name}", "exec"), namespace)
    return namespace


def bits(t: torch.Tensor) -> torch.Tensor:
    """An int view of a tensor's bits (bitwise comparisons never use allclose or torch.equal on floats)."""
    t = t.detach()
    if hasattr(t, "full_tensor"):
        t = t.full_tensor()
    t = t.contiguous().cpu()
    return t.view({1: torch.int8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()]).clone()


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and bool((bits(a) == bits(b)).all())


def optimizer_tensors(opt) -> dict[str, torch.Tensor]:
    """Every state tensor, keyed 'parameter index/state name'."""
    return {f"{i}/{k}": v for i, st in opt.state_dict()["state"].items() for k, v in st.items()
            if isinstance(v, torch.Tensor)}


@pytest.fixture
def launch_per_tensor(monkeypatch):
    """The step inside backward launched from each parameter's own hook, no bucket waiting for
    others: a tiny model's gradients would otherwise all wait for opt.step(), and a test would
    check only the step's finishing part."""
    from adamw_tau.optim import step_in_backward
    monkeypatch.setattr(step_in_backward, "BUCKET_NUMEL", 0)


def freed_in_backward(model: torch.nn.Module) -> list[bool]:
    """A hook on every parameter, registered after the optimizer's (hooks run in the order they
    were registered): whether its gradient was already stepped and freed there, one entry a
    parameter a backward."""
    seen: list[bool] = []
    for p in model.parameters():
        if p.requires_grad:
            p.register_post_accumulate_grad_hook(lambda p: seen.append(p.grad is None))
    return seen
