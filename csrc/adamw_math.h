// The per-element math of the numeric contract (docs/numerics.md), shared by the CUDA and
// CPU kernels: the math CI tests on CPU is the math the GPU runs.
//
// [note: bitwise]
// Every fp32 op is correctly rounded and none is fused: on the device through the _rn
// intrinsics (which nvcc never contracts into FMA), on the host through plain operators
// compiled with -ffp-contract=off. Conversions to bf16/fp16 are done on the bits here so
// that both sides round alike (ties to even; NaN -> 0x7FC0 / 0x7E00 with the sign).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define ADAMW_HD __host__ __device__ __forceinline__
#else
#define ADAMW_HD inline
#endif

namespace adamw_tau {

// The value kinds, and for states the state formats: the ids of adamw_tau/formats/registry.py
// (StateFormat.id; tests/formats/test_registry.py ties them). The quantized kinds (codes with
// block scales) come after F16 (is_quantized), each with its codec in state_formats.h.
enum class Kind { F32 = 0, BF16 = 1, F16 = 2, Q8 = 3, Q4 = 4 };
constexpr int kNumKinds = 5;

// The fp32 scalars in the order of contract.SCALAR_SLOTS; slot 8 holds the step's bits.
struct Scalars {
  float step_size, bc2_sqrt, decay, beta1, one_minus_beta1, beta2, one_minus_beta2, eps;
  uint32_t step;
};

ADAMW_HD float add(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}
ADAMW_HD float sub(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fsub_rn(a, b);
#else
  return a - b;
#endif
}
ADAMW_HD float mul(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}
ADAMW_HD float div(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fdiv_rn(a, b);
#else
  return a / b;
#endif
}
ADAMW_HD float sqrt_rn(float a) {
#if defined(__CUDA_ARCH__)
  return __fsqrt_rn(a);
#else
  return std::sqrt(a);
#endif
}

ADAMW_HD uint32_t as_bits(float x) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(x);
#else
  uint32_t u;
  std::memcpy(&u, &x, 4);
  return u;
#endif
}
ADAMW_HD float as_float(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float x;
  std::memcpy(&x, &u, 4);
  return x;
#endif
}

// --- 16-bit formats -------------------------------------------------------------------------
ADAMW_HD float bf16_to_float(uint16_t h) { return as_float(uint32_t(h) << 16); }

// Branch-free (selects only), here and below, so the CPU loop vectorises.
ADAMW_HD uint16_t float_to_bf16(float x) {
  const uint32_t u = as_bits(x);
  const uint32_t r = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
  return uint16_t((u & 0x7FFFFFFFu) > 0x7F800000u ? 0x7FC0u : r);
}

ADAMW_HD float f16_to_float(uint16_t h) {
  const uint32_t shifted = uint32_t(h & 0x7FFF) << 13;
  const uint32_t exp = shifted & (0x7C00u << 13);
  const uint32_t normal = shifted + ((127u - 15) << 23);
  const uint32_t special = normal + ((128u - 16) << 23);  // inf / NaN
  // subnormal: renormalise, exactly
  const uint32_t sub_ = as_bits(sub(as_float(normal + (1u << 23)), as_float(113u << 23)));
  const uint32_t o = exp == (0x7C00u << 13) ? special : (exp == 0 ? sub_ : normal);
  return as_float(o | (uint32_t(h & 0x8000) << 16));
}

ADAMW_HD uint16_t float_to_f16(float x) {
  const uint32_t sign = as_bits(x) & 0x80000000u;
  const uint32_t u = as_bits(x) ^ sign;
  const uint32_t special = u > 0x7F800000u ? 0x7E00u : 0x7C00u;
  // subnormal or zero: an fp32 add aligns the 10 bits and rounds to nearest even
  const uint32_t magic = ((127u - 15) + (23 - 10) + 1) << 23;
  const uint32_t small = as_bits(add(as_float(u), as_float(magic))) - magic;
  const uint32_t normal = (u + (uint32_t(15 - 127) << 23) + 0xFFFu + ((u >> 13) & 1u)) >> 13;
  const uint32_t o = u >= ((127u + 16) << 23) ? special : (u < (113u << 23) ? small : normal);
  return uint16_t(o | (sign >> 16));
}

// --- bf16 param + int16 remainder: an exact fp32 master (formats/bf16_remainder.py) ----------
// [note: master remainders] The master's 32 bits are the param's 16 and the remainder's 16,
// with the param rounded to nearest, ties away from zero, on the bits: bf16 = (u + 0x8000) >> 16
// and rem = low 16 bits, so bf16 - (rem < 0) gives the high half back. A NaN master becomes
// 0x7FC00000 first, or 0x7FFFFFFF (CUDA's NaN) would split into -0.0 and 0x7F800001 into +inf.
ADAMW_HD float merge_remainder(uint16_t param, int16_t rem) {
  const uint32_t hi = (uint32_t(param) - (rem < 0 ? 1u : 0u)) & 0xFFFFu;
  return as_float((hi << 16) | uint32_t(uint16_t(rem)));
}

ADAMW_HD void split_remainder(float w, uint16_t& param, int16_t& rem) {
  uint32_t u = as_bits(w);
  u = (u & 0x7FFFFFFFu) > 0x7F800000u ? 0x7FC00000u : u;
  param = uint16_t((u + 0x8000u) >> 16);
  rem = int16_t(uint16_t(u & 0xFFFFu));
}

