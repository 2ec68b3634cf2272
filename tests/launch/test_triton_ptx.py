"""What the compiled Triton kernel loads, stores and computes, read from its PTX for an H100
(sm_90), on any machine.

The aligned variant must move every data stream in 16-byte vectors (the hints in
adamw_fused.py's note: scalar 2-byte loads held bf16 states at 74% of copy bandwidth on an
H100); the unaligned variant must not claim alignment it lacks; no variant may contain an
FMA or an approximate op (docs/numerics.md). Triton compiles for a named target without a
GPU, so CI checks this; gpu_check.sh measures the speed. The compile runs in one
subprocess: the tests' CPU runs set TRITON_INTERPRET=1, under which triton.jit gives
interpreted functions that cannot be compiled.

The variants come from the launcher: its compile-time arguments and options are
``adamw_fused._constexprs(...)``, called here as ``launch`` calls it, and the flags are
that function's arguments, so a new one is toggled here without an edit. Dtype paths:
every param, grad and state dtype the launcher maps (``_TL_DTYPE``; the optimizer takes
any of them for a gradient), each plain, with master weights, with stochastic rounding,
and (bf16 params) with master remainders, one per distinct compile-time result: 81, a superset of what the optimizer
launches. The full product of those with the 2^6 flag settings (amsgrad, maximize, grad
scale, found_inf, clipping coefficient, host scalars) and both alignments would be 9,216 compiles, too slow for
CI on 2 cores. Instead every path is compiled aligned with a flag setting and its
complement, the settings rotating over the paths, so that every flag is on and off on
every path and all 64 settings appear; and unaligned once for every path whose gradient
has the param's dtype (27), which covers every param/state dtype and mode. 189 compiles,
checked by ``test_the_variants_cover_the_launcher``.

8-bit states (a uint8 state dtype) are compiled apart, in ``Q8_VARIANTS`` (fp32 and bf16
params, each master form, stochastic rounding, aligned and not): their codes are decoded by
a gather from the map and their scales read per element, so the stream widths above do not
apply; they are held to no FMA, no approximate op, and no flush of subnormals (the
thresholds next to 0 are subnormal: docs/numerics.md, "8-bit states").
"""
import collections
import functools
import inspect
import itertools
import json
import os
import re
import subprocess
import sys

import pytest
import torch

triton = pytest.importorskip("triton")
tl = pytest.importorskip("triton.language")

from adamw_tau.formats import registry  # noqa: E402
from adamw_tau.launch.tables import chunk_for  # noqa: E402
from adamw_tau.triton_kernels import adamw_fused  # noqa: E402

RUNTIME_TYPES = {"table_ptr": "*i64", "blocks_ptr": "*i64", "scalars_ptr": "*fp32", "grad_scale_ptr": "*fp32",
                 "found_inf_ptr": "*fp32", "qt_ptr": "*fp32", "grad_coef_ptr": "*fp32", "seed_lo": "i64",
                 "seed_hi": "i64",
                 # the step and the fp32 scalars' bits (StepScalars.words)
                 **{n: "i32" for n in inspect.signature(adamw_fused.adamw_fused_kernel.fn).parameters
                    if n.startswith("h_")}}
POINTERS = ("table_ptr", "blocks_ptr", "scalars_ptr", "grad_scale_ptr", "found_inf_ptr", "qt_ptr", "grad_coef_ptr")

# the launcher's arguments (adamw_fused._constexprs): dtypes, then flags, then the block size
LAUNCH_ARGS = list(inspect.signature(adamw_fused._constexprs).parameters)
DTYPES = ("param_dtype", "grad_dtype", "state_format")
MODES = ("master", "stochastic_rounding")  # with the dtypes, the dtype path
FLAGS = tuple(a for a in LAUNCH_ARGS if a not in DTYPES + MODES + ("aligned", "chunk"))
SHORT = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16",
         **{f.id: f.name for f in registry.STATE_FORMATS.values()}}  # state formats by id
PLAIN_STATES = {torch.float32: 0, torch.bfloat16: 1, torch.float16: 2}


def _dtype_paths() -> list[dict]:
    """Every (dtypes, master, stochastic_rounding) the launcher takes, one per distinct
    compile-time result (``_constexprs`` folds stochastic rounding where it does not apply)."""
    paths, seen = [], set()
    dtypes = [d for d in adamw_fused._TL_DTYPE if d != torch.uint8]  # 8-bit states: Q8_VARIANTS
    for p, g, s, master, sr in itertools.product(dtypes, dtypes, dtypes, (0, 1, 2), (False, True)):
        if (master and sr) or (master == 2 and p != torch.bfloat16):  # 2: int16 remainders, bf16 params only
            continue
        path = dict(param_dtype=p, grad_dtype=g, state_format=PLAIN_STATES[s], master=master, stochastic_rounding=sr)
        key = tuple(sorted(_launch_constexprs(**path, **dict.fromkeys(FLAGS, False), aligned=True).items()))
        if key not in seen:
            seen.add(key)
            paths.append(path)
    return paths


