// The CPU's threshold search for tables small enough to live in registers (the 4-bit formats'
// 15 thresholds): the codec's own binary search (Q4Codec::encode: `code += (x̂ > T[code + bit -
// 1]) * bit`, bit = 8, 4, 2, 1), run on 16 lanes at once with the level's candidate thresholds
// in one zmm register, picked by a permute on the code so far. The same comparisons in the same
// order as the per-element search, so the same code for every x̂ (NaN: greater than nothing, 0),
// by construction; csrc/encode_check.cpp checks it over every fp32 pattern all the same. Host
// only, AVX-512F; used by adamw_quant_cpu.h.
//
// [note: why not for 8-bit] The same search for the 255 thresholds of the 8-bit maps takes 8
// levels, the last three over 32, 64 and 128 candidates (2, 4 and 8 registers): about 46 ops
// per 16 lanes, and measured slower than bucket_search.h's one table load per value on the Zen 4
// CPU machine (one thread, a block in L1: 0.98 against 0.80 ns an element). For the 4-bit maps
// it is 4 levels of 3 ops: 0.30 against 0.77 ns an element.
#pragma once

#include <bit>
#include <cstdint>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#include "adamw_math.h"

namespace adamw_tau {

// The search over the N ascending thresholds WORDS (fp32 bits), N + 1 a power of two, at most 16.
template <const uint32_t* WORDS, int N>
struct PermuteSearch {
  static_assert(N + 1 <= 16 && ((N + 1) & N) == 0, "permute search: 2^k - 1 thresholds, at most 15");
  static constexpr int kLevels = std::countr_zero(unsigned(N + 1));
  // level j (bit = (N + 1) >> (j + 1)): entry i is T[i * 2 * bit + bit - 1], the threshold the
  // per-element search compares with when the code so far is i * 2 * bit
  struct Tables {
    alignas(64) uint32_t t[kLevels > 0 ? kLevels : 1][16];
  };
  static constexpr Tables make() {
    Tables s{};
    for (int j = 0; j < kLevels; ++j) {
      const int bit = (N + 1) >> (j + 1);
      for (int i = 0; i < (N + 1) / (2 * bit); ++i) s.t[j][i] = WORDS[i * 2 * bit + bit - 1];
    }
    return s;
  }
  static constexpr Tables kTables = make();

#if defined(__AVX512F__)
  // #{k : x > T[k]} for 16 values, lane by lane the binary search's count
  static inline __m512i count16(__m512 x) {
    __m512i code = _mm512_setzero_si512();
    for (int j = 0; j < kLevels; ++j) {
      const int bit = (N + 1) >> (j + 1);
      const __m512i index = _mm512_srli_epi32(code, std::countr_zero(unsigned(2 * bit)));
      const __m512 t = _mm512_permutexvar_ps(index, _mm512_castsi512_ps(_mm512_load_si512(kTables.t[j])));
      code = _mm512_mask_add_epi32(code, _mm512_cmp_ps_mask(x, t, _CMP_GT_OQ), code, _mm512_set1_epi32(bit));
    }
    return code;
  }
#endif
};

}  // namespace adamw_tau
