"""The layout's rules hold: no import circles, no import up a layer, no private name imported
across modules (docs/architecture.py, which also draws docs/architecture.png)."""
import importlib.util
import os
from pathlib import Path

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _architecture():
    spec = importlib.util.spec_from_file_location("architecture", os.path.join(ROOT, "docs", "architecture.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_no_circles_no_imports_up_a_layer_no_private_names():
    arch = _architecture()
    assert arch.problems() == []
    assert len(arch.modules()) > 30 and len(arch.edges()) > 50  # the walk found the package


def test_every_module_has_a_layer_and_none_is_too_long():
    arch = _architecture()
    for name, path in arch.modules().items():
        arch.layer_of(path)  # raises for a module outside every layer
        lines = len(Path(path).read_text().splitlines())
        assert lines <= 320, f"{name} has {lines} lines: split it along its jobs"


def test_the_checker_sees_a_planted_upward_import(tmp_path, monkeypatch):
    arch = _architecture()
    real = arch.imports

    def planted(name, path, known):
        out = real(name, path, known)
        if name == "adamw_tau.launch.tables":
            out.append(("adamw_tau.optim.checks", ["_private"]))
        return out
    monkeypatch.setattr(arch, "imports", planted)
    found = arch.problems()
    assert any("a layer above it" in p for p in found) and any("private name _private" in p for p in found)
