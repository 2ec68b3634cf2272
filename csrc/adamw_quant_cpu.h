// The CPU op's loop for blockwise quantized states (adamw_tau/formats/registry.py), written once
// for every codec (state_formats.h: CodecOf). Included by adamw_cpu.cpp (and by the test-only
// csrc/encode_check.cpp, for encode_block); a block-table chunk is a multiple of
// kQuantChunkMultiple elements (the launcher refuses others), so a block never spans two tasks.
//
// [note: phases] One block of C::kBlock elements at a time, in phases, each a loop over the
// block that runs 8 lanes at once: decode (a gather from the 256- or 16-entry map, one
// multiply), the update (adamw_math.h: update, the loop the fp32 step runs), the block max,
// encode (bucket_search.h: the threshold count without a dependent search), the zero rule, the
// store. The element-at-a-time loop this replaced took 146 ms for a 16M-element fp32 8-bit step
// against 11 ms for fp32 (2-core CPU machine, 2026-12-03): GCC 12 (tuned for znver3 by
// -march=native) vectorised none of it, and q8_encode's 8 dependent table loads dominated. In
// phases: 39 ms. What is left is the table loads: a gather a lane each to decode m and v and to
// encode them (2-3 cycles a lane on that CPU), README "The CPU quantized step".
// The gathers are AVX2 intrinsics (GCC's cost model for this CPU never emits a gather); without
// AVX2 each phase runs the same rule one element at a time (the per-element functions the CUDA
// kernel uses, and BucketSearch::count). Every phase keeps the rule of the per-element code, so
// the bits are the reference's (tests/formats/test_bucket_search.py, the parity tests).
#pragma once

#include <algorithm>
#include <cstdint>
#include <type_traits>

#if defined(__AVX2__)
#include <immintrin.h>
#endif

#include "adamw_args.h"
#include "bucket_search.h"
#include "state_formats.h"

namespace adamw_tau {
namespace {

// Each codec's host tables for the CPU loop: its maps, and its thresholds' bucket search (BITS
// per table: the most thresholds a bucket holds, K, is 3 for both 8-bit tables at 13 and 14
// bits, 1 and 2 for the 4-bit ones at 11; the base table is 2^BITS bytes).
template <class C> struct CpuTables;
template <> struct CpuTables<Q8Codec> {
  template <bool SIGNED>
  using Search = std::conditional_t<SIGNED, BucketSearch<kQ8SignedThresholds, 255>,
                                    BucketSearch<kQ8UnsignedThresholds, 255>>;
  template <bool SIGNED> static const uint32_t* map() { return SIGNED ? kQ8SignedMap : kQ8UnsignedMap; }
};
template <> struct CpuTables<Q4Codec> {
  template <bool SIGNED>
  using Search = std::conditional_t<SIGNED, BucketSearch<kQ4SignedThresholds, 15>,
                                    BucketSearch<kQ4UnsignedThresholds, 15>>;
  template <bool SIGNED> static const uint32_t* map() { return SIGNED ? kQ4SignedMap : kQ4UnsignedMap; }
};

// The fp32 values of n codes (one a byte): map[code] * scale, C::decode's rule.
template <class C, bool SIGNED>
inline void decode_block(const uint8_t* codes, int n, float scale, float* out) {
  int k = 0;
  const float* map = reinterpret_cast<const float*>(CpuTables<C>::template map<SIGNED>());
#if defined(__AVX2__)
  const __m256 s = _mm256_set1_ps(scale);
  for (; k + 8 <= n; k += 8) {
    const __m256i c = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(codes + k)));
    __m256 value;
    if constexpr (C::kCodes == 16) {  // the map in two registers: a permute of each, picked by bit 3
      const __m256 low = _mm256_permutevar8x32_ps(_mm256_loadu_ps(map), c);
      const __m256 high = _mm256_permutevar8x32_ps(_mm256_loadu_ps(map + 8), c);
      value = _mm256_blendv_ps(low, high, _mm256_castsi256_ps(_mm256_slli_epi32(c, 28)));
    } else {
      value = _mm256_i32gather_ps(map, c, 4);
    }
    _mm256_storeu_ps(out + k, _mm256_mul_ps(value, s));
  }
#endif
  for (; k < n; ++k) out[k] = C::template decode<SIGNED>(codes[k], scale);
}