def _launch_constexprs(**args) -> dict:
    """What ``launch`` passes to the kernel for these arguments: constexprs and options."""
    return adamw_fused._constexprs(*(args[a] for a in LAUNCH_ARGS[:-1]), chunk_for("triton"))


def _variants() -> dict[str, dict]:
    paths = _dtype_paths()
    n = len(FLAGS)
    out = {}
    for k, path in enumerate(paths):
        setting = [bool((k % 2 ** (n - 1)) >> i & 1) for i in range(n)]  # the last flag off: its complement on
        complement = [not f for f in setting]
        rows = [(setting, True), (complement, True)]
        if path["grad_dtype"] == path["param_dtype"]:
            rows.append((setting if k % 2 else complement, False))
        for flags, aligned in rows:
            args = dict(path, **dict(zip(FLAGS, flags)), aligned=aligned)
            modes = [("remainder" if m == "master" and path[m] == 2 else m) for m in MODES if path[m]]
            name = "-".join([SHORT[path[d]] for d in DTYPES] + modes
                            + [f for f in FLAGS if args[f]] + ["aligned" if aligned else "unaligned"])
            out[name] = args
    return out


VARIANTS = _variants()


def _q8_variants() -> dict[str, dict]:
    out = {}
    flags = dict.fromkeys(FLAGS, True)
    for fmt in (f.id for f in registry.QUANTIZED):
        for p, master, sr, aligned in ((torch.float32, 0, False, True), (torch.bfloat16, 1, False, True),
                                       (torch.bfloat16, 2, False, True), (torch.bfloat16, 0, True, False)):
            args = dict(param_dtype=p, grad_dtype=p, state_format=fmt, master=master, stochastic_rounding=sr,
                        **flags, aligned=aligned)
            name = f"{SHORT[p]}-{SHORT[fmt]}-master{master}{'-sr' if sr else ''}-{'aligned' if aligned else 'unaligned'}"
            out[name] = args
    return out


Q8_VARIANTS = _q8_variants()


def _compile(args: dict) -> str:
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    fn = adamw_fused.adamw_fused_kernel
    names = list(inspect.signature(fn.fn).parameters)
    launched = _launch_constexprs(**args)
    const = {k: v for k, v in launched.items() if k in names}
    options = {k: v for k, v in launched.items() if k not in names}  # num_warps, enable_fp_fusion, ...
    assert set(names) == set(RUNTIME_TYPES) | set(const), "the kernel's arguments changed: update this test"
    sig = {n: RUNTIME_TYPES.get(n, "constexpr") for n in names}
    # torch's allocations are 16-byte aligned, and Triton specializes pointers on it at launch
    attrs = {(names.index(n),): [["tt.divisibility", 16]] for n in POINTERS}
    src = ASTSource(fn=fn, signature=sig, constexprs={(names.index(n),): v for n, v in const.items()}, attrs=attrs)
    return triton.compile(src, target=GPUTarget("cuda", 90, 32), options=options).asm["ptx"]


def _compile_all(folder) -> str:
    """Every variant's PTX, compiled in one subprocess (see the module's docstring), into a file."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    out = subprocess.run([sys.executable, os.path.abspath(__file__)], env=env, capture_output=True, text=True,
                         timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    path = folder / "ptx.json"
    path.write_text(out.stdout.splitlines()[-1])
    return path


@pytest.fixture(scope="session")
def all_ptx(built_once) -> dict:
    """name -> PTX, compiled once per test run for all the run's workers (about 45 CPU s)."""
    return json.loads(built_once("triton_ptx", _compile_all).read_text())


# --- reading the PTX ---------------------------------------------------------------------------
_REG = re.compile(r"%[a-z]+\d+\b")
_PARAM = re.compile(r"\[\s*\w+_param_(\d+)\s*\]")
_TYPE = re.compile(r"^[bfsu](\d+)$")


