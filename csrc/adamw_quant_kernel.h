// The CUDA kernel for blockwise quantized states (adamw_tau/formats/registry.py; docs/numerics.md,
// "8-bit states" and the other quantized formats' sections), written once for every codec (state_formats.h: CodecOf): one pass that decodes m, v (and vmax), runs the shared
// update (adamw_math.h: update), takes each block's new max and encodes, all in registers.
// adamw_cuda.cu launches it for a quantized state format; kernel_body_host.cpp compiles it with
// g++ and runs it on the CPU for the tests, as it does adamw_kernel_body.h ([note:
// host-compilable] there).
//
// [note: a warp is a block] Thread block of kQ8Threads = 256 threads, 8 warps; a warp steps one
// quantization block (C::kBlock consecutive elements: 256 for 8-bit) at a time,
// each of its 32 lanes C::kBlock / 32 consecutive elements (a multiple of C::kCodesPerByte, so
// a lane writes whole bytes), and the warps take the block-table chunk's blocks in turn
// (the chunk is a multiple of 256: the launcher refuses others, so a block never crosses thread
// blocks).
// The new scale is the max of |m| over the 256 new values: a per-lane max, then a max across
// the warp's lanes. That max needs every lane's phase-1 result before any lane can encode, so
// the body is written as two phases over explicit per-lane registers (Q8Lane):
//   phase 1, per lane: load, decode, update, write the param, partial max;
//   warp_max: the max across the 32 lanes;
//   phase 2, per lane: encode and store the codes; lane 0 stores the scales.
// On the GPU each thread is one lane (kLanesPerCall = 1) and warp_max is five __shfl_xor_sync
// steps, which also order every lane's phase-1 reads of the old scale before lane 0's write.
// The host build has no warps: one call of the kernel runs a whole warp (kLanesPerCall = 32),
// phase 1 for its 32 lanes, then the max over them, then phase 2 -- the same code, so the CPU
// tests run this very kernel body. A max with NaN propagation (q8_max) gives the same value in
// any order, so the shuffle tree and the host's loop agree.
#pragma once

#if !defined(__CUDACC__) && !defined(ADAMW_HOST_EMULATION)
#error "adamw_quant_kernel.h: include host_emulation.h first for a host build"
#endif

#include <cstdint>
#include <type_traits>

#include "adamw_args.h"
#include "state_formats.h"

