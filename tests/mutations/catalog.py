"""The mutations tests/mutations/run.py plants, as data: each a small bug against one rule of
docs/numerics.md (or a claim of the README), the exact text it replaces (which must occur
once in the file, else the run says the catalog is stale), and the tests that must catch it.

Fields: id, rule (what it breaks), file, edits [(old, new), ...], tests (a key of TESTS).
Mutations of the CUDA-only branches (__CUDA_ARCH__) are absent where only a GPU could see them
(gpu_check.sh's random GPU cases are their check); those that change the kernel's PTX are
here, caught by the nvcc PTX test (set "cuda_quant_ptx", which skips without nvcc).
"""

# pytest arguments per test set (paths relative to the tree's root)
TESTS = {
    # the quantized CUDA kernel's sm_90 PTX and ptxas report (nvcc, no GPU)
    "cuda_quant_ptx": ["tests/launch/test_cuda_quant_ptx.py"],
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
    # the compiled Triton kernel's PTX (no GPU needed; the interpreter ignores compile options)
    "triton_ptx": ["tests/launch/test_triton_ptx.py"],
    # the master-remainder format: alone, and its runs against the fp32-master runs
    "remainder": ["tests/formats/test_bf16_remainder.py", "tests/optim/test_master_remainder.py",
                  "tests/core/test_reference.py", "-k", "remainder"],
    # the 8-bit format: alone and through the reference; through the CPU op; Triton; the CUDA body on the host
    "q8_reference": ["tests/formats/test_q8_blockwise.py", "tests/optim/test_8bit_states.py", "-k",
                     "not cpu and not triton and not host_body and not gpu"],
    "q8_cpu": ["tests/optim/test_8bit_states.py", "-k", "cpu"],
    # the CPU op's threshold search against the formats' binary search, over fp32 bit patterns
    "cpu_search": ["tests/formats/test_bucket_search.py"],
    "q8_triton": ["tests/optim/test_8bit_states.py", "-k", "triton"],
    "q8_host_body": ["tests/optim/test_8bit_states.py", "tests/launch/test_cuda_body_on_host.py", "-k",
                     "host_body or 8bit"],
    # the 4-bit format: alone and on every backend
    "q4": ["tests/formats/test_q4_blockwise.py", "tests/optim/test_4bit_states.py", "tests/launch/test_triton.py",
           "tests/launch/test_cuda_body_on_host.py", "-k", "4bit or q4"],
    # gradient clipping: the norm, the coefficient, and its use in every backend and the optimizer
    "clipping": ["tests/core/test_grad_norm.py", "tests/launch/test_clip_coef.py", "tests/optim/test_clipping.py"],
    # quantized states of DTensor parameters (1-process mesh; the 2-process runs are in test_distributed.py)
    "sharded": ["tests/launch/test_sharded_scales.py", "tests/optim/test_4bit_states.py", "-k",
                "shard or dim_0 or fit or placements"],
    # quantized states under torch.compile, capturable and a GradScaler
    "quantized_compile": ["tests/optim/test_compile.py", "tests/optim/test_amp_capturable.py", "-k", "quantized"],
    "optimizer": ["tests/optim/test_hard_steps.py", "tests/optim/test_optimizer.py", "tests/optim/test_dropin.py",
                  "tests/optim/test_amp_capturable.py", "-k", "not triton"],
}

MATH = "csrc/adamw_math.h"
TRITON = "triton_kernels/adamw_fused.py"
TRITON_ELEMENTWISE = "triton_kernels/elementwise.py"
REFERENCE = "adamw_tau/core/reference.py"
CONTRACT = "adamw_tau/core/contract.py"
TABLES = "adamw_tau/launch/tables.py"
Q8 = "adamw_tau/formats/q8_blockwise.py"
Q8_H = "csrc/q8_blockwise.h"
Q8_KERNEL = "csrc/adamw_quant_kernel.h"  # both quantized formats' CUDA kernel
Q8_CPU = "csrc/adamw_quant_cpu.h"        # and CPU loop
Q8_TRITON = "triton_kernels/blockwise.py"
Q4 = "adamw_tau/formats/q4_blockwise.py"
Q4_H = "csrc/q4_blockwise.h"
BUCKETS = "csrc/bucket_search.h"  # the CPU op's threshold search

