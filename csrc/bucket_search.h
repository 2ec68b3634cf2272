// The CPU's threshold search for the blockwise formats: #{k : x > T[k]} over a hard-coded
// ascending table T (q8_blockwise.h, q4_blockwise.h), the count the binary search of q8_encode
// and Q4Codec::encode gives, read from a table built at compile time from T itself: one table
// load per value instead of 8 (or 4) dependent ones. Host only (the CUDA kernel keeps the
// binary search); used by adamw_quant_cpu.h, and checked against the binary search over every
// fp32 bit pattern by csrc/encode_check.cpp (tests/formats/test_bucket_search.py).
//
// [note: bucket search] A float's bits map to a key whose unsigned order is the float order
// (non-NaN values; -0.0 and +0.0 are adjacent keys): key = bits ^ (sign ? 0xFFFFFFFF : 0x80000000).
// With no threshold -0.0 or NaN (static_asserted), x > T[k] is key(x) > key(T[k]) for every
// non-NaN x: +0.0 and -0.0 are split only by a threshold between them, and there is none.
// The top 16 bits of the key pick a bucket; every table here has at most one threshold in a
// bucket (static_asserted), so count(x) = base + (low 16 bits of key(x) > low 16 bits of that
// threshold's key), base = #{k : key(T[k]) < the bucket's first key}; a bucket without a
// threshold stores 0xFFFF, which no low half exceeds. An entry is base | low << 8.
// Only the buckets between the smallest and the largest magnitude of the normal thresholds are
// stored, for each sign (x of larger magnitude takes the last, empty bucket of its sign: its
// count is the same); below, x is compared with the subnormal and zero thresholds (the signed
// map's 0x80000001 and 0x00000000) one by one, after the count of the normal negative ones,
// which all lie below it. A NaN exceeds nothing: count 0. docs/numerics.md, "8-bit states".
#pragma once

#include <cstdint>

#if defined(__AVX2__) || defined(__AVX512F__)
#include <immintrin.h>
#endif

#include "adamw_math.h"

namespace adamw_tau {

constexpr uint32_t order_key(uint32_t bits) { return bits ^ ((bits >> 31) ? 0xFFFFFFFFu : 0x80000000u); }

// The search over the N ascending thresholds WORDS (fp32 bits).
template <const uint32_t* WORDS, int N>
struct BucketSearch {
  static constexpr uint32_t kNormal = 0x00800000u;  // below: the thresholds compared one by one
  static constexpr uint32_t mag16(uint32_t w) { return (w & 0x7FFFFFFFu) >> 16; }
  static constexpr bool small(uint32_t w) { return (w & 0x7FFFFFFFu) < kNormal; }

  static constexpr bool valid() {
    for (int k = 0; k < N; ++k) {
      const uint32_t w = WORDS[k];
      if (w == 0x80000000u || (w & 0x7FFFFFFFu) > 0x7F800000u) return false;  // -0.0 or NaN
      if (k > 0 && order_key(WORDS[k - 1]) >= order_key(w)) return false;  // strictly ascending
      if (k > 0 && order_key(WORDS[k - 1]) >> 16 == order_key(w) >> 16) return false;  // one a bucket
    }
    return true;
  }
  static_assert(valid(), "bucket search: the thresholds must ascend, one a bucket, with no -0.0 and no NaN");

  // the stored magnitudes of each side (0: positive, 1: negative): [lo, hi], hi one past the largest
  static constexpr uint32_t lo(int side) {
    uint32_t m = 0xFFFFu;
    for (int k = 0; k < N; ++k)
      if (!small(WORDS[k]) && int(WORDS[k] >> 31) == side && mag16(WORDS[k]) < m) m = mag16(WORDS[k]);
    return m == 0xFFFFu ? mag16(kNormal) : m;
  }
  static constexpr uint32_t hi(int side) {
    uint32_t m = lo(side);
    for (int k = 0; k < N; ++k)
      if (!small(WORDS[k]) && int(WORDS[k] >> 31) == side && mag16(WORDS[k]) + 1 > m) m = mag16(WORDS[k]) + 1;
    return m;
  }
  static constexpr uint32_t kLo[2] = {lo(0), lo(1)}, kHi[2] = {hi(0), hi(1)};
  static constexpr uint32_t kOffset[2] = {0u, kHi[0] - kLo[0] + 1};  // where each side's entries start
  static constexpr uint32_t kEntries = kOffset[1] + kHi[1] - kLo[1] + 1;

