// The CUDA kernel: index arithmetic, the 16-byte vector path, the tail, every dtype path and
// flag. adamw_cuda.cu compiles it for the GPU and launches it; kernel_body_host.cpp compiles it
// with g++ and runs every (block, thread) of the same grid on CPU tensors, which is how CI,
// without a GPU, tests this code (tests/launch/test_cuda_body_on_host.py).
//
// [note: host-compilable] The body uses only what both compilers know: adamw_math.h (whose
// ops are _rn intrinsics on the device and plain operators under -ffp-contract=off on the
// host: the same bits), adamw_args.h (no ATen), and six CUDA names -- __global__,
// __launch_bounds__, blockIdx, threadIdx, __builtin_assume, __isGlobal -- that the host build
// gets from host_emulation.h, included first (nothing else includes it). Nothing here may
// depend on threads running together (no shared memory, no __syncthreads, no warp ops): the
// host runs them one after another, and every element belongs to one thread of one block.
#pragma once

#if !defined(__CUDACC__) && !defined(ADAMW_HOST_EMULATION)
#error "adamw_kernel_body.h: include host_emulation.h first for a host build"
#endif

#include <algorithm>
#include <cstdint>

#include "adamw_args.h"

namespace adamw_tau {
namespace {  // the kernels' mangled names are as they were in adamw_cuda.cu (the SASS test reads them)

constexpr int kThreads = 256;

// [note: 16-byte vectors] A thread takes kVec elements a pass, 16 bytes of the narrowest
// stream: 8 when any stream is bf16/fp16, 4 when all are fp32. The narrowest stream moves in
// one 16-byte load or store (LDG.E.128 / STG.E.128), an fp32 stream of an 8-element pass in
// two. Why: with 4 elements for every stream a 16-bit stream moved 8 bytes an access, and on
// an H200 (do_bench, one 268M-element tensor) bf16 params + grads + states reached 82.3% of
// device-copy bandwidth against 96.4% for fp32 (an H100 with bf16 states: 96.6%); more bytes
// in flight a thread is the aim. NOT YET MEASURED ON A GPU: the 16-byte kernel is checked
// only in its sm_90 SASS (tests/launch/test_extension.py::test_cuda_vector_path_is_16_bytes), which
// also shows the cost: the 16-bit instantiations take 58-80 registers, 3 or 4 blocks of 256
// an SM, where the 4-element kernel took 38-54, 4 to 6 (nvcc 13.0; no spills either way).
constexpr int kVecBytes = 16;

template <typename PT, typename GT, typename ST>
constexpr int kVecOf = int(kVecBytes / std::min({sizeof(PT), sizeof(GT), sizeof(ST)}));

// [note: 16-byte alignment] A Vec is aligned to 16 bytes, not to its size: an fp32 Vec of 8
// elements (32 bytes) moves as two 16-byte halves, so every stream needs 16-byte alignment
// only, the test tables.py makes for the Triton hints (VEC_BYTES). 32 bytes would send an
// fp32 tensor at a 16-byte storage offset down the element path for nothing: sm_90 has no
// global access wider than 16 bytes. A 16-bit tensor 8 bytes off takes the element path: no
// 16-byte access can reach it.
template <typename T, int N>
struct alignas(kVecBytes) Vec {
  T v[N];
};

template <Kind P, Kind G, Kind S, bool AMSGRAD, Write W>
__global__ void __launch_bounds__(kThreads) adamw_kernel(const TensorArgs* __restrict__ tensors,
                                                         const int64_t* __restrict__ blocks, int64_t chunk,
                                                         const float* __restrict__ scalars, const Scalars host_s,
                                                         const float* __restrict__ grad_scale,
                                                         const float* __restrict__ found_inf, uint64_t seed,
                                                         bool maximize, const float* __restrict__ grad_coef) {
  using PT = typename Storage<P>::type;
  using GT = typename Storage<G>::type;
  using ST = typename Storage<S>::type;
  constexpr int kVec = kVecOf<PT, GT, ST>;
  static_assert(sizeof(Vec<PT, kVec>) % kVecBytes == 0 && sizeof(Vec<GT, kVec>) % kVecBytes == 0 &&
                    sizeof(Vec<ST, kVec>) % kVecBytes == 0,
                "every stream of a pass is a whole number of 16-byte accesses");
  if (found_inf != nullptr && *found_inf != 0.0f) return;
  const TensorArgs t = tensors[blocks[2 * blockIdx.x]];
  const int64_t start = blocks[2 * blockIdx.x + 1];
  const int64_t end = start + chunk < t.numel ? start + chunk : t.numel;
  // scalars built on the device (device-counted steps), or passed by value from the host
  const Scalars s = scalars == nullptr ? host_s : read_scalars(scalars);
  const float scale = grad_scale != nullptr ? *grad_scale : 1.0f;
  const float coef = grad_coef != nullptr ? *grad_coef : 1.0f;  // clipping (core/grad_norm.py)
  const uint32_t key = W == Write::Stochastic ? sr_key(seed, s.step, uint32_t(t.param_id)) : 0u;
  PT* p = static_cast<PT*>(t.p);
  const GT* g = static_cast<const GT*>(t.g);
  ST* m = static_cast<ST*>(t.m);
  ST* v = static_cast<ST*>(t.v);
  ST* vmax = static_cast<ST*>(t.vmax);
  float* master = static_cast<float*>(t.master);
  int16_t* rem = static_cast<int16_t*>(t.master);  // Write::Remainder: the master column is the remainder
  // [note: global accesses] The compiler cannot tell where pointers read from the tensor table
  // point, so it emitted generic LD/ST for every stream (seen in the sm_90 SASS); every table
  // address is a CUDA tensor's, a global one, and saying so gives LDG/STG. vmax and master are
  // null where unused, so they are assumed global only where read. Only the SASS is checked:
  // the speed difference is not measured on a GPU.
  __builtin_assume(__isGlobal(p));
  __builtin_assume(__isGlobal(g));
  __builtin_assume(__isGlobal(m));
  __builtin_assume(__isGlobal(v));
  if constexpr (AMSGRAD) __builtin_assume(__isGlobal(vmax));
  if constexpr (W == Write::Master || W == Write::Remainder) __builtin_assume(__isGlobal(t.master));

  // Every pass starts at start + a multiple of kVec, so with 16-byte aligned pointers every
  // Vec is 16-byte aligned when start % kVec == 0. Blocks start at multiples of the chunk
  // (tables.CHUNK = 4096, a multiple of 8); the start test keeps any other chunk correct (it
  // takes the element path). The loop needs no relation between chunk and kThreads * kVec:
  // with 4096, a thread of a full block makes 2 passes of 8 or 4 of 4, and none idles.
  auto aligned = [](const void* ptr) { return reinterpret_cast<uintptr_t>(ptr) % kVecBytes == 0; };
  const bool vec = start % kVec == 0 && aligned(p) && aligned(g) && aligned(m) && aligned(v) &&
                   (!AMSGRAD || aligned(vmax)) && (W == Write::Plain || W == Write::Stochastic || aligned(t.master));

  for (int64_t i = start + int64_t(threadIdx.x) * kVec; i < end; i += int64_t(kThreads) * kVec) {
    Vec<PT, kVec> pv;
    Vec<GT, kVec> gv;
    Vec<ST, kVec> mv, vv, xv;
    Vec<float, kVec> wv;
    Vec<int16_t, kVec> rv;
    const bool full = vec && i + kVec <= end;
    if (full) {
      gv = *reinterpret_cast<const Vec<GT, kVec>*>(g + i);
      mv = *reinterpret_cast<const Vec<ST, kVec>*>(m + i);
      vv = *reinterpret_cast<const Vec<ST, kVec>*>(v + i);
      if constexpr (AMSGRAD) xv = *reinterpret_cast<const Vec<ST, kVec>*>(vmax + i);
      if constexpr (W == Write::Master) wv = *reinterpret_cast<const Vec<float, kVec>*>(master + i);
      else pv = *reinterpret_cast<const Vec<PT, kVec>*>(p + i);
      if constexpr (W == Write::Remainder) rv = *reinterpret_cast<const Vec<int16_t, kVec>*>(rem + i);
    } else {
#pragma unroll
      for (int j = 0; j < kVec; ++j) {
        if (i + j < end) {
          gv.v[j] = g[i + j];
          mv.v[j] = m[i + j];
          vv.v[j] = v[i + j];
          if constexpr (AMSGRAD) xv.v[j] = vmax[i + j];
          if constexpr (W == Write::Master) wv.v[j] = master[i + j];
          else pv.v[j] = p[i + j];
          if constexpr (W == Write::Remainder) rv.v[j] = rem[i + j];
        }
      }
    }
#pragma unroll
    for (int j = 0; j < kVec; ++j) {
      float w;
      if constexpr (W == Write::Master) w = wv.v[j];
      else if constexpr (W == Write::Remainder) w = merge_remainder(pv.v[j], rv.v[j]);
      else w = widen<P>(pv.v[j]);
      float mi = widen<S>(mv.v[j]), vi = widen<S>(vv.v[j]);
      float vm = AMSGRAD ? widen<S>(xv.v[j]) : 0.0f;
      update<AMSGRAD>(w, widen<G>(gv.v[j]), mi, vi, vm, s, scale, maximize, true, coef, grad_coef != nullptr);
      mv.v[j] = narrow<S>(mi);
      vv.v[j] = narrow<S>(vi);
      if constexpr (AMSGRAD) xv.v[j] = narrow<S>(vm);
      wv.v[j] = w;
      if constexpr (W == Write::Stochastic && P != Kind::F32) pv.v[j] = stochastic_round<P>(w, sr_bits(key, i + j));
      else if constexpr (W == Write::Remainder) split_remainder(w, pv.v[j], rv.v[j]);
      else pv.v[j] = narrow<P>(w);
    }
    if (full) {
      *reinterpret_cast<Vec<ST, kVec>*>(m + i) = mv;
      *reinterpret_cast<Vec<ST, kVec>*>(v + i) = vv;
      if constexpr (AMSGRAD) *reinterpret_cast<Vec<ST, kVec>*>(vmax + i) = xv;
      if constexpr (W == Write::Master) *reinterpret_cast<Vec<float, kVec>*>(master + i) = wv;
      if constexpr (W == Write::Remainder) *reinterpret_cast<Vec<int16_t, kVec>*>(rem + i) = rv;
      *reinterpret_cast<Vec<PT, kVec>*>(p + i) = pv;
    } else {
#pragma unroll
      for (int j = 0; j < kVec; ++j) {
        if (i + j < end) {
          m[i + j] = mv.v[j];
          v[i + j] = vv.v[j];
          if constexpr (AMSGRAD) vmax[i + j] = xv.v[j];
          if constexpr (W == Write::Master) master[i + j] = wv.v[j];
          if constexpr (W == Write::Remainder) rem[i + j] = rv.v[j];
          p[i + j] = pv.v[j];
        }
      }
    }
  }
}

}  // namespace
}  // namespace adamw_tau
