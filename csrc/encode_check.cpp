// Test-only: the CPU op's encode (adamw_quant_cpu.h: encode_block, the bucket search of
// bucket_search.h) against each codec's per-element encode (the binary search the CUDA kernel
// runs), value by value over fp32 bit patterns. Built with g++ twice by
// tests/formats/test_bucket_search.py, with -march=native (the AVX2 lanes, where the machine
// has AVX2) and without (the scalar fallback); called through ctypes. ATen-free.
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

}  // namespace

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

// 1 where encode_block runs the AVX2 lanes in this build, 0 where the scalar fallback.
extern "C" int adamw_tau_encode_vectorised() {
#if defined(__AVX2__)
  return 1;
#else
  return 0;
#endif
}