  static constexpr int count_small() {
    int c = 0;
    for (int k = 0; k < N; ++k) c += small(WORDS[k]) ? 1 : 0;
    return c;
  }
  static constexpr int kSmall = count_small();
  static_assert(kSmall <= 4, "bucket search: at most 4 subnormal or zero thresholds");

  struct Tables {
    uint32_t entry[kEntries];
    uint32_t small[kSmall > 0 ? kSmall : 1];  // the subnormal and zero thresholds, ascending
    uint32_t below_small;  // #{normal negative thresholds}: all below a value of magnitude < lo
  };
  static constexpr Tables make() {
    Tables t{};
    for (int side = 0; side < 2; ++side) {
      for (uint32_t m = kLo[side]; m <= kHi[side]; ++m) {
        const uint32_t top = order_key((uint32_t(side) << 31) | (m << 16)) >> 16;  // the bucket's key bits
        uint32_t base = 0;  // #{k : key(T[k]) >> 16 < top}, by bisection (the keys ascend)
        for (uint32_t hi_ = N; base < hi_;) {
          const uint32_t mid = (base + hi_) / 2;
          if (order_key(WORDS[mid]) >> 16 < top) base = mid + 1;
          else hi_ = mid;
        }
        const uint32_t low = base < uint32_t(N) && order_key(WORDS[base]) >> 16 == top ? order_key(WORDS[base]) & 0xFFFFu
                                                                                         : 0xFFFFu;
        t.entry[kOffset[side] + m - kLo[side]] = base | (low << 8);
      }
    }
    int j = 0;
    for (int k = 0; k < N; ++k) {
      if (small(WORDS[k])) t.small[j++] = WORDS[k];
      else t.below_small += WORDS[k] >> 31;
    }
    return t;
  }
  static constexpr Tables kTables = make();

