"""What the quantized CUDA kernel (csrc/adamw_quant_kernel.h) loads and stores, read from its
sm_90 PTX and ptxas's report, on any machine with nvcc (no GPU, no cuobjdump: nvcc -ptx and
ptxas -v are enough).

[note: lane accesses] in the header: a lane moves each stream's run (8 codes of 8-bit, 2 bytes
of 4-bit codes, 8 or 4 params and gradients) in whole accesses, the one place being
lane_load / lane_store, which emit ld.global.ca / st.global.wb; nothing else in the kernel does.
So the PTX must hold exactly the lane accesses the streams of each variant need, at the widths
their runs give (16 bytes: v4.u32; 8: v2.u32; 4: u32; 2: u16). The byte-load kernel before
them had none (it moved 8-bit codes a byte at a time: 40 LDG.E.U8 in its SASS). ptxas must
spill nothing ([note: quantized registers]), and no kernel, nor a probe of a * b + c compiled
with the same flags, may contain an FMA ([note: bitwise] in csrc/adamw_cuda.cu).

The kernels are compiled from a small translation unit without ATen: a chosen set in the fast
tier (about 3 s of nvcc and ptxas on the 2-core machine), and in the full tier every
quantized kernel adamw_cuda.cu instantiates, through the same dispatch (68: about 23 s).
"""
from __future__ import annotations

import collections
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from adamw_tau.formats import registry
from adamw_tau.launch import extension

# adamw_quant_kernel<C, P, G, AMSGRAD, W> as mangled: Kind F32/BF16/F16 = 0/1/2, Write
# Plain/Master/Stochastic/Remainder = 0/1/2/3
_KERNEL = re.compile(r"adamw_quant_kernelINS_7(Q\d)CodecELNS_4KindE(\d)ELS3_(\d)ELb(\d)ELNS_5WriteE(\d)E")
_SIZE = {0: 4, 1: 2, 2: 2}
_KIND = {0: "Kind::F32", 1: "Kind::BF16", 2: "Kind::F16"}
_WRITE = {0: "Write::Plain", 1: "Write::Master", 2: "Write::Stochastic", 3: "Write::Remainder"}
_FORMAT = {"Q8": registry.Q8, "Q4": registry.Q4}
_WIDTH = {16: "v4.u32", 8: "v2.u32", 4: "u32", 2: "u16"}  # the PTX of a lane access of that many bytes

# (codec, P, G, AMSGRAD, W) for the fast tier: every codec, param kind, write form and amsgrad
CHOSEN = [("Q8", 0, 0, 0, 0), ("Q8", 1, 1, 1, 1), ("Q8", 1, 1, 0, 3), ("Q8", 2, 2, 0, 2), ("Q4", 0, 0, 0, 0),
          ("Q4", 1, 0, 1, 1), ("Q4", 1, 1, 0, 3)]

PROBE = """
// -fmad=false must keep this a multiply and an add (the build's flags, tested)
__global__ void fmad_probe(float* x) { x[0] = x[1] * x[2] + x[3]; }
"""
EVERY = """
// every quantized kernel adamw_cuda.cu instantiates, through the same dispatch (launch_cuda)
void launch_every_quantized_kernel(const LaunchArgs& b) {
  dispatch_kinds(b, [&]<Kind P, Kind G, Kind S>() {
    dispatch_flags<P>(b, [&]<bool A, Write W>() {
      if constexpr (is_quantized(S))
        adamw_quant_kernel<typename CodecOf<S>::type, P, G, A, W><<<1, kQ8Threads>>>(
            b.tensors, b.blocks, b.chunk, nullptr, Scalars{}, nullptr, nullptr, b.seed, b.maximize, nullptr);
    });
  });
}
"""


def _nvcc() -> str | None:
    from torch.utils.cpp_extension import CUDA_HOME
    found = shutil.which("nvcc") or (CUDA_HOME and os.path.join(CUDA_HOME, "bin", "nvcc"))
    return found if found and os.path.exists(found) else None


NO_NVCC = pytest.mark.skipif(_nvcc() is None, reason="no nvcc on this machine")


def _source(variants) -> str:
    head = '#include "adamw_quant_kernel.h"\nusing namespace adamw_tau;\n' + PROBE
    if variants is None:
        return head + EVERY
    refs = ",\n".join(f"  (void*)&adamw_quant_kernel<{c}Codec, {_KIND[p]}, {_KIND[g]}, {'true' if a else 'false'}, "
                      f"{_WRITE[w]}>" for c, p, g, a, w in variants)
    return head + f"void* chosen_kernels[] = {{\n{refs}\n}};\n"


def compile_ptx(folder: Path, variants=None) -> Path:
    """nvcc -ptx for sm_90 with the build's flags (extension.NVCC_FLAGS), then ptxas -v; returns
    the PTX, with ptxas's report beside it (``.ptxas``). ``variants`` None: every kernel."""
    nvcc = _nvcc()
    ptxas = os.path.join(os.path.dirname(os.path.realpath(nvcc)), "ptxas")
    src = folder / "quant_kernels.cu"
    src.write_text(_source(variants))
    ptx = folder / "quant_kernels.ptx"
    subprocess.run([nvcc, "-ptx", *extension.NVCC_FLAGS, "-arch=sm_90", "-I", str(extension.CSRC), "-o", str(ptx),
                    str(src)], capture_output=True, text=True, check=True)
    report = subprocess.run([ptxas if os.path.exists(ptxas) else "ptxas", "-v", "-arch=sm_90", "-o",
                             str(folder / "quant_kernels.cubin"), str(ptx)], capture_output=True, text=True,
                            check=True)
    (folder / "quant_kernels.ptxas").write_text(report.stdout + report.stderr)
    return ptx