namespace adamw_tau {
namespace {

constexpr int kQ8Threads = 256;
constexpr int kWarpSize = 32;
constexpr int kMaxPerLane = kQuantChunkMultiple / kWarpSize;  // elements a lane at most (every block divides it)
#if defined(ADAMW_HOST_EMULATION)
constexpr int kLanesPerCall = kWarpSize;  // the host runs a warp's lanes in one call, phase by phase
#else
constexpr int kLanesPerCall = 1;          // a GPU thread is one lane
#endif

// One lane's registers between the phases: the new fp32 moments of its 8 elements and their
// partial maxima.
struct Q8Lane {
  float m[kMaxPerLane], v[kMaxPerLane], vm[kMaxPerLane];
  float max_m, max_v, max_vm;
};

// The max of one field over the warp's lanes.
template <int N>
ADAMW_HD float warp_max(const Q8Lane (&lanes)[N], float Q8Lane::*field) {
  float x = lanes[0].*field;
#if defined(__CUDA_ARCH__)
  static_assert(N == 1, "a GPU thread holds one lane");
#pragma unroll
  for (int offset = kWarpSize / 2; offset > 0; offset >>= 1) x = q8_max(x, __shfl_xor_sync(0xFFFFFFFFu, x, offset));
#else
  for (int l = 1; l < N; ++l) x = q8_max(x, lanes[l].*field);
#endif
  return x;
}

template <class C, Kind P, Kind G, bool AMSGRAD, Write W>
__global__ void __launch_bounds__(kQ8Threads) adamw_quant_kernel(const TensorArgs* __restrict__ tensors,
                                                              const int64_t* __restrict__ blocks, int64_t chunk,
                                                              const float* __restrict__ scalars, const Scalars host_s,
                                                              const float* __restrict__ grad_scale,
                                                              const float* __restrict__ found_inf, uint64_t seed,
                                                              bool maximize, const float* __restrict__ grad_coef) {
  using PT = typename Storage<P>::type;
  using GT = typename Storage<G>::type;
  constexpr int B = C::kBlock;
  constexpr int kPerLane = B / kWarpSize;
  if (found_inf != nullptr && *found_inf != 0.0f) return;
  const TensorArgs t = tensors[blocks[2 * blockIdx.x]];
  const int64_t start = blocks[2 * blockIdx.x + 1];
  const int64_t end = start + chunk < t.numel ? start + chunk : t.numel;
  const Scalars s = scalars == nullptr ? host_s : read_scalars(scalars);
  const float scale = grad_scale != nullptr ? *grad_scale : 1.0f;
  const float coef = grad_coef != nullptr ? *grad_coef : 1.0f;  // clipping (core/grad_norm.py)
  const uint32_t key = W == Write::Stochastic ? sr_key(seed, s.step, uint32_t(t.param_id)) : 0u;
  PT* p = static_cast<PT*>(t.p);
  const GT* g = static_cast<const GT*>(t.g);
  uint8_t* m = static_cast<uint8_t*>(t.m);
  uint8_t* v = static_cast<uint8_t*>(t.v);
  uint8_t* vmax = static_cast<uint8_t*>(t.vmax);
  float* master = static_cast<float*>(t.master);
  int16_t* rem = static_cast<int16_t*>(t.master);  // Write::Remainder: the master column is the remainder
  float* m_scale = t.m_scale;
  float* v_scale = t.v_scale;
  float* vmax_scale = t.vmax_scale;
  __builtin_assume(__isGlobal(p));
  __builtin_assume(__isGlobal(g));
  __builtin_assume(__isGlobal(m));
  __builtin_assume(__isGlobal(v));
  __builtin_assume(__isGlobal(m_scale));
  __builtin_assume(__isGlobal(v_scale));
  if constexpr (AMSGRAD) __builtin_assume(__isGlobal(vmax));
  if constexpr (AMSGRAD) __builtin_assume(__isGlobal(vmax_scale));
  if constexpr (W == Write::Master || W == Write::Remainder) __builtin_assume(__isGlobal(t.master));

  const int warp = int(threadIdx.x) / kWarpSize;
  const int first_lane = int(threadIdx.x) % kWarpSize;  // the host: 0, and kLanesPerCall lanes from it
  constexpr int kWarps = kQ8Threads / kWarpSize;
  // warp-uniform bounds: every lane of a warp takes every block's shuffles
  for (int64_t qb = start + int64_t(warp) * B; qb < end; qb += int64_t(kWarps) * B) {
    const int64_t b = qb / B;  // the block's index in the tensor: its scales' slot
    Q8Lane lanes[kLanesPerCall];
    const float old_m = m_scale[b], old_v = v_scale[b], old_vm = AMSGRAD ? vmax_scale[b] : 0.0f;
    for (int l = 0; l < kLanesPerCall; ++l) {  // phase 1
      Q8Lane& L = lanes[l];
      L.max_m = L.max_v = L.max_vm = 0.0f;
      const int64_t first = qb + int64_t(first_lane + l) * kPerLane;
#pragma unroll
      for (int j = 0; j < kPerLane; ++j) {
        const int64_t i = first + j;
        L.m[j] = L.v[j] = L.vm[j] = 0.0f;
        if (i >= end) continue;
        float w = read_weight<P, W>(p, master, rem, i);
        float mi = C::template decode<true>(C::code_at(m, i), old_m);
        float vi = C::template decode<false>(C::code_at(v, i), old_v);
        float vm = AMSGRAD ? C::template decode<false>(C::code_at(vmax, i), old_vm) : 0.0f;
        update<AMSGRAD>(w, widen<G>(g[i]), mi, vi, vm, s, scale, maximize, true, coef, grad_coef != nullptr);
        L.m[j] = mi;
        L.v[j] = vi;
        L.vm[j] = vm;
        L.max_m = q8_max(L.max_m, q8_abs(mi));
        L.max_v = q8_max(L.max_v, q8_abs(vi));
        if constexpr (AMSGRAD) L.max_vm = q8_max(L.max_vm, q8_abs(vm));
        write_weight<P, W>(w, p, master, rem, i, key);
      }
    }
    const float new_m = warp_max(lanes, &Q8Lane::max_m);
    const float new_v = warp_max(lanes, &Q8Lane::max_v);
    const float new_vm = AMSGRAD ? warp_max(lanes, &Q8Lane::max_vm) : 0.0f;
    const uint32_t low_v = C::lowest_positive(new_v), low_vm = AMSGRAD ? C::lowest_positive(new_vm) : 0u;
    for (int l = 0; l < kLanesPerCall; ++l) {  // phase 2
      const Q8Lane& L = lanes[l];
      const int64_t first = qb + int64_t(first_lane + l) * kPerLane;
      uint32_t cm[kMaxPerLane], cv[kMaxPerLane], cvm[kMaxPerLane];
#pragma unroll
      for (int j = 0; j < kPerLane; ++j) {
        cv[j] = C::template encode<false>(L.v[j], new_v, low_v);
        cvm[j] = AMSGRAD ? C::template encode<false>(L.vm[j], new_vm, low_vm) : 0u;
        cm[j] = C::zero_rule(C::template encode<true>(L.m[j], new_m), AMSGRAD ? cvm[j] : cv[j],
                             AMSGRAD ? new_vm : new_v);
      }
#pragma unroll
      for (int j = 0; j < kPerLane; j += C::kCodesPerByte) {  // a byte at a time (C::store)
        const int64_t i = first + j;
        if (i >= end) continue;
        C::store(m, i, cm + j, end);
        C::store(v, i, cv + j, end);
        if constexpr (AMSGRAD) C::store(vmax, i, cvm + j, end);
      }
    }
    if (first_lane == 0) {
      m_scale[b] = new_m;
      v_scale[b] = new_v;
      if constexpr (AMSGRAD) vmax_scale[b] = new_vm;
    }
  }
}

}  // namespace
}  // namespace adamw_tau
