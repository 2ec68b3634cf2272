"""The mutations tests/mutations/run.py plants, as data: each a small bug against one rule of
docs/numerics.md (or a claim of the README), the exact text it replaces (which must occur
once in the file, else the run says the catalog is stale), and the tests that must catch it.

Fields: id, rule (what it breaks), file, edits [(old, new), ...], tests (a key of TESTS).
Mutations of the CUDA-only branches (__CUDA_ARCH__) are absent: CI cannot run them, and
gpu_check.sh's random GPU cases are their check.
"""

# pytest arguments per test set (paths relative to the tree's root)
TESTS = {
    # the C++ CPU op, every test that runs it (the nvcc-only tests excluded: no kernel math there)
    "cpu_op": ["tests/launch/test_extension.py", "tests/launch/test_rules.py", "tests/launch/test_tables.py",
               "tests/launch/test_gpu_parity.py", "tests/optim/test_hard_steps.py",
               "tests/optim/test_amp_capturable.py", "-k", "not triton and not cuda_sources and not vector_path"],
    # the Triton kernel under TRITON_INTERPRET=1
    "triton": ["tests/launch/test_triton.py", "tests/launch/test_rules.py", "tests/launch/test_gpu_parity.py",
               "tests/optim/test_hard_steps.py", "-k", "triton"],
    # the reference and the contract module against the oracle
    "core": ["tests/core", "tests/optim/test_amp_capturable.py", "-k", "not triton"],
    "tables": ["tests/launch/test_tables.py", "tests/launch/test_triton.py"],
    "backends": ["tests/launch/test_backends.py"],
    "optimizer": ["tests/optim/test_hard_steps.py", "tests/optim/test_optimizer.py", "tests/optim/test_dropin.py",
                  "tests/optim/test_amp_capturable.py", "-k", "not triton"],
}

MATH = "csrc/adamw_math.h"
TRITON = "triton_kernels/adamw_fused.py"
REFERENCE = "adamw_tau/core/reference.py"
CONTRACT = "adamw_tau/core/contract.py"
TABLES = "adamw_tau/launch/tables.py"

