// The CPU's threshold search for the 8-bit maps with AVX-512 VBMI: #{k : x̂ > T[k]} for 64
// values at once with every table in registers, no table load per value. Host only; used by
// adamw_quant_cpu.h's encode_block; checked against the codec's binary search over every fp32
// bit pattern by csrc/encode_check.cpp (tests/formats/test_bucket_search.py).
//
// [note: octave search] Three lookups and one comparison a value:
//   1. the octave: the exponent field e picks a slot, the same for both signs: slot 0 is e = 0
//      (zero and subnormals), slot 1 every e below the smallest normal threshold's, then one
//      slot per exponent up to the largest threshold's, and a last slot for every e above (inf
//      and NaN included). A 32-dword table per sign (vpermt2d) gives the slot's first bucket and
//      how many mantissa bits split it (as few as leave at most one threshold in a bucket);
//   2. the bucket: first + (mantissa >> (23 - bits)), under 512; a byte table of the buckets
//      (four 128-byte segments, vpermt2b) gives base = #{k : T[k] lies below the bucket};
//   3. T[base], from the thresholds held as four 256-byte planes (byte_planes.h: [note: byte
//      planes]), T[255] = +inf;
// and the code is base + (x̂ > T[base]): the bucket holds T[base] or no threshold at all (then
// T[base] lies above every value of the bucket and the comparison is false). The comparison is
// the binary search's own (a float `>`), so -0.0, +0.0 and the subnormal thresholds need no
// rule of their own; a NaN x̂ takes code 0. The layout's limits (32 slots, 512 buckets, one
// threshold a bucket) are static_asserted when the tables are built.
// About 130 register ops per 64 values. Measured on the 2-core Zen 4 CPU machine, one thread,
// a block in L1, the whole encode (division included): 0.44 ns an element, against 0.80 with
// bucket_search.h's table loads and 1.05 with its AVX2 gathers (2026-12-03).
#pragma once

#include <cstdint>

#if defined(__AVX512VBMI__)
#include <immintrin.h>
#endif

#include "adamw_math.h"
#include "bucket_search.h"  // order_key
#include "byte_planes.h"

namespace adamw_tau {

// The tables the scalar count reads, for one map: 1792 bytes.
struct OctaveTables {
  alignas(16) uint32_t level1[2][32];  // per sign and slot: first bucket | (23 - bits) << 16
  uint32_t words[256];                 // T, and T[255] = +inf
  uint8_t level2[512];                 // per bucket: base
};

template <const uint32_t* WORDS, int N>
struct OctaveSearch {
  static_assert(N == 255, "octave search: the 8-bit maps' 255 thresholds (T[255] is the +inf pad)");
  static constexpr uint32_t exponent(uint32_t w) { return (w >> 23) & 0xFFu; }
  static constexpr uint32_t low_exponent() {
    uint32_t e = 255;
    for (int k = 0; k < N; ++k)
      if (exponent(WORDS[k]) != 0 && exponent(WORDS[k]) < e) e = exponent(WORDS[k]);
    return e == 255 ? 1 : e;
  }
  static constexpr uint32_t high_exponent() {
    uint32_t e = 0;
    for (int k = 0; k < N; ++k)
      if (exponent(WORDS[k]) > e) e = exponent(WORDS[k]);
    return e < low_exponent() ? low_exponent() : e;
  }
  static constexpr uint32_t kLowExp = low_exponent(), kHighExp = high_exponent();
  static constexpr int kSlots = int(kHighExp - kLowExp) + 4;
  static_assert(kHighExp < 255, "octave search: no infinite threshold");
  static_assert(kSlots <= 32, "octave search: at most 32 octave slots (one vpermt2d)");

  // the magnitudes (bits without the sign) of slot s: [first, last)
  static constexpr uint32_t slot_first(int s) {
    return s == 0 ? 0u : (s == 1 ? 1u << 23 : (s == kSlots - 1 ? (kHighExp + 1) << 23 : (kLowExp + uint32_t(s) - 2) << 23));
  }
  static constexpr uint32_t slot_last(int s) { return s == kSlots - 1 ? 0x80000000u : slot_first(s + 1); }
  // for slot 1 when the smallest normal threshold has exponent 1: an empty range, one bucket
  static constexpr bool single_exponent(int s) { return s != 1 && s != kSlots - 1; }

