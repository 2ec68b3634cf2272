"""import adamw_tau (and every integration module) imports no trainer framework; an
integration used without its framework says which extra installs it."""
import subprocess
import sys

import pytest

from frameworks import need

FRAMEWORKS = ("transformers", "accelerate", "timm", "lightning", "pytorch_lightning", "torchtitan")
MODULES = ("adamw_tau", "adamw_tau.integrations", "adamw_tau.integrations.huggingface", "adamw_tau.integrations.timm",
           "adamw_tau.integrations.lightning", "adamw_tau.integrations.torchtitan", "adamw_tau.integrations.dcp")


def test_importing_adamw_tau_and_its_integrations_imports_no_framework():
    code = ("import sys\n" + "".join(f"import {m}\n" for m in MODULES)
            + f"print(sorted(m for m in sys.modules if m.split('.')[0] in {FRAMEWORKS!r}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.slow  # full tier: the probe's own check, 12 CPU s in subprocesses
def test_the_check_sees_an_import():  # the probe above would notice a framework imported at import time
    need("timm")
    code = ("import sys, adamw_tau.integrations.timm as t\nt.register()\n"
            f"print(sorted({{m.split('.')[0] for m in sys.modules}} & {set(FRAMEWORKS)!r}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip().splitlines()[-1] == "['timm']", out.stderr


def test_missing_framework_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # as if not installed
    from adamw_tau.integrations import timm
    with pytest.raises(ImportError, match=r"pip install 'adamw-tau\[timm\]'"):
        timm.register()
