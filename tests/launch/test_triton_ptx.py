"""What the compiled Triton kernel loads, read from its PTX for an H100 (sm_90), on any machine.

The aligned variant must move every data stream in 16-byte vectors (the hints in
adamw_fused.py's note: scalar 2-byte loads held bf16 states at 74% of copy bandwidth on an
H100); the unaligned variant must not claim alignment it lacks. Triton compiles for a
named target without a GPU, so CI checks this; gpu_check.sh measures the speed. The
compile runs in a subprocess: the tests' CPU runs set TRITON_INTERPRET=1, under which
triton.jit gives interpreted functions that cannot be compiled.
"""
import functools
import inspect
import json
import os
import re
import subprocess
import sys

import pytest

triton = pytest.importorskip("triton")
tl = pytest.importorskip("triton.language")

from adamw_tau.launch.tables import chunk_for  # noqa: E402

RUNTIME_TYPES = {"table_ptr": "*i64", "blocks_ptr": "*i64", "scalars_ptr": "*fp32", "grad_scale_ptr": "*fp32",
                 "found_inf_ptr": "*fp32", "seed_lo": "i64", "seed_hi": "i64", "h_step": "i32",
                 **{n: "fp32" for n in ("h_step_size", "h_bc2_sqrt", "h_decay", "h_beta1", "h_omb1", "h_beta2",
                                        "h_omb2", "h_eps")}}
PATHS = {  # (param, grad, state, master): streams read and written
    "fp32": (tl.float32, tl.float32, tl.float32, False),
    "bf16_states": (tl.bfloat16, tl.bfloat16, tl.bfloat16, False),
    "bf16_master": (tl.bfloat16, tl.bfloat16, tl.float32, True),
    "fp16": (tl.float16, tl.float16, tl.float16, False),
}


def _compile(path: str, aligned: bool) -> str:
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from adamw_tau.triton_kernels import adamw_fused
    fn = adamw_fused.adamw_fused_kernel
    names = list(inspect.signature(fn.fn).parameters)
    p, g, s, master = PATHS[path]
    const = dict(P_DTYPE=p, G_DTYPE=g, S_DTYPE=s, AMSGRAD=False, MAXIMIZE=False, HAS_MASTER=master, SR=False,
                 HAS_SCALE=False, HAS_FOUND_INF=False, ALIGNED=aligned, HOST_SCALARS=True, BLOCK=chunk_for("triton"))
    assert set(names) == set(RUNTIME_TYPES) | set(const), "the kernel's arguments changed: update this test"
    sig = {n: RUNTIME_TYPES.get(n, "constexpr") for n in names}
    # torch's allocations are 16-byte aligned, and Triton specializes pointers on it at launch
    attrs = {(names.index(n),): [["tt.divisibility", 16]] for n in ("table_ptr", "blocks_ptr", "scalars_ptr",
                                                                   "grad_scale_ptr", "found_inf_ptr")}
    src = ASTSource(fn=fn, signature=sig, constexprs={(names.index(n),): v for n, v in const.items()}, attrs=attrs)
    kernel = triton.compile(src, target=GPUTarget("cuda", 90, 32),
                            options=dict(num_warps=adamw_fused.NUM_WARPS, enable_fp_fusion=False))
    return kernel.asm["ptx"]


@functools.lru_cache(maxsize=None)
def _all_ptx() -> dict:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    out = subprocess.run([sys.executable, os.path.abspath(__file__)], env=env, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.splitlines()[-1])


def _ptx(path: str, aligned: bool) -> str:
    return _all_ptx()[f"{path}/{aligned}"]


def _global(ptx: str, op: str) -> dict[str, int]:
    """Counts of ld.global / st.global by width suffix (v4, v2 or scalar), ignoring the
    64-bit scalar loads of the launch tables."""
    out = {"v4": 0, "v2": 0, "scalar": 0}
    for m in re.finditer(rf"\b{op}\.global(?:\.[a-z]+)*\.(v4|v2)?\.?([bfsu]\d+)", ptx):
        vec, typ = m.group(1), m.group(2)
        if vec:
            out[vec] += 1
        elif not (op == "ld" and typ in ("b64", "u64", "s64")):
            out["scalar"] += 1
    return out


@pytest.mark.parametrize("path", list(PATHS))
def test_aligned_tables_move_data_in_16_byte_vectors(path):
    ptx = _ptx(path, aligned=True)
    loads, stores = _global(ptx, "ld"), _global(ptx, "st")
    assert loads["scalar"] == loads["v2"] == 0 and stores["scalar"] == stores["v2"] == 0, (loads, stores)
    # g, m, v and p (or the master) read; m, v, p (and the master) written; one 16-byte
    # vector or more per stream and thread
    assert loads["v4"] >= 4 and stores["v4"] >= (4 if PATHS[path][3] else 3), (loads, stores)


def test_unaligned_tables_claim_no_alignment():
    ptx = _ptx("bf16_states", aligned=False)
    loads = _global(ptx, "ld")
    assert loads["v4"] == 0 and loads["scalar"] > 0, loads


if __name__ == "__main__":  # the subprocess: compile every variant the tests read
    print(json.dumps({f"{p}/{a}": _compile(p, a) for p in PATHS for a in (True, False)}))
