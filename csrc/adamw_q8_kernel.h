// The CUDA kernel for 8-bit states (formats/q8_blockwise.py; docs/numerics.md, "8-bit states"):
// one pass that decodes m, v (and vmax), runs the shared update (adamw_math.h: update), takes
// each block's new max and encodes, all in registers. adamw_cuda.cu launches it for a uint8
// state dtype; kernel_body_host.cpp compiles it with g++ and runs it on the CPU for the tests,
// as it does adamw_kernel_body.h ([note: host-compilable] there).
//
// [note: a warp is a block of 256] Thread block of kThreads = 256 threads, 8 warps; a warp
// steps one q8 block (256 consecutive elements) at a time, each of its 32 lanes 8 consecutive
// elements, and the warps take the block-table chunk's q8 blocks in turn (the chunk is a
// multiple of 256: the launcher refuses others, so a q8 block never crosses thread blocks).
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
#error "adamw_q8_kernel.h: include host_emulation.h first for a host build"
#endif

#include <cstdint>

#include "adamw_args.h"
#include "q8_blockwise.h"

namespace adamw_tau {
namespace {

constexpr int kQ8Threads = 256;
constexpr int kWarpSize = 32;
constexpr int kQ8PerLane = kQ8Block / kWarpSize;  // 8 elements a lane
#if defined(ADAMW_HOST_EMULATION)
constexpr int kLanesPerCall = kWarpSize;  // the host runs a warp's lanes in one call, phase by phase
#else
constexpr int kLanesPerCall = 1;          // a GPU thread is one lane
#endif

// One lane's registers between the phases: the new fp32 moments of its 8 elements and their
// partial maxima.
struct Q8Lane {
  float m[kQ8PerLane], v[kQ8PerLane], vm[kQ8PerLane];
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

template <Kind P, Kind G, bool AMSGRAD, Write W>
__global__ void __launch_bounds__(kQ8Threads) adamw_q8_kernel(const TensorArgs* __restrict__ tensors,
                                                              const int64_t* __restrict__ blocks, int64_t chunk,
                                                              const float* __restrict__ scalars, const Scalars host_s,
                                                              const float* __restrict__ grad_scale,
                                                              const float* __restrict__ found_inf, uint64_t seed,
                                                              bool maximize, const float* __restrict__ grad_coef) {
  using PT = typename Storage<P>::type;
  using GT = typename Storage<G>::type;
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
  // warp-uniform bounds: every lane of a warp takes every q8 block's shuffles
  for (int64_t qb = start + int64_t(warp) * kQ8Block; qb < end; qb += int64_t(kWarps) * kQ8Block) {
    const int64_t b = qb / kQ8Block;  // the q8 block's index in the tensor: its scales' slot
    Q8Lane lanes[kLanesPerCall];
    const float old_m = m_scale[b], old_v = v_scale[b], old_vm = AMSGRAD ? vmax_scale[b] : 0.0f;
    for (int l = 0; l < kLanesPerCall; ++l) {  // phase 1
      Q8Lane& L = lanes[l];
      L.max_m = L.max_v = L.max_vm = 0.0f;
      const int64_t first = qb + int64_t(first_lane + l) * kQ8PerLane;
#pragma unroll
      for (int j = 0; j < kQ8PerLane; ++j) {
        const int64_t i = first + j;
        L.m[j] = L.v[j] = L.vm[j] = 0.0f;
        if (i >= end) continue;
        float w = read_weight<P, W>(p, master, rem, i);
        float mi = q8_decode<true>(m[i], old_m), vi = q8_decode<false>(v[i], old_v);
        float vm = AMSGRAD ? q8_decode<false>(vmax[i], old_vm) : 0.0f;
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
    const uint32_t low_v = q8_lowest_positive(new_v), low_vm = AMSGRAD ? q8_lowest_positive(new_vm) : 0u;
    for (int l = 0; l < kLanesPerCall; ++l) {  // phase 2
      const Q8Lane& L = lanes[l];
      const int64_t first = qb + int64_t(first_lane + l) * kQ8PerLane;
#pragma unroll
      for (int j = 0; j < kQ8PerLane; ++j) {
        const int64_t i = first + j;
        if (i >= end) continue;
        const uint8_t cv = q8_encode<false>(L.v[j], new_v, low_v);
        const uint8_t cvm = AMSGRAD ? q8_encode<false>(L.vm[j], new_vm, low_vm) : uint8_t(0);
        m[i] = q8_zero_rule(q8_encode<true>(L.m[j], new_m), AMSGRAD ? cvm : cv);
        v[i] = cv;
        if constexpr (AMSGRAD) vmax[i] = cvm;
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
