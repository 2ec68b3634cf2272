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
// [note: quantized registers] At least 2 thread blocks an SM: registers capped at 128. Left to
// itself, ptxas (nvcc 13.0, sm_90) gave the lane-access kernel 76-107 registers and spilled 16
// bytes in the bf16 remainder variant at 80 (the byte-load kernel before it spilled 28 bytes
// in the bf16 amsgrad master one); with the cap it takes 92-118 and spills nothing
// (tests/launch/test_cuda_quant_ptx.py). 2 blocks are 16 warps an SM, each lane with 40 to 88
// bytes of loads in flight: NOT MEASURED ON A GPU against the uncapped occupancy.
constexpr int kQ8MinBlocks = 2;
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

// [note: lane accesses] A lane's elements are consecutive, so each stream of a lane is one
// run of bytes: 8 codes (8-bit) are 8 bytes, moved as one 8-byte access (uint2) instead of 8
// byte loads; 8 fp32 params are two 16-byte accesses, 8 bf16 ones one. lane_load and
// lane_store are the one place the kernel touches p, g, the master, the remainder and the codes:
// whole (the lane lies inside the tensor and the launch's addresses allow it, quant_lanes_aligned)
// they move the run in accesses of min(16, its bytes); otherwise element by element, the first
// `count`. Between them the lane works on registers: the codec reads and writes codes in a
// register copy of the lane's bytes (C::code_at, C::store at the lane's own indices), so the
// byte layout stays the codec's. The host build moves the run with memcpy after checking the
// alignment a device access needs (host_emulation.h: host_lane_access aborts otherwise) and
// counts the bytes, so the CPU tests see which lanes went whole
// (tests/launch/test_cuda_body_on_host.py) and that the decision never lets a device access
// fault; tests/launch/test_cuda_quant_ptx.py checks that nvcc made the accesses vectors.
// On the device the accesses are __ldca / __stwb, each one PTX instruction (ld.global.ca,
// st.global.wb: the default caching): written as plain uint4 stores, LLVM split the registers
// and stored the first 16 bytes of an fp32 lane as four 4-byte stores (nvcc 13.0, sm_90 PTX).
constexpr int kLaneAccessBytes = 16;  // sm_90 has no wider global access

#if defined(__CUDACC__)
template <int BYTES> struct AccessOf;
template <> struct AccessOf<16> { using type = uint4; };
template <> struct AccessOf<8> { using type = uint2; };
template <> struct AccessOf<4> { using type = uint32_t; };
template <> struct AccessOf<2> { using type = uint16_t; };
#endif

template <class T, int N>
ADAMW_HD void lane_load(T (&dst)[N], const T* src, bool whole, int count) {
  constexpr int kBytes = int(sizeof(T)) * N;
  constexpr int kAccess = kBytes < kLaneAccessBytes ? kBytes : kLaneAccessBytes;
  static_assert(kBytes % kAccess == 0, "a lane's run is whole accesses");
  if (whole) {
#if defined(__CUDA_ARCH__)
    using A = typename AccessOf<kAccess>::type;
#pragma unroll
    for (int k = 0; k < kBytes / kAccess; ++k) {
      const A a = __ldca(reinterpret_cast<const A*>(src) + k);
      memcpy(reinterpret_cast<char*>(dst) + k * kAccess, &a, kAccess);
    }
#else
#if defined(ADAMW_HOST_EMULATION)
    host_lane_access(src, kAccess, kBytes);
#endif
    std::memcpy(dst, src, kBytes);
#endif
  } else {
#pragma unroll
    for (int j = 0; j < N; ++j)
      if (j < count) dst[j] = src[j];
  }
}

template <class T, int N>
ADAMW_HD void lane_store(T* dst, const T (&src)[N], bool whole, int count) {
  constexpr int kBytes = int(sizeof(T)) * N;
  constexpr int kAccess = kBytes < kLaneAccessBytes ? kBytes : kLaneAccessBytes;
  if (whole) {
#if defined(__CUDA_ARCH__)
    using A = typename AccessOf<kAccess>::type;
#pragma unroll
    for (int k = 0; k < kBytes / kAccess; ++k) {
      A a;
      memcpy(&a, reinterpret_cast<const char*>(src) + k * kAccess, kAccess);
      __stwb(reinterpret_cast<A*>(dst) + k, a);
    }
#else
#if defined(ADAMW_HOST_EMULATION)
    host_lane_access(dst, kAccess, kBytes);
#endif
    std::memcpy(dst, src, kBytes);
#endif
  } else {
#pragma unroll
    for (int j = 0; j < N; ++j)
      if (j < count) dst[j] = src[j];
  }
}