  // the count for one value (NaN: 0)
  static inline uint32_t count(float x) {
    const uint32_t bits = as_bits(x), side = bits >> 31, m = (bits & 0x7FFFFFFFu) >> 16;
    const uint32_t key = order_key(bits);
    uint32_t small_count = kTables.below_small;
    for (int j = 0; j < kSmall; ++j) small_count += uint32_t(x > as_float(kTables.small[j]));
    const uint32_t clamped = m < kLo[side] ? kLo[side] : (m > kHi[side] ? kHi[side] : m);
    const uint32_t e = kTables.entry[kOffset[side] + clamped - kLo[side]];
    const uint32_t table_count = (e & 0xFFu) + uint32_t((key & 0xFFFFu) > (e >> 8));
    const uint32_t c = m < kLo[side] ? small_count : table_count;
    return x != x ? 0u : c;
  }

#if defined(__AVX2__)
  // [note: table loads, not gathers] entry[idx] lane by lane by scalar loads (the compiler
  // inserts them into the vector, vpinsrd): on the Zen 4 CPU machine a ymm gather from this
  // L1-resident table cost more than eight loads (the 8-bit encode, one thread, a block in L1:
  // 1.05 ns an element with vpgatherdd, 0.77-0.92 with loads), and reading the loaded words back
  // through memory as one vector stalls on store forwarding (1.5 ns).
  static inline __m256i lookup8(__m256i idx) {
    alignas(32) uint32_t ix[8];
    _mm256_store_si256(reinterpret_cast<__m256i*>(ix), idx);
    const uint32_t* t = kTables.entry;
    return _mm256_setr_epi32(int(t[ix[0]]), int(t[ix[1]]), int(t[ix[2]]), int(t[ix[3]]), int(t[ix[4]]), int(t[ix[5]]),
                             int(t[ix[6]]), int(t[ix[7]]));
  }
#endif

#if defined(__AVX512F__)
  // the counts for 16 values, lane by lane the same as count(): count8 with masks
  static inline __m512i count16(__m512 x) {
    const __m512i bits = _mm512_castps_si512(x);
    const __mmask16 neg = _mm512_cmplt_epi32_mask(bits, _mm512_setzero_si512());
    const __m512i m = _mm512_srli_epi32(_mm512_and_si512(bits, _mm512_set1_epi32(0x7FFFFFFF)), 16);
    const __m512i key = _mm512_xor_si512(
        bits, _mm512_mask_blend_epi32(neg, _mm512_set1_epi32(int(0x80000000u)), _mm512_set1_epi32(-1)));
    const __m512i lo = _mm512_mask_blend_epi32(neg, _mm512_set1_epi32(int(kLo[0])), _mm512_set1_epi32(int(kLo[1])));
    const __m512i hi = _mm512_mask_blend_epi32(neg, _mm512_set1_epi32(int(kHi[0])), _mm512_set1_epi32(int(kHi[1])));
    const __m512i clamped = _mm512_min_epu32(_mm512_max_epu32(m, lo), hi);
    const __m512i idx = _mm512_mask_add_epi32(_mm512_sub_epi32(clamped, lo), neg, _mm512_sub_epi32(clamped, lo),
                                              _mm512_set1_epi32(int(kOffset[1])));
    const __m512i e = _mm512_inserti64x4(_mm512_castsi256_si512(lookup8(_mm512_castsi512_si256(idx))),
                                         lookup8(_mm512_extracti64x4_epi64(idx, 1)), 1);
    const __mmask16 above =
        _mm512_cmpgt_epu32_mask(_mm512_and_si512(key, _mm512_set1_epi32(0xFFFF)), _mm512_srli_epi32(e, 8));
    const __m512i table_count = _mm512_mask_add_epi32(_mm512_and_si512(e, _mm512_set1_epi32(0xFF)), above,
                                                      _mm512_and_si512(e, _mm512_set1_epi32(0xFF)), _mm512_set1_epi32(1));
    __m512i small_count = _mm512_set1_epi32(int(kTables.below_small));
    for (int j = 0; j < kSmall; ++j)
      small_count = _mm512_mask_add_epi32(small_count,
                                          _mm512_cmp_ps_mask(x, _mm512_set1_ps(as_float(kTables.small[j])), _CMP_GT_OQ),
                                          small_count, _mm512_set1_epi32(1));
    const __mmask16 is_small = _mm512_cmplt_epu32_mask(m, lo);
    const __m512i c = _mm512_mask_blend_epi32(is_small, table_count, small_count);
    return _mm512_maskz_mov_epi32(_mm512_cmp_ps_mask(x, x, _CMP_ORD_Q), c);
  }
#endif

#if defined(__AVX2__)
  // the counts for 8 values, lane by lane the same as count()
  static inline __m256i count8(__m256 x) {
    const __m256i bits = _mm256_castps_si256(x);
    const __m256i neg = _mm256_srai_epi32(bits, 31);  // all ones where the sign is set
    const __m256i m = _mm256_srli_epi32(_mm256_and_si256(bits, _mm256_set1_epi32(0x7FFFFFFF)), 16);
    const __m256i key = _mm256_xor_si256(bits, _mm256_or_si256(neg, _mm256_set1_epi32(int(0x80000000u))));
    const __m256i lo = _mm256_blendv_epi8(_mm256_set1_epi32(int(kLo[0])), _mm256_set1_epi32(int(kLo[1])), neg);
    const __m256i hi = _mm256_blendv_epi8(_mm256_set1_epi32(int(kHi[0])), _mm256_set1_epi32(int(kHi[1])), neg);
    const __m256i off = _mm256_and_si256(neg, _mm256_set1_epi32(int(kOffset[1])));
    const __m256i clamped = _mm256_min_epi32(_mm256_max_epi32(m, lo), hi);
    const __m256i idx = _mm256_add_epi32(_mm256_sub_epi32(clamped, lo), off);
    const __m256i e = lookup8(idx);
    const __m256i above = _mm256_cmpgt_epi32(_mm256_and_si256(key, _mm256_set1_epi32(0xFFFF)), _mm256_srli_epi32(e, 8));
    const __m256i table_count = _mm256_sub_epi32(_mm256_and_si256(e, _mm256_set1_epi32(0xFF)), above);  // true is -1
    __m256i small_count = _mm256_set1_epi32(int(kTables.below_small));
    for (int j = 0; j < kSmall; ++j)
      small_count = _mm256_sub_epi32(
          small_count, _mm256_castps_si256(_mm256_cmp_ps(x, _mm256_set1_ps(as_float(kTables.small[j])), _CMP_GT_OQ)));
    const __m256i is_small = _mm256_cmpgt_epi32(lo, m);
    const __m256i c = _mm256_blendv_epi8(table_count, small_count, is_small);
    return _mm256_andnot_si256(_mm256_castps_si256(_mm256_cmp_ps(x, x, _CMP_UNORD_Q)), c);
  }
#endif

};

}  // namespace adamw_tau