def _accesses(ptx: str) -> list[tuple[str, str, str, int]]:
    """(ld or st, what the address is based on, v4/v2/scalar, bits) of every global access.

    The base is found by following registers from the kernel's parameters: "data" for an
    address built on a pointer read from the tensor table (p, g, m, v, vmax, master), else
    the pointer parameter it is built on (table_ptr, blocks_ptr, scalars_ptr, ...). One pass
    in program order: the kernel has no loops."""
    runtime = [n for n in inspect.signature(adamw_fused.adamw_fused_kernel.fn).parameters if n in RUNTIME_TYPES]
    origin: dict[str, set] = {}  # register -> {("param", name) or ("loaded", name)}
    out = []
    for line in ptx.splitlines():
        line = line.split("//")[0].strip().rstrip(";")
        line = re.sub(r"^@!?%p\d+\s+", "", line)
        if not line or line[0] in ".${}" or " " not in line.replace("\t", " "):
            continue
        op, operands = re.split(r"\s+", line, maxsplit=1)
        if op.startswith("ld.param"):
            m = _PARAM.search(operands)
            index = int(m.group(1))
            name = runtime[index] if index < len(runtime) else f"param_{index}"
            origin.setdefault(_REG.search(operands).group(0), set()).add(("param", name))
            continue
        parts = op.split(".")
        if parts[0] in ("ld", "st") and parts[1] == "global":  # e.g. ld.global.nc.v4.b32
            kind, bits = parts[0], int(_TYPE.match(parts[-1]).group(1))
            vec = next((q for q in parts if q in ("v2", "v4", "v8")), "scalar")
            address = re.search(r"\[([^\]]*)\]", operands).group(1)
            src = set().union(*(origin.get(r, set()) for r in _REG.findall(address)))
            params = sorted(n for k, n in src if k == "param")
            base = "data" if ("loaded", "table_ptr") in src else "+".join(params) or "?"
            out.append((kind, base, vec, bits))
            if kind == "ld":
                dst = operands[:operands.index("[")]
                for r in _REG.findall(dst):
                    origin.setdefault(r, set()).update(("loaded", n) for n in params)
            continue
        regs = _REG.findall(operands)
        if regs and not op.startswith(("st.", "bra", "ret")):
            dst_part = operands.split("}")[0] if operands.startswith("{") else regs[0]
            dsts = _REG.findall(dst_part)
            srcs = regs[len(dsts):]
            for d in dsts:
                origin.setdefault(d, set()).update(*(origin.get(r, set()) for r in srcs))
    return out


