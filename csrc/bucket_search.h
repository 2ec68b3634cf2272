// The CPU's threshold search for the blockwise formats: #{k : x > T[k]} over a hard-coded
// ascending table T (q8_blockwise.h, q4_blockwise.h), the count the binary search of q8_encode
// and Q4Codec::encode gives, found from a bucket table built at compile time from T itself.
// Host only (the CUDA kernel keeps the binary search); used by adamw_quant_cpu.h, and checked
// against the binary search over every fp32 bit pattern by csrc/encode_check.cpp
// (tests/formats/test_bucket_search.py).
//
// [note: bucket search] A float's bits map to a key whose unsigned order is the float order
// (non-NaN values; -0.0 and +0.0 are adjacent keys): key = bits ^ (sign ? 0xFFFFFFFF : 0x80000000).
// The top BITS bits of the key pick a bucket; base[b] = #{k : key(T[k]) < the bucket's first
// key} is the count of its first value, and the count rises by at most K inside a bucket (K:
// the most thresholds any bucket holds). T ascending means x > T[k] exactly for k < count(x),
// so for x in bucket b, count(x) = base[b] + #{j < K : x > T[base[b] + j]}, with T padded by K
// +infs that no x exceeds. The K comparisons are the format's fp32 `>` on the values; the key
// only chooses where to look. A NaN is sent to key 0 (bucket 0, base 0) and exceeds nothing:
// count 0, as the binary search gives. With integer keys, `x > T[k]` and key(x) > key(T[k])
// agree for every non-NaN x as long as no threshold is -0.0 or NaN (static_asserted): -0.0 and
// +0.0 are then never split by a threshold that the float order would not split them by.
// docs/numerics.md, "8-bit states", says why this is the same rule.
#pragma once

#include <cstdint>

#if defined(__AVX2__)
#include <immintrin.h>
#endif

#include "adamw_math.h"

namespace adamw_tau {

constexpr uint32_t order_key(uint32_t bits) { return bits ^ ((bits >> 31) ? 0xFFFFFFFFu : 0x80000000u); }

// The bucket table of the N ascending thresholds `words`, BITS bits of key per bucket.
template <const uint32_t* WORDS, int N, int BITS>
struct BucketSearch {
  static constexpr int kShift = 32 - BITS;
  static constexpr uint32_t kBuckets = 1u << BITS;

  static constexpr bool valid() {
    for (int k = 0; k < N; ++k) {
      const uint32_t w = WORDS[k];
      if (w == 0x80000000u || (w & 0x7FFFFFFFu) > 0x7F800000u) return false;  // -0.0 or NaN
      if (k > 0 && order_key(WORDS[k - 1]) > order_key(w)) return false;  // ascending
    }
    return true;
  }
  static constexpr int max_rise() {
    int k = 0, most = 0;
    for (uint32_t b = 0; b < kBuckets; ++b) {  // thresholds whose key falls in bucket b
      int in = 0;
      for (; k < N && (order_key(WORDS[k]) >> kShift) == b; ++k) ++in;
      most = in > most ? in : most;
    }
    return most;
  }
  static_assert(valid(), "bucket search: the thresholds must ascend, with no -0.0 and no NaN");
  static constexpr int K = max_rise();

  struct Tables {
    uint8_t base[kBuckets + 3];  // +3: a 4-byte gather at the last bucket stays inside
    uint32_t padded[N + K];  // T, then K +infs
  };
  static constexpr Tables make() {
    Tables t{};
    int k = 0;
    for (uint32_t b = 0; b < kBuckets; ++b) {  // base[b] = #{k : key(T[k]) < b << kShift}, in one pass
      while (k < N && order_key(WORDS[k]) < (b << kShift)) ++k;
      t.base[b] = uint8_t(k);
    }
    for (int j = 0; j < N + K; ++j) t.padded[j] = j < N ? WORDS[j] : 0x7F800000u;
    return t;
  }
  static constexpr Tables kTables = make();

  // the count for one value (NaN: 0)
  static inline uint32_t count(float x) {
    const uint32_t bits = as_bits(x);
    const uint32_t key = x != x ? 0u : order_key(bits);
    const uint32_t base = kTables.base[key >> kShift];
    uint32_t c = base;
    for (int j = 0; j < K; ++j) c += uint32_t(x > as_float(kTables.padded[base + j]));
    return c;
  }

#if defined(__AVX2__)
  // the counts for 8 values, lane by lane the same as count()
  static inline __m256i count8(__m256 x) {
    const __m256i bits = _mm256_castps_si256(x);
    const __m256i sign = _mm256_srai_epi32(bits, 31);  // all ones where negative
    const __m256i flip = _mm256_or_si256(sign, _mm256_set1_epi32(int(0x80000000u)));
    const __m256i nan = _mm256_castps_si256(_mm256_cmp_ps(x, x, _CMP_UNORD_Q));
    const __m256i key = _mm256_andnot_si256(nan, _mm256_xor_si256(bits, flip));
    const __m256i idx = _mm256_srli_epi32(key, kShift);
    const __m256i base = _mm256_and_si256(
        _mm256_i32gather_epi32(reinterpret_cast<const int*>(kTables.base), idx, 1), _mm256_set1_epi32(0xFF));
    __m256i c = base;
    for (int j = 0; j < K; ++j) {
      const __m256 t = _mm256_i32gather_ps(reinterpret_cast<const float*>(kTables.padded + j), base, 4);
      c = _mm256_sub_epi32(c, _mm256_castps_si256(_mm256_cmp_ps(x, t, _CMP_GT_OQ)));  // true is -1
    }
    return c;
  }
#endif
};

}  // namespace adamw_tau