// [note: staged search tables] A codec whose encode counts from tables (Q8Codec: [note: the
// kernel's search] in q8_blockwise.h) has them copied from global memory into shared memory
// once per thread block, by all its threads, before any warp encodes: 3584 bytes for 8-bit.
// The host build reads the codec's constexpr tables in place.
#if defined(__CUDACC__)
template <class C>
__device__ void stage_search_tables(typename C::SearchTables& staged) {
  if constexpr (sizeof(typename C::SearchTables) >= 4) {
    static_assert(sizeof(typename C::SearchTables) % 4 == 0, "the tables move as words");
    const uint32_t* src = reinterpret_cast<const uint32_t*>(C::search_tables_device());
    uint32_t* dst = reinterpret_cast<uint32_t*>(&staged);
    for (int i = int(threadIdx.x); i < int(sizeof(staged) / 4); i += kQ8Threads) dst[i] = __ldg(src + i);
    __syncthreads();
  }
}
#endif

// Whether a block's whole lanes may move in whole accesses: every address the launch reads or
// writes is 16-byte aligned (tables.py's VEC_BYTES, the test of its aligned split), and the
// block starts on a quantization block. Then each lane's run starts at a multiple of its own
// size in bytes from an aligned address (a lane's first element is a multiple of kBlock / 32),
// so each access is aligned to its width. Decided per thread block, uniformly for its warps.
template <int B, bool AMSGRAD, Write W>
ADAMW_HD bool quant_lanes_aligned(const TensorArgs& t, int64_t start) {
  auto aligned = [](const void* ptr) { return reinterpret_cast<uintptr_t>(ptr) % kLaneAccessBytes == 0; };
  return start % B == 0 && aligned(t.p) && aligned(t.g) && aligned(t.m) && aligned(t.v) &&
         (!AMSGRAD || aligned(t.vmax)) && (W == Write::Plain || W == Write::Stochastic || aligned(t.master));
}

