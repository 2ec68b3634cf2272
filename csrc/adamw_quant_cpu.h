// The CPU op's loop for blockwise quantized states (adamw_tau/formats/registry.py), written once
// for every codec (state_formats.h: CodecOf). Included by adamw_cpu.cpp (and by the test-only
// csrc/encode_check.cpp, for encode_block); a block-table chunk is a multiple of
// kQuantChunkMultiple elements (the launcher refuses others), so a block never spans two tasks.
//
// [note: phases] One block of C::kBlock elements at a time, in phases, each a loop over the
// block that runs many lanes at once: decode (a map lookup, one multiply), the update
// (adamw_math.h: update, the loop the fp32 step runs), the block max, encode (a threshold
// count without a dependent search), the zero rule, the store. The element-at-a-time loop
// this replaced took 146 ms for a 16M-element fp32 8-bit step against 11 ms for fp32 (2-core
// Zen 4 CPU machine, 2026-12-03): GCC vectorised none of it, and q8_encode's 8 dependent
// table loads dominated. In phases with AVX2 gathers: 39 ms. With AVX-512 VBMI every 8-bit
// table lives in registers: the decode by byte permutes (byte_planes.h), the encode by
// octave_search.h; the 4-bit encode is its own binary search in registers (permute_search.h).
// Per element, one thread, a block in L1 (the phases timed alone): 8-bit decode 0.52 -> 0.11
// ns, encode 1.05 (gathers) -> 0.80 (table loads) -> 0.44 ns; 4-bit encode 0.77 -> 0.30 ns.
// README "The CPU quantized step" has the steps' times. Without AVX-512 the AVX2 phases run
// (gathers for the decode, bucket_search.h's table loads for the encode), without AVX2 each
// phase runs the same rule one element at a time (the per-element functions the CUDA kernel
// uses, and BucketSearch::count). Every phase keeps the rule of the per-element code, so the
// bits are the reference's (tests/formats/test_bucket_search.py checks each phase in a build
// per instruction set; the parity tests the op).
#pragma once

#include <algorithm>
#include <cstdint>
#include <type_traits>

#if defined(__AVX2__) || defined(__AVX512F__)
#include <immintrin.h>
#endif

#include "adamw_args.h"
#include "bucket_search.h"
#include "byte_planes.h"
#include "octave_search.h"
#include "permute_search.h"
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
  template <bool SIGNED>  // with AVX-512: the same bucket search on 16 lanes (permute_search.h: why)
  using Search16 = Search<SIGNED>;
  template <bool SIGNED>  // with AVX-512 VBMI: every table in registers, 64 lanes (octave_search.h)
  using Search64 = std::conditional_t<SIGNED, OctaveSearch<kQ8SignedThresholds, 255>,
                                      OctaveSearch<kQ8UnsignedThresholds, 255>>;
  template <bool SIGNED> static const uint32_t* map() { return SIGNED ? kQ8SignedMap : kQ8UnsignedMap; }
  template <bool SIGNED> static constexpr const uint32_t* kMap = SIGNED ? kQ8SignedMap : kQ8UnsignedMap;
};
template <> struct CpuTables<Q4Codec> {
  template <bool SIGNED>
  using Search = std::conditional_t<SIGNED, BucketSearch<kQ4SignedThresholds, 15>,
                                    BucketSearch<kQ4UnsignedThresholds, 15>>;
  template <bool SIGNED>  // with AVX-512: the thresholds in registers (permute_search.h)
  using Search16 = std::conditional_t<SIGNED, PermuteSearch<kQ4SignedThresholds, 15>,
                                      PermuteSearch<kQ4UnsignedThresholds, 15>>;
  template <bool SIGNED> static const uint32_t* map() { return SIGNED ? kQ4SignedMap : kQ4UnsignedMap; }
};

#if defined(__AVX512VBMI__)
// map[codes[k]] * scale for 64 codes, the bits of C::decode (one correctly rounded multiply),
// the map looked up in registers (byte_planes.h: [note: byte planes])
template <const uint32_t* MAP>
inline void decode64(const uint8_t* codes, __m512 scale, float* out) {
  static constexpr BytePlanes kPlanes = byte_planes(MAP, 256);
  __m512i d[4];
  lookup64(kPlanes, _mm512_loadu_si512(codes), d);
  for (int q = 0; q < 4; ++q) _mm512_storeu_ps(out + 16 * q, _mm512_mul_ps(_mm512_castsi512_ps(d[q]), scale));
}
#endif

// The fp32 values of n codes (one a byte): map[code] * scale, C::decode's rule.
template <class C, bool SIGNED>
inline void decode_block(const uint8_t* codes, int n, float scale, float* out) {
  int k = 0;
  const float* map = reinterpret_cast<const float*>(CpuTables<C>::template map<SIGNED>());
#if defined(__AVX512VBMI__)
  if constexpr (C::kCodes == 256) {
    const __m512 s = _mm512_set1_ps(scale);
    for (; k + 64 <= n; k += 64) decode64<CpuTables<C>::template kMap<SIGNED>>(codes + k, s, out + k);
  }
#endif
#if defined(__AVX512F__)
  if constexpr (C::kCodes == 16) {  // the map in one register
    const __m512 s = _mm512_set1_ps(scale), table = _mm512_loadu_ps(map);
    for (; k + 16 <= n; k += 16) {
      const __m512i c = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(codes + k)));
      _mm512_storeu_ps(out + k, _mm512_mul_ps(_mm512_permutexvar_ps(c, table), s));
    }
  }
