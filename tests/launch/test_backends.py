"""Which backend runs: what ``auto`` picks with the C++ extension built and not built, and a
named backend that cannot run (a build with no code for the GPU in hand) refused before the
first step.

On the CPU the GPU side is mocked at the extension's seams (``is_built``,
``unavailable_reason``, ``kernel_problem``, the op ``cuda_kernel_problem``); the cuda-marked
test at the end builds for another arch on a real GPU.
"""
import os
import subprocess
import sys

import pytest
import torch
from required import require

from adamw_tau import AdamWTau
from adamw_tau.launch import backends, extension
from adamw_tau.launch.backends import BackendUnavailable

GPU = torch.device("cuda", 0)
NO_KERNEL = "the CUDA extension has no kernel for this GPU (sm_100): no kernel image is available"


@pytest.fixture
def gpu(monkeypatch):
    """A CUDA device as backends.resolve sees it: the extension's state is this dict's."""
    state = dict(built=True, reason=None, kernel=None, triton=True)

    def unavailable_reason(cuda):
        if cuda and not state["built"]:
            raise AssertionError("auto asked to load (and so compile) an extension that is not built")
        return state["reason"] if cuda else None

    real = backends.availability
    monkeypatch.setattr(extension, "is_built", lambda cuda: state["built"] if cuda else True)
    monkeypatch.setattr(extension, "unavailable_reason", unavailable_reason)
    monkeypatch.setattr(extension, "kernel_problem", lambda device: state["kernel"])
    monkeypatch.setattr(backends, "availability", lambda name, device: (
        "triton is not installed" if name == "triton" and not state["triton"] else real(name, device)))
    return state


def test_auto_order_is_the_documented_one():
    assert backends.AUTO_ORDER == {"cuda": ("cuda", "triton", "reference"), "cpu": ("cpu", "reference")}


def test_auto_on_cuda_takes_the_cuda_kernel_once_built(gpu):
    assert backends.resolve("auto", GPU) == "cuda"
    assert backends.resolve("cuda", GPU) == "cuda"


def test_auto_on_cuda_takes_triton_until_the_kernel_is_built(gpu):
    gpu["built"] = False  # and never loads it: unavailable_reason(cuda=True) would raise
    assert backends.resolve("auto", GPU) == "triton"
    gpu["triton"] = False
    assert backends.resolve("auto", GPU) == "reference"


def test_auto_on_cuda_without_triton_takes_the_built_kernel(gpu):
    gpu["triton"] = False
    assert backends.resolve("auto", GPU) == "cuda"


def test_a_build_without_code_for_the_gpu_is_refused_before_the_first_step(gpu):
    gpu["kernel"] = NO_KERNEL
    assert backends.resolve("auto", GPU) == "triton"  # auto moves on
    with pytest.raises(BackendUnavailable, match="no kernel for this GPU"):
        backends.resolve("cuda", GPU)  # a named backend says why
    gpu["reason"] = "building the extension failed: nvcc error"
    with pytest.raises(BackendUnavailable, match="nvcc error"):
        backends.resolve("cuda", GPU)


def test_the_optimizer_resolves_its_backend_at_construction(monkeypatch):
    """Where the refusal above happens: in AdamWTau(...) for each device of each group, before
    any step (a step never meets an unusable kernel)."""
    asked = []
    real = backends.resolve
    monkeypatch.setattr(backends, "resolve", lambda name, device: asked.append((name, device)) or real(name, device))
    p = torch.nn.Parameter(torch.ones(3))
    opt = AdamWTau([p], lr=1e-3, backend="reference")
    assert asked == [("reference", torch.device("cpu"))]
    monkeypatch.setattr(backends, "resolve", lambda name, device: (_ for _ in ()).throw(BackendUnavailable(NO_KERNEL)))
    with pytest.raises(BackendUnavailable, match="no kernel"):
        AdamWTau([torch.nn.Parameter(torch.ones(3))], lr=1e-3, backend="cuda")
    assert opt.backend_for("cpu") == "reference"


def test_kernel_problem_reads_the_ops_answer(monkeypatch):
    """extension.kernel_problem: the op's empty string is 'no problem', anything else is the reason."""
    answers = {}
    monkeypatch.setattr(torch.ops.adamw_tau, "cuda_kernel_problem", lambda index: answers[index], raising=False)
    answers[0], answers[1] = "", NO_KERNEL
    assert extension.kernel_problem(torch.device("cuda", 0)) is None
    assert extension.kernel_problem(torch.device("cuda", 1)) == NO_KERNEL


def test_auto_on_cpu_takes_the_cpu_kernel_and_falls_back_without_it(monkeypatch):
    require("cpu")
    cpu = torch.device("cpu")
    assert backends.resolve("auto", cpu) == "cpu"
    assert AdamWTau([torch.nn.Parameter(torch.ones(3))]).backend_for("cpu") == "cpu"
    monkeypatch.setenv("ADAMW_TAU_NO_EXTENSION", "1")
    assert backends.resolve("auto", cpu) == "reference"
    assert AdamWTau([torch.nn.Parameter(torch.ones(3))]).backend_for("cpu") == "reference"
    with pytest.raises(BackendUnavailable, match="ADAMW_TAU_NO_EXTENSION"):
        backends.resolve("cpu", cpu)


def test_auto_on_other_devices_takes_the_reference():
    assert backends.resolve("auto", torch.device("meta")) == "reference"


@pytest.mark.cuda
@pytest.mark.slow
def test_a_build_for_another_arch_is_refused_on_this_gpu(tmp_path):
    """Built (in a fresh extension cache) for an arch that is not this GPU's, with no PTX: the
    named backend is refused with the reason, auto takes Triton. In a subprocess: one process
    registers the op once."""
    major, minor = torch.cuda.get_device_capability()
    arch = "7.0" if major != 7 else "8.0"
    code = ("import torch\n"
            "from adamw_tau.launch import backends\n"
            "d = torch.device('cuda')\n"
            "print('REASON', backends.availability('cuda', d))\n"
            "print('AUTO', backends.resolve('auto', d))\n")
    env = dict(os.environ, TORCH_EXTENSIONS_DIR=str(tmp_path), TORCH_CUDA_ARCH_LIST=arch)
    env.pop("TRITON_INTERPRET", None)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=1200)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = dict(line.split(" ", 1) for line in out.stdout.splitlines() if line.startswith(("REASON", "AUTO")))
    assert f"sm_{major}{minor}" in lines["REASON"] and "no kernel" in lines["REASON"], out.stdout
    assert lines["AUTO"] == "triton", out.stdout