template <class C, Kind P, Kind G, bool AMSGRAD, Write W>
__global__ void __launch_bounds__(kQ8Threads, kQ8MinBlocks) adamw_quant_kernel(const TensorArgs* __restrict__ tensors,
                                                              const int64_t* __restrict__ blocks, int64_t chunk,
                                                              const float* __restrict__ scalars, const Scalars host_s,
                                                              const float* __restrict__ grad_scale,
                                                              const float* __restrict__ found_inf, uint64_t seed,
                                                              bool maximize, const float* __restrict__ grad_coef) {
  using PT = typename Storage<P>::type;
  using GT = typename Storage<G>::type;
  constexpr int B = C::kBlock;
  constexpr int kPerLane = B / kWarpSize;
  constexpr int kLaneBytes = kPerLane / C::kCodesPerByte;  // a lane's codes of one state
  constexpr bool kMaster = W == Write::Master, kRem = W == Write::Remainder;
  if (found_inf != nullptr && *found_inf != 0.0f) return;  // every thread of the block returns
#if defined(__CUDA_ARCH__)
  __shared__ typename C::SearchTables staged;
  stage_search_tables<C>(staged);
  const typename C::SearchTables& search = staged;
#else
  const typename C::SearchTables& search = C::kSearchTables;
#endif
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
  if constexpr (kMaster || kRem) __builtin_assume(__isGlobal(t.master));
  const bool aligned = quant_lanes_aligned<B, AMSGRAD, W>(t, start);

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
      // the lane's elements inside the tensor (kPerLane, fewer in its last block, or none)
      const int n = end - first >= kPerLane ? kPerLane : end > first ? int(end - first) : 0;
      const bool whole = aligned && n == kPerLane;
      const int n_bytes = (n + C::kCodesPerByte - 1) / C::kCodesPerByte;
      PT pl[kPerLane];
      GT gl[kPerLane];
      float wl[kPerLane];
      int16_t rl[kPerLane];
      uint8_t ml[kLaneBytes], vl[kLaneBytes], xl[kLaneBytes];
      if constexpr (kMaster) lane_load(wl, master + first, whole, n);
      else lane_load(pl, p + first, whole, n);
      if constexpr (kRem) lane_load(rl, rem + first, whole, n);
      lane_load(gl, g + first, whole, n);
      lane_load(ml, m + first / C::kCodesPerByte, whole, n_bytes);
      lane_load(vl, v + first / C::kCodesPerByte, whole, n_bytes);
      if constexpr (AMSGRAD) lane_load(xl, vmax + first / C::kCodesPerByte, whole, n_bytes);
#pragma unroll
      for (int j = 0; j < kPerLane; ++j) {
        L.m[j] = L.v[j] = L.vm[j] = 0.0f;
        if (j >= n) continue;
        float w = read_weight<P, W>(pl, wl, rl, j);
        float mi = C::template decode<true>(C::code_at(ml, j), old_m);
        float vi = C::template decode<false>(C::code_at(vl, j), old_v);
        float vm = AMSGRAD ? C::template decode<false>(C::code_at(xl, j), old_vm) : 0.0f;
        update<AMSGRAD>(w, widen<G>(gl[j]), mi, vi, vm, s, scale, maximize, true, coef, grad_coef != nullptr);
        L.m[j] = mi;
        L.v[j] = vi;
        L.vm[j] = vm;
        L.max_m = q8_max(L.max_m, q8_abs(mi));
        L.max_v = q8_max(L.max_v, q8_abs(vi));
        if constexpr (AMSGRAD) L.max_vm = q8_max(L.max_vm, q8_abs(vm));
        write_weight<P, W>(w, pl, wl, rl, j, key, first + j);
      }
      if constexpr (kMaster) lane_store(master + first, wl, whole, n);
      if constexpr (kRem) lane_store(rem + first, rl, whole, n);
      lane_store(p + first, pl, whole, n);
    }
    const float new_m = warp_max(lanes, &Q8Lane::max_m);
    const float new_v = warp_max(lanes, &Q8Lane::max_v);
    const float new_vm = AMSGRAD ? warp_max(lanes, &Q8Lane::max_vm) : 0.0f;
    const uint32_t low_v = C::lowest_positive(new_v), low_vm = AMSGRAD ? C::lowest_positive(new_vm) : 0u;
    for (int l = 0; l < kLanesPerCall; ++l) {  // phase 2
      const Q8Lane& L = lanes[l];
      const int64_t first = qb + int64_t(first_lane + l) * kPerLane;
      const int n = end - first >= kPerLane ? kPerLane : end > first ? int(end - first) : 0;
      const bool whole = aligned && n == kPerLane;
      const int n_bytes = (n + C::kCodesPerByte - 1) / C::kCodesPerByte;
      uint32_t cm[kMaxPerLane], cv[kMaxPerLane], cvm[kMaxPerLane];
#pragma unroll
      for (int j = 0; j < kPerLane; ++j) {
        cv[j] = C::template encode_with<false>(L.v[j], new_v, low_v, search);
        cvm[j] = AMSGRAD ? C::template encode_with<false>(L.vm[j], new_vm, low_vm, search) : 0u;
        cm[j] = C::zero_rule(C::template encode_with<true>(L.m[j], new_m, 0u, search), AMSGRAD ? cvm[j] : cv[j],
                             AMSGRAD ? new_vm : new_v);
      }
      uint8_t ml[kLaneBytes], vl[kLaneBytes], xl[kLaneBytes];
#pragma unroll
      for (int j = 0; j < kPerLane; j += C::kCodesPerByte) {  // the lane's bytes (C::store: past n, 0 codes)
        C::store(ml, j, cm + j, n);
        C::store(vl, j, cv + j, n);
        if constexpr (AMSGRAD) C::store(xl, j, cvm + j, n);
      }
      lane_store(m + first / C::kCodesPerByte, ml, whole, n_bytes);
      lane_store(v + first / C::kCodesPerByte, vl, whole, n_bytes);
      if constexpr (AMSGRAD) lane_store(vmax + first / C::kCodesPerByte, xl, whole, n_bytes);
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
