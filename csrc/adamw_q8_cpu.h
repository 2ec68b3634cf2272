// The CPU op's loop for 8-bit states (formats/q8_blockwise.py): one q8 block of 256 elements at
// a time, decoded, updated (adamw_math.h: update, the one copy of the update) and its new
// moments kept in three 256-float arrays on the stack, then the block's max, then encoded.
// Included by adamw_cpu.cpp only; a block-table chunk is a multiple of 256 elements (the
// launcher refuses others), so a q8 block never spans two tasks.
#pragma once

#include <algorithm>
#include <cstdint>

#include "adamw_args.h"
#include "q8_blockwise.h"

namespace adamw_tau {
namespace {

template <Kind P, Kind G, bool AMSGRAD, Write W, bool SCALE>
__attribute__((noinline)) void step_range_q8(const TensorArgs t, int64_t begin, int64_t end, const Scalars s,
                                             const float grad_scale, const bool maximize, const uint32_t key,
                                             const float coef, const bool clipped) {
  using PT = typename Storage<P>::type;
  using GT = typename Storage<G>::type;
  PT* __restrict__ p = static_cast<PT*>(t.p);
  const GT* __restrict__ g = static_cast<const GT*>(t.g);
  uint8_t* __restrict__ m = static_cast<uint8_t*>(t.m);
  uint8_t* __restrict__ v = static_cast<uint8_t*>(t.v);
  uint8_t* __restrict__ vmax = static_cast<uint8_t*>(t.vmax);
  float* __restrict__ master = static_cast<float*>(t.master);
  int16_t* __restrict__ rem = static_cast<int16_t*>(t.master);  // Write::Remainder: the remainders
  float mb[kQ8Block], vb[kQ8Block], vmb[kQ8Block];  // the block's new fp32 moments
  for (int64_t qb = begin; qb < end; qb += kQ8Block) {
    const int n = int(std::min<int64_t>(kQ8Block, end - qb));
    const int64_t b = qb / kQ8Block;
    const float old_m = t.m_scale[b], old_v = t.v_scale[b], old_vm = AMSGRAD ? t.vmax_scale[b] : 0.0f;
    float max_m = 0.0f, max_v = 0.0f, max_vm = 0.0f;
    for (int k = 0; k < n; ++k) {
      const int64_t i = qb + k;
      float w = read_weight<P, W>(p, master, rem, i);
      float mi = q8_decode<true>(m[i], old_m), vi = q8_decode<false>(v[i], old_v);
      float vm = AMSGRAD ? q8_decode<false>(vmax[i], old_vm) : 0.0f;
      update<AMSGRAD>(w, widen<G>(g[i]), mi, vi, vm, s, SCALE ? grad_scale : 1.0f, maximize, SCALE, coef, clipped);
      mb[k] = mi;
      vb[k] = vi;
      vmb[k] = vm;
      max_m = q8_max(max_m, q8_abs(mi));
      max_v = q8_max(max_v, q8_abs(vi));
      if constexpr (AMSGRAD) max_vm = q8_max(max_vm, q8_abs(vm));
      write_weight<P, W>(w, p, master, rem, i, key);
    }
    constexpr int kGroup = 16;  // q8_encode_n: interleaved searches
    const uint32_t low_v = q8_lowest_positive(max_v), low_vm = AMSGRAD ? q8_lowest_positive(max_vm) : 0u;
    int k = 0;
    for (; k + kGroup <= n; k += kGroup) {
      q8_encode_n<true, kGroup>(mb + k, max_m, m + qb + k);
      q8_encode_n<false, kGroup>(vb + k, max_v, v + qb + k, low_v);
      if constexpr (AMSGRAD) q8_encode_n<false, kGroup>(vmb + k, max_vm, vmax + qb + k, low_vm);
    }
    for (; k < n; ++k) {
      m[qb + k] = q8_encode<true>(mb[k], max_m);
      v[qb + k] = q8_encode<false>(vb[k], max_v, low_v);
      if constexpr (AMSGRAD) vmax[qb + k] = q8_encode<false>(vmb[k], max_vm, low_vm);
    }
    const uint8_t* divides_by = AMSGRAD ? vmax : v;  // the second moment the next step divides by
    for (k = 0; k < n; ++k) m[qb + k] = q8_zero_rule(m[qb + k], divides_by[qb + k]);
    t.m_scale[b] = max_m;
    t.v_scale[b] = max_v;
    if constexpr (AMSGRAD) t.vmax_scale[b] = max_vm;
  }
}

}  // namespace
}  // namespace adamw_tau