// Codes of n elements into `out` (one a byte): C::encode's rule, x̂ = x / scale (x when the
// scale is 0), #{k : x̂ > T[k]} by the bucket search, and a positive x of the unsigned map
// takes at least `lowest`. tests/formats/test_bucket_search.py checks it against C::encode
// over every fp32 bit pattern.
template <class C, bool SIGNED>
inline void encode_block(const float* x, int n, float scale, uint8_t* out, uint32_t lowest) {
  using S = typename CpuTables<C>::template Search<SIGNED>;
  const float d = scale == 0.0f ? 1.0f : scale;
  int k = 0;
#if defined(__AVX2__)
  const __m256 dv = _mm256_set1_ps(d);
  const __m256i lo = _mm256_set1_epi32(int(lowest));
  for (; k + 8 <= n; k += 8) {
    const __m256 xv = _mm256_loadu_ps(x + k);
    __m256i c = S::count8(_mm256_div_ps(xv, dv));
    const __m256i floor = _mm256_and_si256(_mm256_castps_si256(_mm256_cmp_ps(xv, _mm256_setzero_ps(), _CMP_GT_OQ)), lo);
    c = _mm256_max_epu32(c, floor);
    const __m128i c16 = _mm_packus_epi32(_mm256_castsi256_si128(c), _mm256_extracti128_si256(c, 1));
    _mm_storel_epi64(reinterpret_cast<__m128i*>(out + k), _mm_packus_epi16(c16, c16));
  }
#endif
  for (; k < n; ++k) {
    const uint32_t code = S::count(div(x[k], d));
    const uint32_t floor = x[k] > 0.0f ? lowest : 0u;
    out[k] = uint8_t(code < floor ? floor : code);
  }
}

// The block max of |x| (q8_max over q8_abs: a NaN propagates). On the bits, |x| of a non-NaN
// orders as an integer, so an integer max is the max; a NaN's bits are above +inf's, and then
// q8_max's own loop gives its answer (which NaN).
inline float block_max_abs(const float* x, int n) {
  uint32_t most = 0;
  for (int k = 0; k < n; ++k) most = std::max(most, as_bits(x[k]) & 0x7FFFFFFFu);
  if (most <= 0x7F800000u) return as_float(most);
  float m = 0.0f;
  for (int k = 0; k < n; ++k) m = q8_max(m, q8_abs(x[k]));
  return m;
}

// C::zero_rule over a block: m's code from v's (the one the next step divides by). A codec with
// fewer codes than a block has elements (4-bit: 16 against 128) gets its rule once per code and
// block: rule[c] is the zero code, or kKeep where m keeps its own (C::zero_rule never returns
// kKeep, which is no code); the 4-bit rule decodes v, a table load and a multiply an element.
template <class C>
inline void zero_rule_block(uint8_t* cm, const uint8_t* cv, int n, float v_scale) {
  if constexpr (C::kCodes < C::kBlock) {
    constexpr uint32_t kKeep = 0xFFu;
    static_assert(C::kCodes <= 255, "kKeep must be no code");
    uint8_t rule[C::kCodes];
    for (int c = 0; c < C::kCodes; ++c) rule[c] = uint8_t(C::zero_rule(kKeep, uint32_t(c), v_scale));
    for (int k = 0; k < n; ++k) cm[k] = rule[cv[k]] == kKeep ? cm[k] : rule[cv[k]];
  } else {
    for (int k = 0; k < n; ++k) cm[k] = uint8_t(C::zero_rule(cm[k], cv[k], v_scale));
  }
}

// A block's codes, one a byte: the 8-bit codes are the bytes themselves; others unpacked.
template <class C>
inline const uint8_t* codes_of(const uint8_t* src, int64_t first, int n, uint8_t* tmp) {
  if constexpr (C::kCodesPerByte == 1) return src + first;
  for (int k = 0; k < n; ++k) tmp[k] = uint8_t(C::code_at(src, first + k));
  return tmp;
}