template <Kind K> struct Storage { using type = uint16_t; };
template <> struct Storage<Kind::F32> { using type = float; };
template <> struct Storage<Kind::Q8> { using type = uint8_t; };

template <Kind K> ADAMW_HD float widen(typename Storage<K>::type x) {
  if constexpr (K == Kind::F32) return x;
  else if constexpr (K == Kind::BF16) return bf16_to_float(x);
  else return f16_to_float(x);
}

template <Kind K> ADAMW_HD typename Storage<K>::type narrow(float x) {
  if constexpr (K == Kind::F32) return x;
  else if constexpr (K == Kind::BF16) return float_to_bf16(x);
  else return float_to_f16(x);
}

// --- counter-based random bits (contract.mix32 / sr_key / sr_bits) --------------------------
ADAMW_HD uint32_t mix32(uint32_t x) {
  x ^= x >> 16;
  x *= 0x7FEB352Du;
  x ^= x >> 15;
  x *= 0x846CA68Bu;
  return x ^ (x >> 16);
}

ADAMW_HD uint32_t sr_key(uint64_t seed, uint32_t step, uint32_t param_id) {
  uint32_t k = mix32(param_id);
  k = mix32(step ^ k);
  k = mix32(uint32_t(seed >> 32) ^ k);
  return mix32(uint32_t(seed) ^ k);
}

ADAMW_HD uint32_t sr_bits(uint32_t key, int64_t index) {
  const uint64_t i = uint64_t(index);
  return mix32(mix32(uint32_t(i >> 32) ^ key) ^ uint32_t(i));
}

// fp32 -> bf16/fp16, up or down with probability given by the distance (reference.stochastic_round).
template <Kind K> ADAMW_HD uint16_t stochastic_round(float w, uint32_t bits) {
  const uint32_t u = as_bits(w);
  uint32_t mask = 0xFFFFu;
  uint32_t tiny = 0u;  // |w| < 2^-24 (fp16 only): 0 or 2^-24, with w's sign
  bool is_tiny = false;
  if constexpr (K == Kind::F16) {
    const int e = int((u >> 23) & 0xFF);
    int over = 113 - e;
    over = over < 0 ? 0 : (over > 10 ? 10 : over);
    mask = (1u << (13 + over)) - 1u;
    const float r24 = mul(float(bits & 0xFFFFFFu), 5.9604644775390625e-08f);
    const float q = mul(as_float(u & 0x7FFFFFFFu), 16777216.0f);
    tiny = (r24 < q ? as_bits(5.9604644775390625e-08f) : 0u) | (u & 0x80000000u);
    is_tiny = e < 103;
  }
  const uint32_t rounded = (u + (bits & mask)) & ~mask;
  const bool finite = (u & 0x7FFFFFFFu) < 0x7F800000u;
  return narrow<K>(as_float(finite ? (is_tiny ? tiny : rounded) : u));
}

// [note: select on the bits] `clipped ? mul(g, coef) : g` stopped GCC 12 from vectorising the
// CPU loop for 16-bit grads: it folds the select into the integer domain (g arrives as
// bf16 bits << 16, and leaves through the maximize xor) as `clipped ? u1 : u2` on uint32 with a
// loop-invariant bool, which its vectoriser has no pattern for ("relevant stmt not supported",
// -fopt-info-vec-missed), so the whole step ran scalar. An and/or with an all-ones or zero mask
// picks the same bits and vectorises. Measured on 16M bf16 params with bf16 states, 2 threads,
// load ~2.5-3: 87 -> 24 ms without stochastic rounding, 155 -> 37 ms with it (torch's fused
// bf16 AdamW: 24 ms); fp32 grads were never affected.

// One element of the update, in the contract's order. w is the fp32 weight (master or
// widened param); m, v, vmax are fp32 and updated in place. Returns nothing: the caller
// narrows and stores.
template <bool AMSGRAD>
ADAMW_HD void update(float& w, float g, float& m, float& v, float& vmax, const Scalars& s, float grad_scale,
                     bool maximize, bool scaled = true, float grad_coef = 1.0f, bool clipped = false) {
  if (scaled) g = div(g, grad_scale);  // unscaled == divided by 1: the same bits
  // clipping after unscaling, as a select on the bits with a mask (see [note: select on the bits])
  const uint32_t clip_mask = clipped ? 0xFFFFFFFFu : 0u;
  g = as_float((as_bits(mul(g, grad_coef)) & clip_mask) | (as_bits(g) & ~clip_mask));
  g = as_float(as_bits(g) ^ (maximize ? 0x80000000u : 0u));  // -g, without a branch
  w = mul(w, s.decay);
  m = add(mul(s.beta1, m), mul(s.one_minus_beta1, g));
  v = add(mul(s.beta2, v), mul(s.one_minus_beta2, mul(g, g)));
  float v_use = v;
  if constexpr (AMSGRAD) {
    vmax = ((v != v) | (v > vmax)) ? v : vmax;  // NaN from either side propagates, as torch.maximum
    v_use = vmax;
  }
  const float denom = add(div(sqrt_rn(v_use), s.bc2_sqrt), s.eps);
  w = sub(w, mul(s.step_size, div(m, denom)));
}

}  // namespace adamw_tau