  static constexpr int thresholds_in(uint32_t side, uint32_t first, uint32_t last) {
    int c = 0;
    for (int k = 0; k < N; ++k) {
      const uint32_t mag = WORDS[k] & 0x7FFFFFFFu;
      c += (WORDS[k] >> 31) == side && mag >= first && mag < last ? 1 : 0;
    }
    return c;
  }
  // #{k : key(T[k]) < the smallest key of magnitudes [first, last) on this side}
  static constexpr uint32_t base_of(uint32_t side, uint32_t first, uint32_t last) {
    const uint32_t least = side == 0 ? order_key(first) : order_key(0x80000000u | (last - 1));
    uint32_t c = 0;
    for (int k = 0; k < N; ++k) c += order_key(WORDS[k]) < least ? 1u : 0u;
    return c;
  }

  struct Tables {
    OctaveTables core;   // what the scalar count reads (the CUDA kernel's copy)
    BytePlanes planes;   // T (T[255] = +inf) for count64
    int buckets;
    bool valid;
  };
  static constexpr Tables make() {
    Tables t{};
    auto& level1 = t.core.level1;
    auto& level2 = t.core.level2;
    t.valid = true;
    int next = 0;
    for (uint32_t side = 0; side < 2; ++side) {
      for (int s = 0; s < 32; ++s) {
        if (s >= kSlots) {  // unused slots point at bucket 0 (never indexed: the slot is clamped)
          level1[side][s] = 23u << 16;
          continue;
        }
        const uint32_t first = slot_first(s), last = slot_last(s);
        int bits = 0;
        if (single_exponent(s)) {
          for (; bits < 23; ++bits) {  // the fewest mantissa bits that leave at most one threshold a bucket
            bool ok = true;
            for (uint32_t j = 0; ok && j < (1u << bits); ++j)
              ok = thresholds_in(side, first + (j << (23 - bits)), first + ((j + 1) << (23 - bits))) <= 1;
            if (ok) break;
          }
        }
        const uint32_t width = single_exponent(s) ? 1u << (23 - bits) : last - first;
        for (uint32_t j = 0; j < (1u << bits); ++j) {
          const uint32_t lo = first + j * width, hi = single_exponent(s) ? lo + width : last;
          if (thresholds_in(side, lo, hi) > 1) t.valid = false;
          if (next < 512) level2[next] = uint8_t(base_of(side, lo, hi));
          ++next;
        }
        level1[side][s] = uint32_t(next - (1 << bits)) | (uint32_t(23 - bits) << 16);
      }
    }
    t.buckets = next;
    for (int k = 0; k < 256; ++k) t.core.words[k] = k < N ? WORDS[k] : 0x7F800000u;
    t.planes = byte_planes(WORDS, N, 0x7F800000u);
    return t;
  }
  static constexpr Tables kTables = make();
  static_assert(kTables.valid, "octave search: a bucket holds two thresholds");
  static_assert(kTables.buckets <= 512, "octave search: at most 512 buckets (four vpermt2b segments)");