def _streams(args: dict) -> tuple[int, int]:
    """16-byte vectors per thread the aligned kernel must load and store: each stream's bytes
    per program over the program's threads, in 16s."""
    consts = _launch_constexprs(**args)
    per_thread = consts["BLOCK"] // (32 * consts["num_warps"])
    size = {torch.float32: 4, torch.bfloat16: 2, torch.float16: 2, **{PLAIN_STATES[d]: n for d, n in
                                                                      ((torch.float32, 4), (torch.bfloat16, 2),
                                                                       (torch.float16, 2))}}
    p, g, s = (size[args[d]] for d in DTYPES)
    # the master: fp32 (1) read and written instead of the param's read; int16 remainders (2)
    # read and written beside the param
    master = {0: ([p], []), 1: ([4], [4]), 2: ([p, 2], [2])}[int(args["master"])]
    reads = [g, s, s] + ([s] if args["amsgrad"] else []) + master[0]
    writes = [s, s] + ([s] if args["amsgrad"] else []) + master[1] + [p]
    return sum(b * per_thread // 16 for b in reads), sum(b * per_thread // 16 for b in writes)


def _expected_bases(args: dict) -> set:
    """The parameters the kernel reads: the tables, and the device scalars, grad scale,
    found_inf and clipping coefficient only where the variant has them."""
    return ({"table_ptr", "blocks_ptr"} | ({"scalars_ptr"} if not args["host_scalars"] else set())
            | ({"grad_scale_ptr"} if args["has_scale"] else set())
            | ({"found_inf_ptr"} if args["has_found_inf"] else set())
            | ({"grad_coef_ptr"} if args["has_coef"] else set()))


def _count(accesses, kind, vec=None):
    return sum(1 for k, b, v, _ in accesses if k == kind and b == "data" and (vec is None or v == vec))


# --- the tests -------------------------------------------------------------------------------
def test_the_variants_cover_the_launcher():
    paths = _dtype_paths()
    assert len(paths) == 81, "the launcher's dtype paths changed: update the counts in this file's docstring"
    assert len(VARIANTS) == 189
    for flag in FLAGS + ("aligned",):
        assert {v[flag] for v in VARIANTS.values()} == {False, True}, flag
    for path in paths:  # every flag on and off on every dtype path
        mine = [v for v in VARIANTS.values() if all(v[k] == path[k] for k in path)]
        for flag in FLAGS:
            assert {v[flag] for v in mine if v["aligned"]} == {False, True}, (path, flag)
    for p, s, master, sr in {(v["param_dtype"], v["state_format"], v["master"], v["stochastic_rounding"])
                             for v in VARIANTS.values()}:  # every param/state dtype and mode unaligned too
        assert any(not v["aligned"] and (v["param_dtype"], v["state_format"], v["master"], v["stochastic_rounding"])
                   == (p, s, master, sr) for v in VARIANTS.values()), (p, s, master, sr)
    settings = {tuple(v[f] for f in FLAGS) for v in VARIANTS.values() if v["aligned"]}
    assert len(settings) == 2 ** len(FLAGS)


@pytest.mark.parametrize("name", [n for n, v in VARIANTS.items() if v["aligned"]])
def test_aligned_tables_move_every_data_stream_in_16_byte_vectors(name, all_ptx):
    args = VARIANTS[name]
    acc = _accesses(all_ptx[name])
    data = collections.Counter((k, v, bits) for k, b, v, bits in acc if b == "data")
    assert all(v == "v4" for _, v, _ in data), dict(data)  # (ld or st, width, bits): count
    assert (_count(acc, "ld", "v4"), _count(acc, "st", "v4")) == _streams(args)
    # nothing else is stored; only the tables and this variant's scalars are read
    assert {b for k, b, _, _ in acc if k == "st"} == {"data"}
    assert {b for k, b, _, _ in acc if k == "ld"} - {"data"} == _expected_bases(args)


@pytest.mark.parametrize("name", [n for n, v in VARIANTS.items() if not v["aligned"]])
def test_unaligned_tables_claim_no_alignment(name, all_ptx):
    acc = _accesses(all_ptx[name])
    assert _count(acc, "ld", "v4") == _count(acc, "ld", "v2") == 0, acc
    assert _count(acc, "st", "v4") == _count(acc, "st", "v2") == 0, acc
    assert _count(acc, "ld", "scalar") > 0 and _count(acc, "st", "scalar") > 0, acc
    assert {b for k, b, _, _ in acc if k == "ld"} - {"data"} == _expected_bases(VARIANTS[name])


@pytest.mark.parametrize("name", list(VARIANTS))
def test_no_fma_and_no_approximate_op(name, all_ptx):
    """The launcher's options must keep the backend from contracting a*b+c (docs/numerics.md);
    divisions and square roots are the IEEE ones."""
    ptx = all_ptx[name]
    fused = re.findall(r"\bfma\.\S+|\bmad(?:\.\w+)*\.f\d+\b", ptx)
    assert not fused, f"{len(fused)} fused multiply-adds: {sorted(set(fused))}"
    approximate = re.findall(r"\.approx\.\S+|\bdiv\.full\.\S+", ptx)
    assert not approximate, sorted(set(approximate))
    assert "div.rn.f32" in ptx and "sqrt.rn.f32" in ptx


if __name__ == "__main__":  # the subprocess: compile every variant the tests read
    print(json.dumps({name: _compile(args) for name, args in {**VARIANTS, **Q8_VARIANTS}.items()}))


@pytest.mark.parametrize("name", [n for n in Q8_VARIANTS if n.endswith("-aligned")])
def test_aligned_quantized_variants_move_codes_in_words_and_scales_once(name, all_ptx):
    """blockwise.py's [note: whole bytes]: in an aligned launch the codes (8-bit and 4-bit) move in
    accesses of at least 4 bytes, never a byte at a time (4-bit: 24 byte loads and 12 byte stores a
    thread before), and the block scales are read once a block, not once an element (8-bit: 38
    scalar word loads of data a thread before, 17 after)."""
    acc = _accesses(all_ptx[name])
    narrow = [(k, v, bits) for k, b, v, bits in acc if b == "data" and bits == 8]
    assert not narrow, f"byte-wide code accesses in an aligned variant: {collections.Counter(narrow)}"
    scalar_words = sum(1 for k, b, v, bits in acc if k == "ld" and b == "data" and v == "scalar" and bits == 32)
    assert scalar_words <= 24, f"{scalar_words} scalar word loads of data: the scales read per element again?"


@pytest.mark.parametrize("name", list(Q8_VARIANTS))
def test_8bit_variants_compile_without_fma_approximation_or_flushed_subnormals(name, all_ptx):
    ptx = all_ptx[name]
    assert not re.findall(r"\bfma\.\S+|\bmad(?:\.\w+)*\.f\d+\b", ptx)
    assert not re.findall(r"\.approx\.\S+|\bdiv\.full\.\S+", ptx)
    assert not re.findall(r"\.ftz\b", ptx), "a subnormal x / max or threshold would compare as 0"
    assert "div.rn.f32" in ptx and "sqrt.rn.f32" in ptx
    # the block max (q8_blockwise.block_absmax): a plain max.f32 drops a NaN, so the max runs over the
    # non-NaN values and a NaN count decides; the NaN test must survive compilation beside every max.f32
    # (a variant compiled with the plain max instead had no setp.nan.f32 at all: checked by hand)
    assert "setp.nan.f32" in ptx, "no NaN test left beside the block max's max.f32: a NaN would vanish from a scale"