def kernel_bodies(ptx: str):
    """(codec, P, G, AMSGRAD, W), PTX text of each quantized kernel's entry."""
    for entry in re.finditer(r"\.entry (\S+)\((.*?)\n\}\n", ptx, re.S):
        found = _KERNEL.search(entry.group(1))
        if found:
            yield (found.group(1), *map(int, found.groups()[1:])), entry.group(0)


def lane_accesses(ptx: str) -> dict:
    """{(codec, P, G, AMSGRAD, W): Counter of the lane accesses' PTX ("ld v2.u32": n, ...)}."""
    out = {}
    for key, body in kernel_bodies(ptx):
        ops = re.findall(r"\b(ld\.global\.ca|st\.global\.wb)\.([.\w]+)", body)
        out[key] = collections.Counter(f"{op[:2]} {width}" for op, width in ops)
    return out


def expected_accesses(key) -> collections.Counter:
    """The lane accesses a variant needs: each stream's run of a lane in accesses of min(16, run)."""
    codec, p, g, amsgrad, w = key
    fmt = _FORMAT[codec]
    per_lane = fmt.block // 32
    code_run = per_lane * fmt.codec.BITS // 8
    p_run, g_run, f32_run, rem_run = per_lane * _SIZE[p], per_lane * _SIZE[g], per_lane * 4, per_lane * 2
    loaded = [f32_run if w == 1 else p_run, g_run] + [code_run] * (3 if amsgrad else 2) + ([rem_run] if w == 3 else [])
    stored = [p_run] + [code_run] * (3 if amsgrad else 2) + ([f32_run] if w == 1 else []) + \
        ([rem_run] if w == 3 else [])
    out = collections.Counter()
    for op, runs in (("ld", loaded), ("st", stored)):
        for run in runs:
            width = min(16, run)
            out[f"{op} {_WIDTH[width]}"] += run // width
    return out


def search_reads(ptx: str) -> dict:
    """{(codec, ...): (shared loads, the staged tables read, the threshold table read)} per kernel."""
    return {key: (len(re.findall(r"\bld\.shared\.", body)), "kQ8SearchTablesDevice" in body,
                  bool(re.search(r"kQ8(Signed|Unsigned)ThresholdsDevice", body)))
            for key, body in kernel_bodies(ptx)}


def _check(ptx_path: Path, keys) -> None:
    ptx = ptx_path.read_text()
    # [note: the kernel's search]: the 8-bit kernels stage the octave tables and count from
    # shared memory, never reading the threshold table; the 4-bit ones keep their own search
    for key, (shared_loads, staged, thresholds) in search_reads(ptx).items():
        if key[0] == "Q8":
            assert staged and shared_loads > 0 and not thresholds, (key, shared_loads, staged, thresholds)
        else:
            assert not staged and shared_loads == 0, (key, shared_loads, staged)
    got = lane_accesses(ptx)
    assert set(keys) <= set(got), f"no PTX for {sorted(set(keys) - set(got))}: mangled names changed?"
    wrong = {k: (dict(got[k]), dict(expected_accesses(k))) for k in keys if got[k] != expected_accesses(k)}
    assert not wrong, f"lane accesses (got, expected) per variant: {wrong}"
    # no FMA anywhere: the kernels', nor the probe's (the flags keep -fmad=false)
    assert "fmad_probe" in ptx and "mul.rn.f32" in ptx
    assert not re.search(r"\bfma\.rn(\.ftz)?\.f32", ptx), "an FMA in the quantized kernels' PTX (or the probe's)"
    report = ptx_path.with_suffix(".ptxas").read_text()
    spills = re.findall(r"Function properties for (\S+)\n\s*(\d+) bytes stack frame, (\d+) bytes spill stores, "
                        r"(\d+) bytes spill loads", report)
    assert len(spills) == len(got) + 1, report[:2000]  # the kernels and the probe
    bad = [(_KERNEL.search(n).groups() if _KERNEL.search(n) else n, f, s, l) for n, f, s, l in spills
           if (f, s, l) != ("0", "0", "0")]
    assert not bad, f"stack frames or spills (kernel, frame, stores, loads): {bad}"


@NO_NVCC
def test_chosen_quantized_kernels_move_lanes_in_vectors(built_once):
    """The fast tier's variants: every codec, param kind, master form and amsgrad."""
    ptx = built_once("cuda_quant_ptx_chosen", lambda folder: compile_ptx(folder, CHOSEN))
    _check(ptx, CHOSEN)


@pytest.mark.slow  # full tier: nvcc and ptxas over all 68 kernels, about 23 CPU s
@NO_NVCC
def test_every_quantized_kernel_moves_lanes_in_vectors(built_once):
    ptx = built_once("cuda_quant_ptx_every", lambda folder: compile_ptx(folder, None))
    keys = list(lane_accesses(ptx.read_text()))
    assert len(keys) == 2 * (1 * 2 * 3 + 2 * 2 * 4 + 2 * 2 * 3), keys  # codecs x (f32, bf16, f16 params)
    _check(ptx, keys)


def test_expected_accesses_of_the_8bit_fp32_kernel():
    """The counts the tests hold the PTX to, for the plainest variant: 8 fp32 params and
    gradients a lane are two 16-byte accesses each, its 8 codes of m and v one 8-byte access each."""
    assert expected_accesses(("Q8", 0, 0, 0, 0)) == {"ld v4.u32": 4, "ld v2.u32": 2, "st v4.u32": 2,
                                                     "st v2.u32": 2}
    assert expected_accesses(("Q4", 1, 1, 0, 0)) == {"ld v2.u32": 2, "ld u16": 2, "st v2.u32": 1, "st u16": 2}
