// The CPU op's loop for blockwise quantized states (adamw_tau/formats/registry.py), written once
// for every codec (state_formats.h: CodecOf): one block of C::kBlock elements at a time,
// decoded, updated (adamw_math.h: update, the one copy of the update) and its new moments kept
// in three arrays on the stack, then the block's max, then encoded and stored (C::store: a byte
// a code, or several codes a byte). Included by adamw_cpu.cpp only; a block-table chunk is a
// multiple of kQuantChunkMultiple elements (the launcher refuses others), so a block never
// spans two tasks.
#pragma once

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "adamw_args.h"
#include "state_formats.h"

namespace adamw_tau {
namespace {

// Codes of n elements of one block into `out` (one per element): 8-bit by q8_encode_n's
// interleaved searches (12.4 ns an element one by one, 6.7 by 16, measured on the 2-core CPU
// machine), other codecs one by one.
template <class C, bool SIGNED>
inline void encode_block(const float* x, int n, float scale, uint8_t* out, uint32_t lowest) {
  int k = 0;
  if constexpr (std::is_same_v<C, Q8Codec>) {
    constexpr int kGroup = 16;
    for (; k + kGroup <= n; k += kGroup) q8_encode_n<SIGNED, kGroup>(x + k, scale, out + k, lowest);
  }
  for (; k < n; ++k) out[k] = uint8_t(C::template encode<SIGNED>(x[k], scale, lowest));
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
  float mb[B], vb[B], vmb[B];  // the block's new fp32 moments
  uint8_t cm[B], cv[B], cvm[B];  // and their codes
  for (int64_t qb = begin; qb < end; qb += B) {
    const int n = int(std::min<int64_t>(B, end - qb));
    const int64_t b = qb / B;
    const float old_m = t.m_scale[b], old_v = t.v_scale[b], old_vm = AMSGRAD ? t.vmax_scale[b] : 0.0f;
    float max_m = 0.0f, max_v = 0.0f, max_vm = 0.0f;
    for (int k = 0; k < n; ++k) {
      const int64_t i = qb + k;
      float w = read_weight<P, W>(p, master, rem, i);
      float mi = C::template decode<true>(C::code_at(m, i), old_m);
      float vi = C::template decode<false>(C::code_at(v, i), old_v);
      float vm = AMSGRAD ? C::template decode<false>(C::code_at(vmax, i), old_vm) : 0.0f;
      update<AMSGRAD>(w, widen<G>(g[i]), mi, vi, vm, s, SCALE ? grad_scale : 1.0f, maximize, SCALE, coef, clipped);
      mb[k] = mi;
      vb[k] = vi;
      vmb[k] = vm;
      max_m = q8_max(max_m, q8_abs(mi));
      max_v = q8_max(max_v, q8_abs(vi));
      if constexpr (AMSGRAD) max_vm = q8_max(max_vm, q8_abs(vm));
      write_weight<P, W>(w, p, master, rem, i, key);
    }
    encode_block<C, true>(mb, n, max_m, cm, 0);
    encode_block<C, false>(vb, n, max_v, cv, C::lowest_positive(max_v));
    if constexpr (AMSGRAD) encode_block<C, false>(vmb, n, max_vm, cvm, C::lowest_positive(max_vm));
    const uint8_t* divides_by = AMSGRAD ? cvm : cv;  // the second moment the next step divides by
    const float divides_scale = AMSGRAD ? max_vm : max_v;
    for (int k = 0; k < n; ++k) cm[k] = uint8_t(C::zero_rule(cm[k], divides_by[k], divides_scale));
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