MUTATIONS = [
    # --- three bugs found by users -----------------------------------------------------------
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
         edits=[("enable_fp_fusion=False)", "enable_fp_fusion=True)")], tests="triton_ptx"),
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
    dict(id="triton-hash-shift", rule="hash: lowbias32's shifts", file=TRITON_ELEMENTWISE,
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
         edits=[("        omb2 = h_omb2.to(tl.float32, bitcast=True)\n",
                 "        omb2 = h_beta2.to(tl.float32, bitcast=True)\n")], tests="triton"),
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
    dict(id="math-fp16-sr-tiny-threshold", rule="fp16 stochastic rounding: below 2^-24 to 0 or 2^-24",
         file=MATH, edits=[("is_tiny = e < 103;", "is_tiny = e < 102;")], tests="cpu_op"),
    dict(id="math-fp16-sr-mask-cap", rule="fp16 stochastic rounding: 13 + k bits, k at most 10", file=MATH,
         edits=[("over = over < 0 ? 0 : (over > 10 ? 10 : over);", "over = over < 0 ? 0 : (over > 9 ? 9 : over);")],
         tests="cpu_op"),
    dict(id="triton-fp16-sr-tiny-threshold", rule="fp16 stochastic rounding: below 2^-24 to 0 or 2^-24",
         file=TRITON_ELEMENTWISE, edits=[("y = tl.where(ax < 5.9604644775390625e-08,", "y = tl.where(ax < 2.98023223876953125e-08,")],
         tests="triton"),
    dict(id="reference-fp16-sr-mask-cap", rule="fp16 stochastic rounding: 13 + k bits, k at most 10",
         file=REFERENCE, edits=[("torch.clamp(113 - biased_exp, min=0, max=10)", "torch.clamp(113 - biased_exp, min=0, max=9)")],
         tests="core"),
    dict(id="math-maximize-by-subtraction", rule="maximize: -g flips the sign of zero", file=MATH,
         edits=[("g = as_float(as_bits(g) ^ (maximize ? 0x80000000u : 0u));", "g = maximize ? sub(0.0f, g) : g;")],
         tests="cpu_op"),
    dict(id="cpu-found-inf-ignored", rule="found_inf != 0 writes nothing", file="csrc/adamw_cpu.cpp",
         edits=[("  if (found_inf.has_value() && found_inf->item<float>() != 0.0f) return;\n", "")], tests="cpu_op"),
    dict(id="triton-max-drops-nan", rule="NaN from either side propagates (amsgrad max)", file=TRITON,
         edits=[("widen(tl.load(vmax_ptr + idx, mask=mask, other=0.0)), v,\n                              "
                 "propagate_nan=tl.PropagateNan.ALL)",
                 "widen(tl.load(vmax_ptr + idx, mask=mask, other=0.0)), v,\n                              "
                 "propagate_nan=tl.PropagateNan.NONE)")], tests="triton"),
    dict(id="triton-bf16-ties-away", rule="ties to even (bf16)", file=TRITON_ELEMENTWISE,
         edits=[("r = (u + 0x7FFF + ((u >> 16) & 1)) >> 16", "r = (u + 0x8000) >> 16")], tests="triton"),
    dict(id="reference-max-drops-nan", rule="NaN from either side propagates (amsgrad max)", file=REFERENCE,
         edits=[("vmax = torch.maximum(_widened(", "vmax = torch.fmax(_widened(")], tests="core"),
    # --- the master remainder (docs/numerics.md, its section) -----------------------------------
    dict(id="math-remainder-split-ties-to-even", rule="remainder: the param rounds ties away from zero", file=MATH,
         edits=[("param = uint16_t((u + 0x8000u) >> 16);", "param = uint16_t((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);")],
         tests="remainder"),
    dict(id="math-remainder-nan-not-canonical", rule="remainder: a NaN master splits to a NaN param", file=MATH,
         edits=[("u = (u & 0x7FFFFFFFu) > 0x7F800000u ? 0x7FC00000u : u;", "")], tests="remainder"),
    dict(id="triton-remainder-merge-ignores-sign", rule="remainder: a negative remainder undoes the carry",
         file=TRITON_ELEMENTWISE, edits=[("hi = (p.to(tl.uint16, bitcast=True).to(tl.uint32) - (rem < 0).to(tl.uint32)) & 0xFFFF",
                              "hi = p.to(tl.uint16, bitcast=True).to(tl.uint32)")], tests="remainder"),
    dict(id="reference-remainder-param-to-nearest-even", rule="remainder: the param is the split's, not .to()",
         file=REFERENCE, edits=[("            new[p], new[master] = bf16_remainder.split(w32)",
                                 "            new[p], new[master] = w32.to(p.dtype), bf16_remainder.split(w32)[1]")],
         tests="remainder"),
    dict(id="checkpoint-remainder-param-not-rewritten", rule="remainder: loading an fp32 master writes its param",
         file="adamw_tau/optim/checkpoints.py", edits=[("        p.copy_(param)\n", "")], tests="remainder"),
    # --- 8-bit states (formats/q8_blockwise.py) -------------------------------------------------
    # zero rule, first half: a positive v never decodes to 0 (the block's lowest positive code)
    dict(id="q8-reference-positive-v-may-decode-to-0", rule="8-bit zero rule: v > 0 takes the lowest positive code",
         file=Q8, edits=[("        code = torch.where(flat > 0, torch.maximum(code, lowest), code)\n", "")],
         tests="q8_reference"),
    dict(id="q8-cpp-lowest-positive-code-always-1", rule="8-bit zero rule: the lowest positive code at a subnormal "
         "scale", file=Q8_H, edits=[("code += uint32_t(q8_decode<false>(code + bit - 1, scale) == 0.0f) * bit;",
                                     "code += uint32_t(code + bit - 1 < 1u) * bit;")], tests="q8_cpu"),
    dict(id="q8-triton-positive-v-may-decode-to-0", rule="8-bit zero rule: v > 0 takes the lowest positive code",
         file=Q8_TRITON, edits=[("        code = tl.maximum(code, floor)\n", "")], tests="q8_triton"),
    # zero rule, second half: where v decodes to 0, m does too
    dict(id="q8-reference-m-kept-where-v-is-0", rule="8-bit zero rule: m's zero code where v's code is 0",
         file=REFERENCE, edits=[("            new[m_t] = fmt.zero_rule(new[m_t], new[d_t], new[d_s], p.numel())",
                                 "            pass")], tests="q8_reference"),
    dict(id="q8-cpp-m-kept-where-v-is-0", rule="8-bit zero rule: m's zero code where v's code is 0", file=Q8_H,
         edits=[("return v_code == 0 ? uint8_t(127) : m_code;", "return v_code == 0 ? m_code : m_code;")],
         tests="q8_cpu"),
    dict(id="q8-cuda-body-m-rule-on-v-with-amsgrad", rule="8-bit zero rule: with amsgrad, m follows max_exp_avg_sq",
         file=Q8_KERNEL, edits=[("cm[j] = C::zero_rule(C::template encode<true>(L.m[j], new_m), AMSGRAD ? cvm[j] : cv[j],",
                                 "cm[j] = C::zero_rule(C::template encode<true>(L.m[j], new_m), cv[j],")],
         tests="q8_host_body"),
    dict(id="q8-triton-m-kept-where-v-is-0", rule="8-bit zero rule: m's zero code where v's code is 0", file=TRITON,
         edits=[("        m_code = q_zero_rule(m_code, divides_by, divides_scale, umap_ptr, BLOCK, QBLOCK, ZERO_CODE, ZERO_BY_DECODE)\n", "")],
         tests="q8_triton"),
    # ties go to the lower code
    dict(id="q8-reference-ties-up", rule="8-bit ties go to the lower code", file=Q8,
         edits=[("code = torch.bucketize(xhat.to(_F64), thr, right=False)",
                 "code = torch.bucketize(xhat.to(_F64), thr, right=True)")], tests="q8_reference"),
    dict(id="q8-cpp-ties-up", rule="8-bit ties go to the lower code", file=BUCKETS,
         edits=[("const uint32_t table_count = (e & 0xFFu) + uint32_t((key & 0xFFFFu) > (e >> 8));",
                 "const uint32_t table_count = (e & 0xFFu) + uint32_t((key & 0xFFFFu) >= (e >> 8));"),
                ("_mm256_cmpgt_epi32(_mm256_and_si256(key, _mm256_set1_epi32(0xFFFF)), _mm256_srli_epi32(e, 8));",
                 "_mm256_cmpgt_epi32(_mm256_and_si256(key, _mm256_set1_epi32(0xFFFF)), "
                 "_mm256_sub_epi32(_mm256_srli_epi32(e, 8), _mm256_set1_epi32(1)));")], tests="cpu_search"),
    dict(id="cpu-bucket-base-off-by-one", rule="the CPU threshold search counts the thresholds below a bucket",
         file=BUCKETS, edits=[("if (order_key(WORDS[mid]) >> 16 < top) base = mid + 1;",
                               "if (order_key(WORDS[mid]) >> 16 <= top) base = mid + 1;")], tests="cpu_search"),
    dict(id="q8-triton-ties-up", rule="8-bit ties go to the lower code", file=Q8_TRITON,
         edits=[("code += tl.where(xhat > tl.load(thr_ptr + code", "code += tl.where(xhat >= tl.load(thr_ptr + code")],
         tests="q8_triton"),
    # the block max propagates NaN (the interpreter's and torch's max propagate it anyway: C++ only)
    dict(id="q8-cpp-block-max-drops-nan", rule="8-bit: a NaN in a block makes its scale NaN", file=Q8_H,
         edits=[("return (a != a || a > b) ? a : b;", "return a > b ? a : b;")], tests="q8_cpu"),
    # Triton: the interpreter's max keeps a NaN, the compiled max.f32 drops it; the PTX test sees it
    dict(id="q8-triton-block-max-drops-nan-compiled", rule="8-bit: a NaN in a block makes its scale NaN",
         file=Q8_TRITON, edits=[("    amax = tl.max(tl.where(nan, 0.0, a), 1)\n"
                                 "    return tl.where(tl.max(nan.to(tl.int32), 1) > 0, float(\"nan\"), amax)",
                                 "    return tl.max(a, 1)")], tests="triton_ptx"),
    # the scale write
    dict(id="q8-reference-scale-not-written", rule="8-bit: the new scale is the block max of the new values",
         file=REFERENCE, edits=[("        new[scales[i]] = scale\n", "        pass\n")],
         tests="q8_reference"),
    dict(id="q8-cpp-scale-not-written", rule="8-bit: the new scale is the block max of the new values", file=Q8_CPU,
         edits=[("    t.v_scale[b] = max_v;\n", "")], tests="q8_cpu"),
    dict(id="q8-cuda-body-scale-not-written", rule="8-bit: the new scale is the block max of the new values",
         file=Q8_KERNEL, edits=[("      m_scale[b] = new_m;\n", "")], tests="q8_host_body"),
    # the quantized CUDA kernel's lane accesses ([note: lane accesses] in the kernel)
    dict(id="cuda-quant-lanes-back-to-byte-loads", rule="CUDA quantized kernel: a lane's runs load in whole vectors",
         file=Q8_KERNEL, edits=[("      const A a = __ldca(reinterpret_cast<const A*>(src) + k);",
                                 "      A a;\n      for (int j = 0; j < kAccess; ++j) reinterpret_cast<char*>(&a)[j] = "
                                 "reinterpret_cast<const char*>(src)[k * kAccess + j];")],
         tests="cuda_quant_ptx"),
    dict(id="cuda-quant-registers-uncapped", rule="CUDA quantized kernel: no spills ([note: quantized registers])",
         file=Q8_KERNEL, edits=[("__launch_bounds__(kQ8Threads, kQ8MinBlocks)", "__launch_bounds__(kQ8Threads)")],
         tests="cuda_quant_ptx"),
    dict(id="cuda-quant-lanes-whole-past-a-misaligned-grad",
         rule="CUDA quantized kernel: whole lane accesses only where every address allows them",
         file=Q8_KERNEL, edits=[("aligned(t.p) && aligned(t.g) && aligned(t.m)", "aligned(t.p) && aligned(t.m)")],
         tests="q8_host_body"),
    dict(id="q8-triton-partial-block-scale-dropped", rule="8-bit: the last, partial block's scale is written",
         file=Q8_TRITON, edits=[("mask=q * QBLOCK < numel)", "mask=q * QBLOCK + QBLOCK <= numel)")], tests="q8_triton"),
    # --- the 4-bit format: its own rules on each backend ------------------------------------------
    dict(id="q4-reference-ties-up", rule="4-bit ties go to the lower code", file=Q4,
         edits=[("thresholds(signed, x.device).to(_F64), right=False)",
                 "thresholds(signed, x.device).to(_F64), right=True)")], tests="q4"),
    dict(id="q4-cpp-nibbles-swapped", rule="4-bit: element i's code is byte i // 2's low nibble when i is even",
         file=Q4_H, edits=[("return (uint32_t(c[i >> 1]) >> ((i & 1) * 4)) & 15u;",
                            "return (uint32_t(c[i >> 1]) >> (((i & 1) ^ 1) * 4)) & 15u;")], tests="q4"),
    dict(id="q4-cpp-m-kept-where-v-decodes-to-0", rule="4-bit zero rule: m's zero code where v decodes to 0",
         file=Q4_H, edits=[("return decode<false>(v_code, v_scale) == 0.0f ? 7u : m_code;", "return m_code;")],
         tests="q4"),
    dict(id="q4-triton-odd-tail-nibble", rule="4-bit: an odd tensor's last high nibble is 0", file=Q8_TRITON,
         edits=[("        hi = tl.where(start + 2 * pair + 1 < numel, hi, 0)", "        hi = hi")], tests="q4"),
    dict(id="q4-cpp-odd-tail-nibble", rule="4-bit: an odd tensor's last high nibble is 0", file=Q4_H,
         edits=[("(i + 1 < end ? uint32_t(codes[1]) << 4 : 0u)", "(uint32_t(codes[1]) << 4)")], tests="q4"),
    # --- which backend runs -------------------------------------------------------------------
    dict(id="auto-compiles-the-cuda-kernel", rule="auto never waits for a compiler",
         file="adamw_tau/launch/backends.py",
         edits=[('            if candidate == "cuda" and not extension.is_built(cuda=True):\n                continue\n', "")],
         tests="backends"),
    dict(id="cuda-kernel-for-another-arch-accepted", rule="a build without code for the GPU is refused",
         file="adamw_tau/launch/backends.py",
         edits=[("return extension.unavailable_reason(cuda=True) or extension.kernel_problem(device)",
                 "return extension.unavailable_reason(cuda=True)")], tests="backends"),
    # --- gradient clipping (docs/numerics.md, "Gradient clipping") ------------------------------
    dict(id="math-clip-coefficient-ignored", rule="clipping: every unscaled gradient times the coefficient",
         file=MATH, edits=[("const uint32_t clip_mask = clipped ? 0xFFFFFFFFu : 0u;", "const uint32_t clip_mask = 0u;")], tests="clipping"),
    dict(id="triton-clip-coefficient-ignored", rule="clipping: every unscaled gradient times the coefficient",
         file=TRITON, edits=[("if HAS_COEF else g", "if HAS_COEF and False else g")], tests="clipping"),
    dict(id="reference-clip-product-unrounded", rule="rounding: g * clip_coef is one correctly rounded fp32 op",
         file=REFERENCE, edits=[("g = _r(g * grad_coef.to(_F64))", "g = g * grad_coef.to(_F64)")], tests="clipping"),
    dict(id="norm-squares-in-fp32", rule="clipping: squares and sums in float64",
         file="adamw_tau/core/grad_norm.py",
         edits=[("return flat64.mul_(flat64)", "return (flat64.float() * flat64.float()).double()")],
         tests="clipping"),
    dict(id="clip-coef-divides-directly", rule="clipping: torch's coefficient (c / t as t.reciprocal() * c)",
         file="adamw_tau/core/grad_norm.py",
         edits=[("coef = r(r(denom.reciprocal()) * _fp32(float(max_norm)))", "coef = r(_fp32(float(max_norm)) / denom)")],
         tests="clipping"),
    dict(id="clip-nonfinite-norm-steps", rule="clipping: an inf/NaN norm skips the step, no bit changed",
         file="adamw_tau/launch/clipping.py",
         edits=[("return coef, skip if found_inf is None else found_inf.to(skip.device, torch.float32) + skip",
                 "return coef, found_inf")], tests="clipping"),
    # --- quantized states of sharded parameters (launch/sharded_scales.py's notes) ----------------
    dict(id="sharded-4bit-codes-not-placed", rule="FSDP2: a shard's flat 4-bit codes are a Shard(0) DTensor",
         file="adamw_tau/launch/sharded_scales.py",
         edits=[("    if not is_dtensor(p) or is_dtensor(t):\n        return t\n    scales",
                 "    if not is_dtensor(p) or is_dtensor(t) or not key.endswith(SCALE_SUFFIX):\n        return t\n    scales")],
         tests="sharded"),
    dict(id="sharded-4bit-layout-not-refused", rule="FSDP2: 4-bit codes no checkpoint can place are refused first",
         file="adamw_tau/launch/sharded_scales.py",
         edits=[("            or flat_codes_fit(p, fmt):\n        return None", "            or True:\n        return None")],
         tests="sharded"),
    dict(id="sharded-split-not-chunks", rule="FSDP2: a sharded state's split is torch.chunk's",
         file="adamw_tau/launch/sharded_scales.py",
         edits=[("    return counts if counts == _chunks(sum(counts), len(counts)) else None", "    return counts")],
         tests="sharded"),
    dict(id="sharded-load-encodes-the-dtensor", rule="a sharded parameter's loaded moments are encoded shard by shard",
         file="adamw_tau/optim/checkpoints.py",
         edits=[("    main, scales = fmt.encode(local(values), key)", "    main, scales = fmt.encode(values, key)")],
         tests="sharded"),
    # --- quantized states under torch.compile and device-counted steps -----------------------------
    dict(id="list-path-drops-the-format-id", rule="one format id to every kernel (the op's state_format)",
         file="adamw_tau/optim/optimizer.py",
         edits=[("**b.scale_lists(), state_format=b.format.id,", "**b.scale_lists(), state_format=None,")],
         tests="quantized_compile"),
]
