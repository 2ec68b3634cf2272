// Table lookups in registers with AVX-512 VBMI: the 32-bit words table[idx[k]] of a 256-entry
// table for 64 byte indices at once, no gather. Host only; used by adamw_quant_cpu.h (the 8-bit
// decode: the map) and octave_search.h (the thresholds).
//
// [note: byte planes] The table is held as four planes of 256 bytes (byte j of every word),
// each four zmm registers; vpermt2b picks a byte from 128 of them by an index's low 7 bits, so
// two picks and a blend on bit 7 give a plane, and byte unpacks put the four planes back
// together as words. The unpacks interleave within 128-bit lanes, so the indices are first
// permuted (kUnpackOrder) so that the words come out in element order. 26 register ops for 64
// lookups, against 8 ymm gathers; measured on the 2-core Zen 4 CPU machine (one thread, a block
// in L1), the 8-bit decode: 0.52 ns an element with gathers, 0.11 with planes.
#pragma once

#include <cstdint>

#if defined(__AVX512VBMI__)
#include <immintrin.h>
#endif

namespace adamw_tau {

// byte j of each of 256 words, j = 0..3 (the words past n: `pad`)
struct BytePlanes {
  alignas(64) uint8_t b[4][256];
};
constexpr BytePlanes byte_planes(const uint32_t* words, int n, uint32_t pad = 0) {
  BytePlanes t{};
  for (int j = 0; j < 4; ++j)
    for (int i = 0; i < 256; ++i) t.b[j][i] = uint8_t((i < n ? words[i] : pad) >> (8 * j));
  return t;
}

// Input byte 16L + 4q + i holds the index of element 16q + 4L + i: after unpacking bytes to
// words to dwords within each 128-bit lane L, dword register q holds elements 16q .. 16q + 15.
struct UnpackOrder {
  alignas(64) uint8_t b[64];
  static constexpr UnpackOrder make() {
    UnpackOrder o{};
    for (int pos = 0; pos < 64; ++pos) o.b[pos] = uint8_t(16 * ((pos % 16) / 4) + 4 * (pos / 16) + pos % 4);
    return o;
  }
};
inline constexpr UnpackOrder kUnpackOrder = UnpackOrder::make();

#if defined(__AVX512VBMI__)
// words[k] = table[idx byte k] for k < 64, as four registers of 16 words in element order
inline void lookup64(const BytePlanes& table, __m512i idx, __m512i (&words)[4]) {
  const __m512i c = _mm512_permutexvar_epi8(_mm512_load_si512(kUnpackOrder.b), idx);
  const __mmask64 high = _mm512_movepi8_mask(c);  // bit 7: the upper 128 entries
  __m512i b[4];
  for (int j = 0; j < 4; ++j) {
    const __m512i* p = reinterpret_cast<const __m512i*>(table.b[j]);
    const __m512i low = _mm512_permutex2var_epi8(_mm512_load_si512(p), c, _mm512_load_si512(p + 1));
    const __m512i up = _mm512_permutex2var_epi8(_mm512_load_si512(p + 2), c, _mm512_load_si512(p + 3));
    b[j] = _mm512_mask_blend_epi8(high, low, up);
  }
  const __m512i w01l = _mm512_unpacklo_epi8(b[0], b[1]), w01h = _mm512_unpackhi_epi8(b[0], b[1]);
  const __m512i w23l = _mm512_unpacklo_epi8(b[2], b[3]), w23h = _mm512_unpackhi_epi8(b[2], b[3]);
  words[0] = _mm512_unpacklo_epi16(w01l, w23l);
  words[1] = _mm512_unpackhi_epi16(w01l, w23l);
  words[2] = _mm512_unpacklo_epi16(w01h, w23h);
  words[3] = _mm512_unpackhi_epi16(w01h, w23h);
}
#endif

}  // namespace adamw_tau