#endif
#if defined(__AVX2__)
  const __m256 s8 = _mm256_set1_ps(scale);
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
    _mm256_storeu_ps(out + k, _mm256_mul_ps(value, s8));
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
#if defined(__AVX512VBMI__)
  if constexpr (C::kCodes == 256) {
    using O = typename CpuTables<C>::template Search64<SIGNED>;
    const __m512 d64 = _mm512_set1_ps(d);
    const __m512i floor64 = _mm512_set1_epi8(char(uint8_t(lowest)));
    for (; k + 64 <= n; k += 64) {
      __m512 xv[4], xhat[4];
      for (int q = 0; q < 4; ++q) {
        xv[q] = _mm512_loadu_ps(x + k + 16 * q);
        xhat[q] = _mm512_div_ps(xv[q], d64);
      }
      __m512i c = O::count64(xhat);
      if (lowest != 0) {  // a positive x takes at least `lowest`
        __mmask16 pos[4];
        for (int q = 0; q < 4; ++q) pos[q] = _mm512_cmp_ps_mask(xv[q], _mm512_setzero_ps(), _CMP_GT_OQ);
        const __mmask64 positive = _mm512_kunpackd(_mm512_kunpackw(pos[3], pos[2]), _mm512_kunpackw(pos[1], pos[0]));
        c = _mm512_max_epu8(c, _mm512_maskz_mov_epi8(positive, floor64));
      }
      _mm512_storeu_si512(out + k, c);
    }
  }
#endif
#if defined(__AVX512F__)
  const __m512 dz = _mm512_set1_ps(d);
  const __m512i lowest16 = _mm512_set1_epi32(int(lowest));
  for (; k + 16 <= n; k += 16) {
    const __m512 xv = _mm512_loadu_ps(x + k);
    const __m512i c = CpuTables<C>::template Search16<SIGNED>::count16(_mm512_div_ps(xv, dz));
    const __m512i floor = _mm512_maskz_mov_epi32(_mm512_cmp_ps_mask(xv, _mm512_setzero_ps(), _CMP_GT_OQ), lowest16);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + k), _mm512_cvtepi32_epi8(_mm512_max_epu32(c, floor)));
  }
#endif
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
    alignas(16) uint8_t rule[16] = {};
    static_assert(C::kCodes <= 16, "the rule is one 16-byte shuffle table");
    for (int c = 0; c < C::kCodes; ++c) rule[c] = uint8_t(C::zero_rule(kKeep, uint32_t(c), v_scale));
    int k = 0;
#if defined(__AVX2__)
    const __m256i table = _mm256_broadcastsi128_si256(_mm_load_si128(reinterpret_cast<const __m128i*>(rule)));
    for (; k + 32 <= n; k += 32) {  // codes < 16: vpshufb looks each up
      const __m256i r = _mm256_shuffle_epi8(table, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(cv + k)));
      const __m256i keep = _mm256_cmpeq_epi8(r, _mm256_set1_epi8(char(kKeep)));
      const __m256i old_m = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(cm + k));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(cm + k), _mm256_blendv_epi8(r, old_m, keep));
    }
#endif
    for (; k < n; ++k) cm[k] = rule[cv[k]] == kKeep ? cm[k] : rule[cv[k]];
  } else {
    for (int k = 0; k < n; ++k) cm[k] = uint8_t(C::zero_rule(cm[k], cv[k], v_scale));
  }
}

// A block's codes, one a byte: the 8-bit codes are the bytes themselves; others unpacked.
// [note: nibbles] With AVX-512BW the 4-bit codes move 64 at a time: 32 bytes widened to words,
// the high nibble shifted into the word's upper byte (unpack), and back (pack, then vpmovwb).
template <class C>
inline const uint8_t* codes_of(const uint8_t* src, int64_t first, int n, uint8_t* tmp) {
  if constexpr (C::kCodesPerByte == 1) return src + first;
  int k = 0;
#if defined(__AVX512BW__)
  if constexpr (C::kCodesPerByte == 2) {
    for (; k + 64 <= n; k += 64) {  // a block starts a byte: first + k is even
      const __m512i w = _mm512_cvtepu8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + (first + k) / 2)));
      const __m512i low = _mm512_and_si512(w, _mm512_set1_epi16(0x000F));
      const __m512i high = _mm512_and_si512(_mm512_slli_epi16(w, 4), _mm512_set1_epi16(0x0F00));
      _mm512_storeu_si512(tmp + k, _mm512_or_si512(low, high));
    }
  }
#endif
  for (; k < n; ++k) tmp[k] = uint8_t(C::code_at(src, first + k));
  return tmp;
}

// Store n codes of a block that starts at element `first` (a block starts a byte).
template <class C>
inline void store_codes(uint8_t* dst, int64_t first, const uint8_t* codes, int n) {
  int k = 0;
#if defined(__AVX512BW__)
  if constexpr (C::kCodesPerByte == 2) {
    for (; k + 64 <= n; k += 64) {  // whole bytes: C::store's rule where element i + 1 < end
      const __m512i w = _mm512_loadu_si512(codes + k);  // a word: code i | code i + 1 << 8
      const __m512i packed = _mm512_or_si512(_mm512_and_si512(w, _mm512_set1_epi16(0x000F)),
                                             _mm512_and_si512(_mm512_srli_epi16(w, 4), _mm512_set1_epi16(0x00F0)));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + (first + k) / 2), _mm512_cvtepi16_epi8(packed));
    }
  }
#endif
  for (; k < n; k += C::kCodesPerByte) C::store(dst, first + k, codes + k, first + n);
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
