// Test-only: the CPU op's block phases (adamw_quant_cpu.h) against each codec's per-element
// rule (the code the CUDA kernel runs): encode_block (the threshold searches of
// bucket_search.h, permute_search.h and octave_search.h) value by value over fp32 bit
// patterns, decode_block over every code at a scale, and the 4-bit nibble unpack and pack and
// the zero rule over a block. Built with g++ once per instruction set the machine has
// (adamw_tau/testing/encode_check.py: VARIANTS, from AVX-512 VBMI down to the scalar fallback)
// by tests/formats/test_bucket_search.py; called through ctypes. ATen-free.
#include <cstdint>

#include "adamw_quant_cpu.h"

using namespace adamw_tau;

namespace {

template <class C, bool SIGNED>
int64_t mismatches(uint64_t first, uint64_t count, uint64_t stride, float scale, uint32_t lowest, uint32_t* bad) {
  constexpr int kBatch = 256;  // a block's worth: the vector lanes, then a scalar tail when count is short
  float x[kBatch];
  uint8_t got[kBatch];
  int64_t n_bad = 0;
  for (uint64_t done = 0; done < count;) {
    const int n = int(count - done < kBatch ? count - done : kBatch);
    for (int k = 0; k < n; ++k) x[k] = as_float(uint32_t(first + (done + uint64_t(k)) * stride));
    encode_block<C, SIGNED>(x, n, scale, got, lowest);
    for (int k = 0; k < n; ++k) {
      if (got[k] != uint8_t(C::template encode<SIGNED>(x[k], scale, lowest))) {
        if (n_bad == 0 && bad) *bad = as_bits(x[k]);
        ++n_bad;
      }
    }
    done += uint64_t(n);
  }
  return n_bad;
}

// the CUDA kernel's encode (C::encode_with over the host's copy of its search tables) against
// C::encode, value by value
template <class C, bool SIGNED>
int64_t kernel_mismatches(uint64_t first, uint64_t count, uint64_t stride, float scale, uint32_t lowest, uint32_t* bad) {
  int64_t n_bad = 0;
  for (uint64_t i = 0; i < count; ++i) {
    const float x = as_float(uint32_t(first + i * stride));
    if (C::template encode_with<SIGNED>(x, scale, lowest, C::kSearchTables) != C::template encode<SIGNED>(x, scale, lowest)) {
      if (n_bad == 0 && bad) *bad = as_bits(x);
      ++n_bad;
    }
  }
  return n_bad;
}

}  // namespace

// As adamw_tau_encode_mismatches, for the CUDA kernel's encode (q8_blockwise.h: [note: the
// kernel's search]) instead of the CPU op's.
extern "C" int64_t adamw_tau_kernel_encode_mismatches(int bits, int is_signed, uint64_t first, uint64_t count,
                                                      uint64_t stride, float scale, uint32_t lowest, uint32_t* bad) {
  if (bits == 8) return is_signed ? kernel_mismatches<Q8Codec, true>(first, count, stride, scale, lowest, bad)
                                  : kernel_mismatches<Q8Codec, false>(first, count, stride, scale, lowest, bad);
  if (bits == 4) return is_signed ? kernel_mismatches<Q4Codec, true>(first, count, stride, scale, lowest, bad)
                                  : kernel_mismatches<Q4Codec, false>(first, count, stride, scale, lowest, bad);
  return -1;
}

// The number of values first + i * stride (mod 2^32, i < count), as fp32 bits, whose code from
// encode_block differs from the codec's encode at this scale and `lowest`; the first such
// value's bits into *bad. bits: 8 or 4 (the codec); is_signed: the signed map or the unsigned.
// -1 for a codec that does not exist.
extern "C" int64_t adamw_tau_encode_mismatches(int bits, int is_signed, uint64_t first, uint64_t count,
                                               uint64_t stride, float scale, uint32_t lowest, uint32_t* bad) {
  if (bits == 8) return is_signed ? mismatches<Q8Codec, true>(first, count, stride, scale, lowest, bad)
                                  : mismatches<Q8Codec, false>(first, count, stride, scale, lowest, bad);
  if (bits == 4) return is_signed ? mismatches<Q4Codec, true>(first, count, stride, scale, lowest, bad)
                                  : mismatches<Q4Codec, false>(first, count, stride, scale, lowest, bad);
  return -1;
}