MUTATIONS = [
    # --- the three bugs of issue 25 ---------------------------------------------------------
    dict(id="math-amsgrad-max-drops-nan-from-v", rule="NaN from either side propagates (amsgrad max)", file=MATH,
         edits=[("vmax = ((v != v) | (v > vmax)) ? v : vmax;", "vmax = (v > vmax) ? v : vmax;")], tests="cpu_op"),
    dict(id="tables-master-column-unchecked", rule="alignment: every address column checked", file=TABLES,
         edits=[("addresses = table[:, P:MASTER + 1]", "addresses = table[:, P:MASTER]")], tests="tables"),
    dict(id="math-unscale-by-reciprocal", rule="rounding: g / grad_scale is one correctly rounded division",
         file=MATH, edits=[("if (scaled) g = div(g, grad_scale);", "if (scaled) g = mul(g, div(1.0f, grad_scale));")],
         tests="cpu_op"),
    # --- each op correctly rounded, no FMA ---------------------------------------------------
    dict(id="math-division-by-fast-reciprocal", rule="rounding: m / denom correctly rounded", file=MATH,
         edits=[("w = sub(w, mul(s.step_size, div(m, denom)));",
                 "w = sub(w, mul(s.step_size, mul(m, div(1.0f, denom))));")], tests="cpu_op"),
    dict(id="math-sqrt-approximate", rule="rounding: sqrt correctly rounded", file=MATH,
         edits=[("  return std::sqrt(a);", "  return std::exp(0.5f * std::log(a));")], tests="cpu_op"),
    dict(id="math-fma-in-exp-avg", rule="no FMA: beta1 * m + (1 - beta1) * g rounded twice", file=MATH,
         edits=[("m = add(mul(s.beta1, m), mul(s.one_minus_beta1, g));",
                 "m = std::fma(s.beta1, m, mul(s.one_minus_beta1, g));")], tests="cpu_op"),
    dict(id="triton-division-by-reciprocal", rule="rounding: m / denom correctly rounded (div_rn)", file=TRITON,
         edits=[("w = w - step_size * tl.math.div_rn(m, denom)",
                 "w = w - step_size * (m * tl.math.div_rn(1.0, denom))")], tests="triton"),
    dict(id="triton-fp-fusion-enabled", rule="no FMA: enable_fp_fusion=False on every launch", file=TRITON,
         edits=[("BLOCK=chunk, num_warps=NUM_WARPS, enable_fp_fusion=False)",
                 "BLOCK=chunk, num_warps=NUM_WARPS, enable_fp_fusion=True)")], tests="triton"),
    dict(id="reference-sqrt-in-torch-fp32", rule="rounding: the reference's sqrt correctly rounded", file=REFERENCE,
         edits=[("denom = _r(_r(_r(torch.sqrt(v_use)) / bc2_sqrt.expand_as(v_use)) + eps)",
                 "denom = _r(_r(torch.sqrt(v_use.float()).double() / bc2_sqrt.expand_as(v_use)) + eps)")],
         tests="core"),
    dict(id="reference-g-squared-unrounded", rule="rounding: g * g rounded before the multiply by 1 - beta2",
         file=REFERENCE, edits=[("_r(omb2 * _r(g * g))", "_r(omb2 * (g * g))")], tests="core"),
    # --- one fixed order ----------------------------------------------------------------------
    dict(id="math-decay-after-the-update", rule="order: w * d before the Adam update", file=MATH,
         edits=[("  w = mul(w, s.decay);\n", ""),
                ("w = sub(w, mul(s.step_size, div(m, denom)));", "w = mul(sub(w, mul(s.step_size, div(m, denom))), s.decay);")],
         tests="cpu_op"),
    dict(id="triton-eps-inside-the-division", rule="order: (sqrt(v) / bc2_sqrt) + eps", file=TRITON,
         edits=[("denom = tl.math.div_rn(tl.math.sqrt_rn(v_use), bc2_sqrt) + eps",
                 "denom = tl.math.div_rn(tl.math.sqrt_rn(v_use) + eps, bc2_sqrt)")], tests="triton"),
    dict(id="reference-step-size-times-m-first", rule="order: step_size * (m / denom)", file=REFERENCE,
         edits=[("w = _r(w - _r(step_size * _r(m / denom)))", "w = _r(w - _r(_r(step_size * m) / denom))")],
         tests="core"),
    # --- the stochastic-rounding hash ---------------------------------------------------------
    dict(id="math-hash-constant", rule="hash: lowbias32's constants", file=MATH,
         edits=[("x *= 0x846CA68Bu;", "x *= 0x846CA68Au;")], tests="cpu_op"),
    dict(id="math-hash-index-halves-swapped", rule="hash: mix32(mix32(hi32(i) ^ key) ^ lo32(i))", file=MATH,
         edits=[("return mix32(mix32(uint32_t(i >> 32) ^ key) ^ uint32_t(i));",
                 "return mix32(mix32(uint32_t(i) ^ key) ^ uint32_t(i >> 32));")], tests="cpu_op"),
    dict(id="cpu-key-from-table-row", rule="hash: the key uses the param's id, not its launch row",
         file="csrc/adamw_cpu.cpp", edits=[("sr_key(b.seed, s.step, uint32_t(t.param_id))",
                                            "sr_key(b.seed, s.step, uint32_t(b.blocks[2 * k]))")], tests="cpu_op"),
    dict(id="triton-hash-shift", rule="hash: lowbias32's shifts", file=TRITON,
         edits=[("x = x ^ (x >> 15)", "x = x ^ (x >> 14)")], tests="triton"),
    dict(id="triton-host-step-off-by-one", rule="hash: the key's step (scalars by value)", file=TRITON,
         edits=[("step = h_step.to(tl.uint32)", "step = (h_step + 1).to(tl.uint32)")], tests="triton"),
    dict(id="contract-hash-constant", rule="hash: lowbias32's constants (contract, reference)", file=CONTRACT,
         edits=[("MIX_MUL1 = 0x7FEB352D", "MIX_MUL1 = 0x7FEB352F")], tests="core"),
    dict(id="buckets-id-is-bucket-position", rule="hash: param_id is the place in the optimizer's order",
         file="adamw_tau/launch/buckets.py", edits=[("b.ids.append(pid)", "b.ids.append(len(b.params) - 1)")],
         tests="optimizer"),
    dict(id="buckets-id-skips-params-without-grads", rule="hash: params without grads keep their ids",
         file="adamw_tau/launch/buckets.py",
         edits=[("b.ids.append(pid)", "b.ids.append(sum(1 for x in flat_grads[:pid] if x is not None))")],
         tests="optimizer"),
    # --- host scalars -------------------------------------------------------------------------
    dict(id="contract-bc2-sqrt-of-fp32", rule="host scalars: float64 throughout, one rounding", file=CONTRACT,
         edits=[("exact = (lr / bc1, math.sqrt(bc2),", "exact = (lr / bc1, math.sqrt(f32(bc2)),")], tests="core"),
    dict(id="contract-one-minus-beta2-of-fp32", rule="host scalars: 1 - beta2 in float64", file=CONTRACT,
         edits=[("beta1, 1.0 - beta1, beta2, 1.0 - beta2, eps)", "beta1, 1.0 - beta1, beta2, 1.0 - f32(beta2), eps)")],
         tests="core"),
    dict(id="contract-device-one-minus-beta2", rule="device-counted scalars: the host's bits", file=CONTRACT,
         edits=[("f32(beta2), f32(1.0 - beta2), f32(eps)]", "f32(beta2), f32(1.0 - f32(beta2)), f32(eps)]")],
         tests="core"),
    dict(id="step-scalars-step-off-by-one", rule="host scalars: t is the count after this step",
         file="adamw_tau/launch/step_scalars.py", edits=[("step=b.done + 1,", "step=b.done + 2,")], tests="optimizer"),
    dict(id="launcher-stale-scalars-by-value", rule="host scalars: by value, this step's",
         file="adamw_tau/launch/backends.py",
         edits=[("            scalars.write(buf[0])", "            if buf[0][8] == 0:\n                scalars.write(buf[0])")],
         tests="cpu_op"),
    dict(id="triton-host-scalar-slots-swapped", rule="host scalars: slot order (by value)", file=TRITON,
         edits=[("        omb2 = h_omb2\n", "        omb2 = h_beta2\n")], tests="triton"),
    # --- alignment checks ---------------------------------------------------------------------
    dict(id="tables-grad-column-unchecked", rule="alignment: the gradient's address checked", file=TABLES,
         edits=[("ok = self._fixed_ok & (rows[:, G] % VEC_BYTES == 0)", "ok = self._fixed_ok")], tests="tables"),
    dict(id="tables-numel-unchecked", rule="alignment: numel a multiple of 8", file=TABLES,
         edits=[("return ok & (table[:, NUMEL] % VEC_ELEMS == 0)", "return ok")], tests="tables"),
    dict(id="tables-8-byte-alignment", rule="alignment: 16 bytes, not 8", file=TABLES,
         edits=[("VEC_BYTES = 16 ", "VEC_BYTES = 8 ")], tests="tables"),
    dict(id="tables-stale-gradient-addresses", rule="tables: rebuilt when a gradient moves", file=TABLES,
         edits=[("if key is not None and key == self._key:",
                 "if key is not None and self._key is not None and key[:len(params)] == self._key[:len(params)]:")],
         tests="tables"),
    # --- tie and NaN rules --------------------------------------------------------------------
    dict(id="math-amsgrad-max-drops-nan-from-vmax", rule="NaN from either side propagates (amsgrad max)",
         file=MATH, edits=[("vmax = ((v != v) | (v > vmax)) ? v : vmax;", "vmax = ((v != v) | !(v <= vmax)) ? v : vmax;")],
         tests="cpu_op"),
    dict(id="math-bf16-ties-away", rule="ties to even (bf16)", file=MATH,
         edits=[("const uint32_t r = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;", "const uint32_t r = (u + 0x8000u) >> 16;")],
         tests="cpu_op"),
    dict(id="math-f16-ties-away", rule="ties to even (fp16)", file=MATH,
         edits=[("+ 0xFFFu + ((u >> 13) & 1u)) >> 13;", "+ 0x1000u) >> 13;")], tests="cpu_op"),
    dict(id="math-bf16-nan-not-special", rule="NaN stays NaN when narrowed (bf16)", file=MATH,
         edits=[("return uint16_t((u & 0x7FFFFFFFu) > 0x7F800000u ? 0x7FC0u : r);", "return uint16_t(r);")],
         tests="cpu_op"),
    dict(id="math-maximize-by-subtraction", rule="maximize: -g flips the sign of zero", file=MATH,
         edits=[("g = as_float(as_bits(g) ^ (maximize ? 0x80000000u : 0u));", "g = maximize ? sub(0.0f, g) : g;")],
         tests="cpu_op"),
    dict(id="cpu-found-inf-ignored", rule="found_inf != 0 writes nothing", file="csrc/adamw_cpu.cpp",
         edits=[("  if (found_inf.has_value() && found_inf->item<float>() != 0.0f) return;\n", "")], tests="cpu_op"),
    dict(id="triton-max-drops-nan", rule="NaN from either side propagates (amsgrad max)", file=TRITON,
         edits=[("propagate_nan=tl.PropagateNan.ALL)", "propagate_nan=tl.PropagateNan.NONE)")], tests="triton"),
    dict(id="triton-bf16-ties-away", rule="ties to even (bf16)", file=TRITON,
         edits=[("r = (u + 0x7FFF + ((u >> 16) & 1)) >> 16", "r = (u + 0x8000) >> 16")], tests="triton"),
    dict(id="reference-max-drops-nan", rule="NaN from either side propagates (amsgrad max)", file=REFERENCE,
         edits=[("vmax = torch.maximum(vmax_t.to(_F64), v)", "vmax = torch.fmax(vmax_t.to(_F64), v)")], tests="core"),
    # --- which backend runs -------------------------------------------------------------------
    dict(id="auto-compiles-the-cuda-kernel", rule="auto never waits for a compiler",
         file="adamw_tau/launch/backends.py",
         edits=[('            if candidate == "cuda" and not extension.is_built(cuda=True):\n                continue\n', "")],
         tests="backends"),
    dict(id="cuda-kernel-for-another-arch-accepted", rule="a build without code for the GPU is refused",
         file="adamw_tau/launch/backends.py",
         edits=[("return extension.unavailable_reason(cuda=True) or extension.kernel_problem(device)",
                 "return extension.unavailable_reason(cuda=True)")], tests="backends"),
]
