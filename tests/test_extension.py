"""The C++ CPU kernel (and, with a GPU, the CUDA kernel) against the reference, 0 bits."""
import shutil
import subprocess

import pytest
import torch

from adamw_tau import extension
from adamw_tau.testing import PATHS, make_bucket, parity_bits
from adamw_tau.contract import host_scalars

SIZES = [1, 3, 1023, 4097, 70_001, 5]


@pytest.fixture(scope="module", autouse=True)
def built():
    reason = extension.unavailable_reason(cuda=False)
    assert reason is None, f"the CPU extension must build in CI: {reason}"


DEVICES = ["cpu"] + ([pytest.param("cuda", marks=pytest.mark.cuda)] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("amsgrad,maximize,decay,scale", [
    (False, False, "tau", None), (True, True, "lambda", 65536.0), (False, False, "none", None),
])
def test_extension_bitwise_equals_reference(device, path, amsgrad, maximize, decay, scale):
    backend = "cuda" if device == "cuda" else "cpu"
    assert parity_bits(backend, PATHS[path], SIZES, steps=3, device=device, amsgrad=amsgrad, maximize=maximize,
                       decay=decay, grad_scale=scale) == 0


def test_many_tensors_cpu():
    sizes = [(i * 53) % 997 + 1 for i in range(300)]
    assert parity_bits("cpu", PATHS["bf16_sr"], sizes, steps=2, amsgrad=True) == 0


def _op_args(path, device="cpu", amsgrad=True):
    b = make_bucket([33, 7], path, amsgrad=amsgrad, device=device, seed=3)
    grads = [torch.randn(t.shape, dtype=t.dtype, device=device) for t in b["params"]]
    s = host_scalars(lr=1e-3, lr_peak=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, step=2, decay_mode="tau",
                     tau_iters=10.0).as_tensor(device)
    return (b["params"], grads, b["exp_avgs"], b["exp_avg_sqs"], b["max_exp_avg_sqs"], b["masters"], s, [0, 1], 9,
            amsgrad, False, path.stochastic_rounding, None, None)


@pytest.mark.parametrize("path", ["fp32", "bf16_master", "bf16_sr"])
def test_opcheck(path):
    from adamw_tau import ops  # noqa: F401  (registers the op)
    torch.library.opcheck(torch.ops.adamw_tau.adamw_step_.default, (*_op_args(PATHS[path]), "cpu"))


def test_triton_op_opcheck():
    pytest.importorskip("triton")
    import os
    if os.environ.get("TRITON_INTERPRET") != "1" and not torch.cuda.is_available():
        pytest.skip("Triton needs CUDA or TRITON_INTERPRET=1")
    from adamw_tau import ops  # noqa: F401
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.library.opcheck(torch.ops.adamw_tau.adamw_step_.default, (*_op_args(PATHS["bf16_sr"], device), "triton"))


@pytest.mark.parametrize("change,words", [
    (lambda a: a.__setitem__(1, a[1][:1]), "same length"),
    (lambda a: a[1].__setitem__(1, a[1][1][:-1].clone()), r"grads\[1\] must be contiguous.*7 elements"),
    (lambda a: a[2].__setitem__(0, a[2][0].double()), r"exp_avgs\[0\]"),
    (lambda a: a[1].__setitem__(0, torch.randn(66)[::2]), "not contiguous"),
])
def test_op_rejects_bad_buckets_before_writing(change, words):
    from adamw_tau import ops  # noqa: F401
    args = list(_op_args(PATHS["fp32"]))
    before = [t.clone() for t in args[0]]
    change(args)
    with pytest.raises(RuntimeError, match=words):
        torch.ops.adamw_tau.adamw_step_(*args, "cpu")
    assert all(torch.equal(a, b) for a, b in zip(args[0], before))


@pytest.mark.skipif(shutil.which("nvcc") is None and extension.toolkit_problem() is not None,
                    reason="no nvcc on this machine")
def test_cuda_sources_compile(tmp_path, monkeypatch):
    """Compile only, with the flags a build gets: a broken .cu file fails CI wherever nvcc is installed."""
    monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", "9.0+PTX")
    from torch.utils.cpp_extension import CUDA_HOME, include_paths
    import os
    import glob
    import sysconfig
    nvcc = shutil.which("nvcc") or os.path.join(CUDA_HOME, "bin", "nvcc")
    dirs = include_paths() + [os.path.join(CUDA_HOME or "", "include"), "/usr/local/cuda/include",
                              os.path.join(os.path.dirname(os.path.realpath(nvcc)), "..", "include")]
    dirs += glob.glob(os.path.join(sysconfig.get_paths()["purelib"], "nvidia", "*", "include"))
    incs = sum((["-I", d] for d in dirs if os.path.isdir(d)), [])
    cmd = [nvcc, "-c", "-o", str(tmp_path / "k.o"), *extension.NVCC_FLAGS, *extension.cuda_arch_flags(), "-I", str(extension.CSRC),
           "-I", sysconfig.get_paths()["include"], *incs, "-D_GLIBCXX_USE_CXX11_ABI=1",
           str(extension.CSRC / "adamw_cuda.cu")]
    out = subprocess.run(cmd, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]


@pytest.mark.cuda
@pytest.mark.slow
def test_cuda_tensor_over_2_31_elements():
    from adamw_tau.testing import check_past_2_31
    assert check_past_2_31("cuda") == 0
