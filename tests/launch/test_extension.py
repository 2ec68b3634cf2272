"""The C++ CPU kernel (and, with a GPU, the CUDA kernel) against the reference, 0 bits."""
import re
import shutil
import subprocess

import pytest
import torch
from required import require
from tiers import tiered

from adamw_tau.launch import extension
from adamw_tau.testing.bits import differing_lists
from adamw_tau.testing.cases import FAST_HARD_CASES, HARD_CASES, hard_case
from adamw_tau.testing.parity import PATHS, SCALAR_MODES, SCALE_KEYS, make_bucket, parity_bits
from adamw_tau.core.contract import host_scalars

SIZES = [1, 3, 1023, 4097, 70_001, 5]


@pytest.fixture(scope="module", autouse=True)
def built():
    reason = extension.unavailable_reason(cuda=False)
    assert reason is None, f"the CPU extension must build in CI: {reason}"


DEVICES = ["cpu"] + ([pytest.param("cuda", marks=pytest.mark.cuda)] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("path,case,scalars", tiered(HARD_CASES, FAST_HARD_CASES))
def test_extension_bitwise_equals_reference(device, path, case, scalars):
    backend = "cuda" if device == "cuda" else "cpu"
    assert parity_bits(backend, PATHS[path], SIZES, device=device, scalars=scalars, **hard_case(path, case)) == 0


@pytest.mark.parametrize("scalars", tiered([(m,) for m in SCALAR_MODES], []))  # 13-17 CPU s each
def test_many_tensors_cpu(scalars):
    sizes = [(i * 53) % 997 + 1 for i in range(300)]
    assert parity_bits("cpu", PATHS["bf16_sr"], sizes, steps=2, amsgrad=True, scalars=scalars) == 0


def _op_args(path, device="cpu", amsgrad=True):
    b = make_bucket([33, 7], path, amsgrad=amsgrad, device=device, seed=3)
    grads = [torch.randn(t.shape, dtype=t.dtype, device=device) for t in b["params"]]
    s = host_scalars(lr=1e-3, lr_peak=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, step=2, decay_mode="tau",
                     tau_iters=10.0).as_tensor(device)
    return (b["params"], grads, b["exp_avgs"], b["exp_avg_sqs"], b["max_exp_avg_sqs"], b["masters"], s, [0, 1], 9,
            amsgrad, False, path.stochastic_rounding, None, None)


def _op_call(path, backend, device="cpu"):
    """The op's arguments: the bucket's, the backend, the 8-bit scale lists (empty unless 8-bit)."""
    args = _op_args(path, device)
    b = make_bucket([33, 7], path, amsgrad=True, device=device, seed=3)  # the same seed: the same scales
    scales = [list(b.get(k, [])) for k in SCALE_KEYS.values()]
    if path.quantized:
        args = (*args[:2], b["exp_avgs"], b["exp_avg_sqs"], b["max_exp_avg_sqs"], *args[5:])
    return (*args, backend, *scales)


@pytest.mark.parametrize("path", ["fp32", "bf16_master", "bf16_sr", "fp32_8bit", "bf16_master_8bit"])
def test_opcheck(path):
    from adamw_tau.launch import ops  # noqa: F401  (registers the op)
    torch.library.opcheck(torch.ops.adamw_tau.adamw_step_.default, _op_call(PATHS[path], "cpu"))


def test_triton_op_opcheck():
    device = "cuda" if torch.cuda.is_available() else "cpu"
    require("triton", device)
    from adamw_tau.launch import ops  # noqa: F401
    torch.library.opcheck(torch.ops.adamw_tau.adamw_step_.default, _op_call(PATHS["bf16_sr"], "triton", device))
    torch.library.opcheck(torch.ops.adamw_tau.adamw_step_.default, _op_call(PATHS["fp32_8bit"], "triton", device))


@pytest.mark.parametrize("change,words", [
    (lambda a: a.__setitem__(1, a[1][:1]), "same length"),
    (lambda a: a[1].__setitem__(1, a[1][1][:-1].clone()), r"grads\[1\] must be contiguous.*7 elements"),
    (lambda a: a[2].__setitem__(0, a[2][0].double()), r"exp_avgs\[0\]"),
    (lambda a: a[1].__setitem__(0, torch.randn(66)[::2]), "not contiguous"),
])
def test_op_rejects_bad_buckets_before_writing(change, words):
    from adamw_tau.launch import ops  # noqa: F401
    args = list(_op_args(PATHS["fp32"]))
    before = [t.clone() for t in args[0]]
    change(args)
    with pytest.raises(RuntimeError, match=words):
        torch.ops.adamw_tau.adamw_step_(*args, "cpu", [], [], [])
    assert differing_lists(args[0], before) == 0


NO_NVCC = pytest.mark.skipif(shutil.which("nvcc") is None and extension.toolkit_problem() is not None,
                             reason="no nvcc on this machine")


@pytest.fixture(scope="module")
def cuda_object(tmp_path_factory):
    """csrc/adamw_cuda.cu compiled once (about a minute) with the flags a build gets, for sm_90
    with PTX: (nvcc's result, the object file). The compile and the SASS tests share it."""
    from torch.utils.cpp_extension import CUDA_HOME, include_paths
    import os
    import glob
    import sysconfig
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TORCH_CUDA_ARCH_LIST", "9.0+PTX")
        arch = extension.cuda_arch_flags()
    nvcc = shutil.which("nvcc") or os.path.join(CUDA_HOME, "bin", "nvcc")
    dirs = include_paths() + [os.path.join(CUDA_HOME or "", "include"), "/usr/local/cuda/include",
                              os.path.join(os.path.dirname(os.path.realpath(nvcc)), "..", "include")]
    dirs += glob.glob(os.path.join(sysconfig.get_paths()["purelib"], "nvidia", "*", "include"))
    incs = sum((["-I", d] for d in dirs if os.path.isdir(d)), [])
    obj = tmp_path_factory.mktemp("cuda") / "k.o"
    cmd = [nvcc, "-c", "-o", str(obj), *extension.NVCC_FLAGS, *arch, "-I", str(extension.CSRC),
           "-I", sysconfig.get_paths()["include"], *incs, "-D_GLIBCXX_USE_CXX11_ABI=1",
           str(extension.CSRC / "adamw_cuda.cu")]
    return subprocess.run(cmd, capture_output=True, text=True), obj


@pytest.mark.slow  # full tier: nvcc over the CUDA sources, 150 CPU s measured
@NO_NVCC
def test_cuda_sources_compile(cuda_object):
    """Compile only, with the flags a build gets: a broken .cu file fails CI wherever nvcc is installed."""
    out, _ = cuda_object
    assert out.returncode == 0, out.stderr[-3000:]


def _cuobjdump():
    import os
    from torch.utils.cpp_extension import CUDA_HOME
    nvcc = shutil.which("nvcc")
    candidates = [shutil.which("cuobjdump"), os.path.join(CUDA_HOME or "", "bin", "cuobjdump"),
                  nvcc and os.path.join(os.path.dirname(os.path.realpath(nvcc)), "cuobjdump")]
    try:  # Triton wheels bundle one
        import triton
        candidates.append(os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump"))
    except ImportError:
        pass
    return next((c for c in candidates if c and os.path.isfile(c) and os.access(c, os.X_OK)), None)


# adamw_kernel<P, G, S, AMSGRAD, W> as mangled: Kind F32/BF16/F16 = 0/1/2, Write Plain/Master = 0/1
_KERNEL = re.compile(r"adamw_kernelILNS_4KindE(\d)ELS2_(\d)ELS2_(\d)ELb(\d)ELNS_5WriteE(\d)E")
_SIZE = {"0": 4, "1": 2, "2": 2}


@pytest.mark.slow  # full tier: needs the nvcc object above
@NO_NVCC
def test_cuda_vector_path_is_16_bytes(cuda_object):
    """[note: 16-byte vectors] in csrc/adamw_cuda.cu, read from the sm_90 SASS: the vector path of
    each checked instantiation moves every stream in 16-byte global accesses (LDG/STG.E.128, two
    per fp32 stream when a 16-bit stream sets 8 elements a pass), none in 8 bytes, and no
    instantiation spills. The 4-element kernel fails it: its 16-bit streams moved 8 bytes an
    access (LDG.E.64; before [note: global accesses], generic LD.E.64 and LD.E.128)."""
    out, obj = cuda_object
    assert out.returncode == 0, out.stderr[-3000:]
    tool = _cuobjdump()
    if tool is None:
        pytest.skip("no cuobjdump")
    sass = subprocess.run([tool, "-sass", str(obj)], capture_output=True, text=True, check=True).stdout
    ops, current = {}, None
    for line in sass.splitlines():
        if "Function :" in line:
            found = _KERNEL.search(line)
            current = found.groups() if found else None
            ops.setdefault(current, [])
        elif current is not None:
            ops[current] += re.findall(r"\b(?:LDG|STG|LD|ST)\.E[.\w]*", line)
    # (P, G, S, AMSGRAD, W): the streams a pass loads and stores (w: the fp32 master)
    plain, master = ("pgmv", "pmv"), ("wgmv", "wpmv")
    checked = {("0", "0", "0", "0", "0"): plain, ("1", "1", "1", "0", "0"): plain,
               ("2", "2", "2", "0", "0"): plain, ("1", "1", "0", "0", "1"): master}
    problems = []
    for key, (loaded, stored) in checked.items():
        assert key in ops, f"no SASS for adamw_kernel{key}: mangled names changed? found {sorted(k for k in ops if k)}"
        size = {"p": _SIZE[key[0]], "g": _SIZE[key[1]], "m": _SIZE[key[2]], "v": _SIZE[key[2]], "w": 4}
        vec = 16 // min(size.values())  # elements a pass: 16 bytes of the narrowest stream
        loads, stores = (sum(size[c] * vec // 16 for c in streams) for streams in (loaded, stored))
        got = ops[key]
        # 8-byte data accesses (the table rows are read as LDG.E.64.CONSTANT: not data)
        narrow = sorted({o for o in got if ".64" in o and "CONSTANT" not in o})
        wide = (sum(o.startswith("LDG.E.128") for o in got), sum(o.startswith("STG.E.128") for o in got))
        if narrow or wide[0] < loads or wide[1] < stores:
            problems.append(f"{key}: 8-byte {narrow}, LDG/STG.E.128 {wide} of at least {(loads, stores)}; "
                            f"all: {sorted(set(got))}")
    assert not problems, "\n".join(problems)
    usage = subprocess.run([tool, "-res-usage", str(obj)], capture_output=True, text=True, check=True).stdout
    kernels = re.findall(r"Function (\S*adamw_kernel\S*):\s*\n\s*REG:(\d+) STACK:(\d+) SHARED:\d+ LOCAL:(\d+)", usage)
    assert len(kernels) == sum(1 for k in ops if k), usage[:2000]
    assert all(stack == "0" and local == "0" for _, _, stack, local in kernels), \
        [(_KERNEL.search(n).groups(), stack, local) for n, _, stack, local in kernels if stack != "0" or local != "0"]


@pytest.mark.cuda
@pytest.mark.slow
def test_cuda_tensor_over_2_31_elements():
    from adamw_tau.testing.parity import check_past_2_31
    assert check_past_2_31("cuda") == 0


def test_the_vector_width_is_512_only_on_amd_with_avx512():
    from adamw_tau.launch.extension import preferred_vector_width
    zen4 = "vendor_id\t: AuthenticAMD\nflags\t\t: fpu avx2 avx512f avx512bw\n"
    zen3 = "vendor_id\t: AuthenticAMD\nflags\t\t: fpu avx2\n"
    icelake = "vendor_id\t: GenuineIntel\nflags\t\t: fpu avx2 avx512f avx512bw\n"
    assert preferred_vector_width(zen4) == 512
    assert preferred_vector_width(zen3) == 256
    assert preferred_vector_width(icelake) == 256
    assert preferred_vector_width("") == 256