// The widest lanes this build's phases run: 4 AVX-512 VBMI, 3 AVX-512 (F and BW), 2 AVX2, 0
// the scalar fallback.
extern "C" int adamw_tau_encode_vectorised() {
#if defined(__AVX512VBMI__)
  return 4;
#elif defined(__AVX512F__) && defined(__AVX512BW__)
  return 3;
#elif defined(__AVX2__)
  return 2;
#else
  return 0;
#endif
}

namespace {

template <class C, bool SIGNED>
int64_t decode_mismatches(float scale, int n, uint32_t* bad) {
  // codes 0, 1, ... in turn (mod the codec's count), n of them from offset 0: the vector
  // lanes and the tail
  uint8_t codes[512];
  float got[512];
  for (int k = 0; k < n; ++k) codes[k] = uint8_t((k * 7 + 3) % C::kCodes);
  decode_block<C, SIGNED>(codes, n, scale, got);
  int64_t n_bad = 0;
  for (int k = 0; k < n; ++k) {
    if (as_bits(got[k]) != as_bits(C::template decode<SIGNED>(codes[k], scale))) {
      if (n_bad == 0 && bad) *bad = codes[k];
      ++n_bad;
    }
  }
  return n_bad;
}

}  // namespace

// How many of n codes (n <= 512, codes (7k + 3) mod the code count) decode_block turns into
// other bits than the codec's decode at this scale; the first such code into *bad.
extern "C" int64_t adamw_tau_decode_mismatches(int bits, int is_signed, float scale, int n, uint32_t* bad) {
  if (n < 0 || n > 512) return -1;
  if (bits == 8) return is_signed ? decode_mismatches<Q8Codec, true>(scale, n, bad) : decode_mismatches<Q8Codec, false>(scale, n, bad);
  if (bits == 4) return is_signed ? decode_mismatches<Q4Codec, true>(scale, n, bad) : decode_mismatches<Q4Codec, false>(scale, n, bad);
  return -1;
}

// The 4-bit phases over one block of n elements starting at element `first` of `packed`
// (bytes; first even): codes_of must give code_at's codes, store_codes must write
// Q4Codec::store's bytes back (into a copy, every other byte untouched), and zero_rule_block
// (4-bit and 8-bit, on these codes as both m and v) must give zero_rule's codes at v_scale.
// Returns the number of elements (or bytes) that differ.
extern "C" int64_t adamw_tau_block_phase_mismatches(const uint8_t* packed, int64_t bytes, int64_t first, int n,
                                                    float v_scale) {
  if (n < 0 || n > 512 || first < 0 || first % 2 || (first + n + 1) / 2 > bytes) return -1;
  int64_t n_bad = 0;
  uint8_t tmp[512], cm[512], want[512];
  const uint8_t* codes = codes_of<Q4Codec>(packed, first, n, tmp);
  for (int k = 0; k < n; ++k) n_bad += codes[k] != Q4Codec::code_at(packed, first + k);
  static uint8_t got[1 << 16], ref[1 << 16];
  if (bytes > (1 << 16)) return -1;
  for (int64_t b = 0; b < bytes; ++b) got[b] = ref[b] = uint8_t(~packed[b]);
  store_codes<Q4Codec>(got, first, codes, n);
  for (int k = 0; k < n; k += 2) Q4Codec::store(ref, first + k, codes + k, first + n);
  for (int64_t b = 0; b < bytes; ++b) n_bad += got[b] != ref[b];
  for (int k = 0; k < n; ++k) cm[k] = uint8_t(codes[(k * 5 + 1) % n]);  // m's codes: others than v's
  for (int k = 0; k < n; ++k) want[k] = uint8_t(Q4Codec::zero_rule(cm[k], codes[k], v_scale));
  zero_rule_block<Q4Codec>(cm, codes, n, v_scale);
  for (int k = 0; k < n; ++k) n_bad += cm[k] != want[k];
  for (int k = 0; k < n; ++k) cm[k] = uint8_t(packed[(first / 2 + k) % bytes]);  // 8-bit codes
  for (int k = 0; k < n; ++k) want[k] = uint8_t(Q8Codec::zero_rule(cm[k], packed[(first / 2 + (k * 3)) % bytes], v_scale));
  for (int k = 0; k < n; ++k) tmp[k] = packed[(first / 2 + (k * 3)) % bytes];
  zero_rule_block<Q8Codec>(cm, tmp, n, v_scale);
  for (int k = 0; k < n; ++k) n_bad += cm[k] != want[k];
  return n_bad;
}
