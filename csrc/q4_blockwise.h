// The 4-bit blockwise state format (adamw_tau/formats/q4_blockwise.py, docs/numerics.md "4-bit
// states") for the C++ and CUDA kernels: its tables as fp32 words (the Python module's words;
// tests/formats/test_q4_blockwise.py reads them from this file), and the per-element encode and
// decode. Two codes a byte, low nibble first.
//
// Q4Codec is the format for the kernels (state_formats.h: CodecOf), with the interface every
// codec has (q8_blockwise.h: Q8Codec, where it is described).
#pragma once

#include <cstdint>

#include "adamw_math.h"

namespace adamw_tau {

constexpr int kQ4Block = 128;  // elements per scale

#define ADAMW_Q4_SIGNED_MAP \
  0xBF633333u, 0xBF29999Au, 0xBEE00000u, 0xBE599999u, 0xBD9EB852u, 0xBD051EB9u, 0xBBB43958u, 0x00000000u, \
  0x3BB43958u, 0x3D051EB9u, 0x3D9EB852u, 0x3E599999u, 0x3EE00000u, 0x3F29999Au, 0x3F633333u, 0x3F800000u
#define ADAMW_Q4_UNSIGNED_MAP \
  0x3D800000u, 0x3E000000u, 0x3E400000u, 0x3E800000u, 0x3EA00000u, 0x3EC00000u, 0x3EE00000u, 0x3F000000u, \
  0x3F100000u, 0x3F200000u, 0x3F300000u, 0x3F400000u, 0x3F500000u, 0x3F600000u, 0x3F700000u, 0x3F800000u
#define ADAMW_Q4_SIGNED_THRESHOLDS \
  0xBF466667u, 0xBF0CCCCDu, 0xBEA66667u, 0xBE147AE1u, 0xBD6147AFu, 0xBC9BA5E4u, 0xBB343958u, 0x3B343958u, \
  0x3C9BA5E4u, 0x3D6147AEu, 0x3E147AE1u, 0x3EA66666u, 0x3F0CCCCDu, 0x3F466666u, 0x3F719999u
#define ADAMW_Q4_UNSIGNED_THRESHOLDS \
  0x3DC00000u, 0x3E200000u, 0x3E600000u, 0x3E900000u, 0x3EB00000u, 0x3ED00000u, 0x3EF00000u, 0x3F080000u, \
  0x3F180000u, 0x3F280000u, 0x3F380000u, 0x3F480000u, 0x3F580000u, 0x3F680000u, 0x3F780000u

inline constexpr uint32_t kQ4SignedMap[16] = {ADAMW_Q4_SIGNED_MAP};
inline constexpr uint32_t kQ4UnsignedMap[16] = {ADAMW_Q4_UNSIGNED_MAP};
inline constexpr uint32_t kQ4SignedThresholds[15] = {ADAMW_Q4_SIGNED_THRESHOLDS};
inline constexpr uint32_t kQ4UnsignedThresholds[15] = {ADAMW_Q4_UNSIGNED_THRESHOLDS};
#if defined(__CUDACC__)
__device__ const uint32_t kQ4SignedMapDevice[16] = {ADAMW_Q4_SIGNED_MAP};
__device__ const uint32_t kQ4UnsignedMapDevice[16] = {ADAMW_Q4_UNSIGNED_MAP};
__device__ const uint32_t kQ4SignedThresholdsDevice[15] = {ADAMW_Q4_SIGNED_THRESHOLDS};
__device__ const uint32_t kQ4UnsignedThresholdsDevice[15] = {ADAMW_Q4_UNSIGNED_THRESHOLDS};
#endif

template <bool SIGNED> ADAMW_HD float q4_map(uint32_t code) {
#if defined(__CUDA_ARCH__)
  return as_float(__ldg(SIGNED ? &kQ4SignedMapDevice[code] : &kQ4UnsignedMapDevice[code]));
#else
  return as_float(SIGNED ? kQ4SignedMap[code] : kQ4UnsignedMap[code]);
#endif
}

template <bool SIGNED> ADAMW_HD float q4_threshold(uint32_t k) {
#if defined(__CUDA_ARCH__)
  return as_float(__ldg(SIGNED ? &kQ4SignedThresholdsDevice[k] : &kQ4UnsignedThresholdsDevice[k]));
#else
  return as_float(SIGNED ? kQ4SignedThresholds[k] : kQ4UnsignedThresholds[k]);
#endif
}

// The 4-bit format: element i's code is the low nibble of byte i / 2 when i is even, else the high.
struct Q4Codec {
  static constexpr int kBlock = kQ4Block;
  static constexpr int kCodesPerByte = 2;
  static constexpr int kCodes = 16;  // the map's entries
  ADAMW_HD static uint32_t code_at(const uint8_t* c, int64_t i) { return (uint32_t(c[i >> 1]) >> ((i & 1) * 4)) & 15u; }
  template <bool SIGNED> ADAMW_HD static float decode(uint32_t code, float scale) { return mul(q4_map<SIGNED>(code), scale); }
  // #{k < 15 : map[k] * scale == 0} by a 4-step binary search (the products ascend)
  ADAMW_HD static uint32_t lowest_positive(float scale) {
    uint32_t code = 0;
#pragma unroll
    for (uint32_t bit = 8; bit != 0; bit >>= 1) code += uint32_t(decode<false>(code + bit - 1, scale) == 0.0f) * bit;
    return code;
  }
  // #{k : x / scale > T[k]} by a 4-step binary search; a positive x of the unsigned map takes at least `lowest`
  template <bool SIGNED> ADAMW_HD static uint32_t encode(float x, float scale, uint32_t lowest = 0) {
    const float xhat = div(x, scale == 0.0f ? 1.0f : scale);
    uint32_t code = 0;
#pragma unroll
    for (uint32_t bit = 8; bit != 0; bit >>= 1) code += uint32_t(xhat > q4_threshold<SIGNED>(code + bit - 1)) * bit;
    const uint32_t floor = x > 0.0f ? lowest : 0u;
    return code < floor ? floor : code;
  }
  // the kernel's search is encode's own (four loads from a 15-entry table): no tables to stage
  struct SearchTables {};
  static constexpr SearchTables kSearchTables{};
  template <bool SIGNED>
  ADAMW_HD static uint32_t encode_with(float x, float scale, uint32_t lowest, const SearchTables&) {
    return encode<SIGNED>(x, scale, lowest);
  }
  // codes[0] and codes[1] of elements i (even) and i + 1 into byte i / 2; past `end`, a 0 nibble
  template <class T> ADAMW_HD static void store(uint8_t* dst, int64_t i, const T* codes, int64_t end) {
    dst[i >> 1] = uint8_t(uint32_t(codes[0]) | (i + 1 < end ? uint32_t(codes[1]) << 4 : 0u));
  }
  // exp_avg's code given the second moment's: the zero code (7) where that one decodes to 0
  ADAMW_HD static uint32_t zero_rule(uint32_t m_code, uint32_t v_code, float v_scale) {
    return decode<false>(v_code, v_scale) == 0.0f ? 7u : m_code;
  }
};

}  // namespace adamw_tau