// Store n codes of a block that starts at element `first` (a block starts a byte).
template <class C>
inline void store_codes(uint8_t* dst, int64_t first, const uint8_t* codes, int n) {
  for (int k = 0; k < n; k += C::kCodesPerByte) C::store(dst, first + k, codes + k, first + n);
}

template <class C, Kind P, Kind G, bool AMSGRAD, Write W, bool SCALE>
__attribute__((noinline)) void step_range_quant(const TensorArgs t, int64_t begin, int64_t end, const Scalars s,
                                                const float grad_scale, const bool maximize, const uint32_t key,
                                                const float coef, const bool clipped) {
  using PT = typename Storage<P>::type;
  using GT = typename Storage<G>::type;
  constexpr int B = C::kBlock;
  PT* __restrict__ p = static_cast<PT*>(t.p);
  const GT* __restrict__ g = static_cast<const GT*>(t.g);
  uint8_t* __restrict__ m = static_cast<uint8_t*>(t.m);
  uint8_t* __restrict__ v = static_cast<uint8_t*>(t.v);
  uint8_t* __restrict__ vmax = static_cast<uint8_t*>(t.vmax);
  float* __restrict__ master = static_cast<float*>(t.master);
  int16_t* __restrict__ rem = static_cast<int16_t*>(t.master);  // Write::Remainder: the remainders
  alignas(32) float mb[B], vb[B], vmb[B];  // the block's fp32 moments, old then new
  alignas(32) uint8_t cm[B], cv[B], cvm[B];  // codes: old (unpacked), then new
  for (int64_t qb = begin; qb < end; qb += B) {
    const int n = int(std::min<int64_t>(B, end - qb));
    const int64_t b = qb / B;
    decode_block<C, true>(codes_of<C>(m, qb, n, cm), n, t.m_scale[b], mb);
    decode_block<C, false>(codes_of<C>(v, qb, n, cv), n, t.v_scale[b], vb);
    if constexpr (AMSGRAD) decode_block<C, false>(codes_of<C>(vmax, qb, n, cvm), n, t.vmax_scale[b], vmb);
    float* __restrict__ mr = mb;
    float* __restrict__ vr = vb;
    float* __restrict__ vmr = vmb;
    for (int k = 0; k < n; ++k) {
      const int64_t i = qb + k;
      float w = read_weight<P, W>(p, master, rem, i);
      float vm = AMSGRAD ? vmr[k] : 0.0f;
      update<AMSGRAD>(w, widen<G>(g[i]), mr[k], vr[k], vm, s, SCALE ? grad_scale : 1.0f, maximize, SCALE, coef,
                      clipped);
      if constexpr (AMSGRAD) vmr[k] = vm;
      write_weight<P, W>(w, p, master, rem, i, key);
    }
    const float max_m = block_max_abs(mb, n), max_v = block_max_abs(vb, n);
    const float max_vm = AMSGRAD ? block_max_abs(vmb, n) : 0.0f;
    encode_block<C, true>(mb, n, max_m, cm, 0);
    encode_block<C, false>(vb, n, max_v, cv, C::lowest_positive(max_v));
    if constexpr (AMSGRAD) encode_block<C, false>(vmb, n, max_vm, cvm, C::lowest_positive(max_vm));
    const uint8_t* divides_by = AMSGRAD ? cvm : cv;  // the second moment the next step divides by
    const float divides_scale = AMSGRAD ? max_vm : max_v;
    zero_rule_block<C>(cm, divides_by, n, divides_scale);
    store_codes<C>(m, qb, cm, n);
    store_codes<C>(v, qb, cv, n);
    if constexpr (AMSGRAD) store_codes<C>(vmax, qb, cvm, n);
    t.m_scale[b] = max_m;
    t.v_scale[b] = max_v;
    if constexpr (AMSGRAD) t.vmax_scale[b] = max_vm;
  }
}

}  // namespace
}  // namespace adamw_tau