  // the count for one value, from tables laid out as kTables.core (the host's own, or the CUDA
  // kernel's shared-memory copy): count64's rule, one value at a time
  ADAMW_HD static uint32_t count(float x, const OctaveTables& t) {
    const uint32_t bits = as_bits(x), e = (bits >> 23) & 0xFFu;
    const uint32_t clamped = e < kLowExp - 1 ? kLowExp - 1 : (e > kHighExp + 1 ? kHighExp + 1 : e);
    const uint32_t slot = e == 0 ? 0u : clamped - (kLowExp - 2);
    const uint32_t entry = t.level1[bits >> 31][slot];
    const uint32_t base = t.level2[(entry & 0xFFFFu) + ((bits & 0x7FFFFFu) >> (entry >> 16))];
    const uint32_t c = base + uint32_t(x > as_float(t.words[base]));
    return x != x ? 0u : c;
  }

#if defined(__AVX512VBMI__)
  // the codes of 64 values x̂ (four registers, element order), one a byte, in element order
  static inline __m512i count64(const __m512 (&x)[4]) {
    const __m512i pos_lo = _mm512_loadu_si512(kTables.core.level1[0]), pos_hi = _mm512_loadu_si512(kTables.core.level1[0] + 16);
    const __m512i neg_lo = _mm512_loadu_si512(kTables.core.level1[1]), neg_hi = _mm512_loadu_si512(kTables.core.level1[1] + 16);
    __m512i bucket[4];
    __mmask16 greater[4], ordered[4];
    for (int q = 0; q < 4; ++q) {
      const __m512i bits = _mm512_castps_si512(x[q]);
      const __mmask16 neg = _mm512_cmplt_epi32_mask(bits, _mm512_setzero_si512());
      const __m512i e = _mm512_and_si512(_mm512_srli_epi32(bits, 23), _mm512_set1_epi32(0xFF));
      const __m512i clamped = _mm512_min_epu32(_mm512_max_epu32(e, _mm512_set1_epi32(int(kLowExp - 1))),
                                               _mm512_set1_epi32(int(kHighExp + 1)));
      // slot: 0 where e == 0, else clamped - kLowExp + 2
      const __m512i slot = _mm512_maskz_sub_epi32(_mm512_test_epi32_mask(e, e), clamped,
                                                  _mm512_set1_epi32(int(kLowExp) - 2));
      const __m512i entry = _mm512_mask_blend_epi32(neg, _mm512_permutex2var_epi32(pos_lo, slot, pos_hi),
                                                    _mm512_permutex2var_epi32(neg_lo, slot, neg_hi));
      const __m512i mantissa = _mm512_and_si512(bits, _mm512_set1_epi32(0x7FFFFF));
      bucket[q] = _mm512_add_epi32(_mm512_and_si512(entry, _mm512_set1_epi32(0xFFFF)),
                                   _mm512_srlv_epi32(mantissa, _mm512_srli_epi32(entry, 16)));
      ordered[q] = _mm512_cmp_ps_mask(x[q], x[q], _CMP_ORD_Q);
    }
    // the buckets' low bytes and their bit 8, 64 bytes in element order
    const __m512i byte0 = _mm512_load_si512(kPick.b[0]), byte1 = _mm512_load_si512(kPick.b[1]);
    const __m512i low = _mm512_inserti64x4(_mm512_permutex2var_epi8(bucket[0], byte0, bucket[1]),
                                           _mm512_castsi512_si256(_mm512_permutex2var_epi8(bucket[2], byte0, bucket[3])), 1);
    const __m512i high = _mm512_inserti64x4(_mm512_permutex2var_epi8(bucket[0], byte1, bucket[1]),
                                            _mm512_castsi512_si256(_mm512_permutex2var_epi8(bucket[2], byte1, bucket[3])), 1);
    const __mmask64 bit7 = _mm512_movepi8_mask(low), bit8 = _mm512_test_epi8_mask(high, _mm512_set1_epi8(1));
    const __m512i* l2 = reinterpret_cast<const __m512i*>(kTables.core.level2);
    const __m512i seg01 = _mm512_mask_blend_epi8(bit7, _mm512_permutex2var_epi8(_mm512_loadu_si512(l2), low, _mm512_loadu_si512(l2 + 1)),
                                                 _mm512_permutex2var_epi8(_mm512_loadu_si512(l2 + 2), low, _mm512_loadu_si512(l2 + 3)));
    const __m512i seg23 = _mm512_mask_blend_epi8(bit7, _mm512_permutex2var_epi8(_mm512_loadu_si512(l2 + 4), low, _mm512_loadu_si512(l2 + 5)),
                                                 _mm512_permutex2var_epi8(_mm512_loadu_si512(l2 + 6), low, _mm512_loadu_si512(l2 + 7)));
    const __m512i base = _mm512_mask_blend_epi8(bit8, seg01, seg23);
    // T[base] as four dword registers in element order (byte_planes.h)
    __m512i t[4];
    lookup64(kTables.planes, base, t);
    for (int q = 0; q < 4; ++q) greater[q] = _mm512_cmp_ps_mask(x[q], _mm512_castsi512_ps(t[q]), _CMP_GT_OQ);
    const __mmask64 gt = _mm512_kunpackd(_mm512_kunpackw(greater[3], greater[2]), _mm512_kunpackw(greater[1], greater[0]));
    const __mmask64 ord = _mm512_kunpackd(_mm512_kunpackw(ordered[3], ordered[2]), _mm512_kunpackw(ordered[1], ordered[0]));
    return _mm512_maskz_mov_epi8(ord, _mm512_mask_add_epi8(base, gt, base, _mm512_set1_epi8(1)));
  }

  // byte k of dword j of two registers, for k = 0 and 1: picks[k][i] = 4 i + k (i < 32; indices
  // 64 and up read the second register)
  struct Picks {
    alignas(64) uint8_t b[2][64];
    static constexpr Picks make() {
      Picks p{};
      for (int k = 0; k < 2; ++k)
        for (int i = 0; i < 64; ++i) p.b[k][i] = uint8_t((4 * (i % 32) + k) & 127);
      return p;
    }
  };
  static constexpr Picks kPick = Picks::make();
#endif
};

}  // namespace adamw_tau
