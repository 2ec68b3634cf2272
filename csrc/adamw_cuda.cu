// CUDA implementation of adamw_tau::launch_: one launch per table, whatever its tensor count.
//
// The tensor and block tables are built, cached and checked by adamw_tau/launch/tables.py, where
// the CPU tests run them; this file holds only what must run on the GPU: the kernel and
// its launch. 64-bit indices throughout; 16-byte vector loads and stores where every
// pointer allows them, element by element in the tail.
//
// [note: bitwise] Built with -fmad=false and no fast-math; the math in adamw_math.h uses
// the _rn intrinsics, which are never contracted, so the compiler flag is a second guard.
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include <algorithm>
#include <string>

#include "adamw_step.h"

namespace adamw_tau {
namespace {

constexpr int kThreads = 256;

// [note: 16-byte vectors] A thread takes kVec elements a pass, 16 bytes of the narrowest
// stream: 8 when any stream is bf16/fp16, 4 when all are fp32. The narrowest stream moves in
// one 16-byte load or store (LDG.E.128 / STG.E.128), an fp32 stream of an 8-element pass in
// two. Why: with 4 elements for every stream a 16-bit stream moved 8 bytes an access, and on
// an H200 (do_bench, one 268M-element tensor) bf16 params + grads + states reached 82.3% of
// device-copy bandwidth against 96.4% for fp32 (an H100 with bf16 states: 96.6%); more bytes
// in flight a thread is the aim. NOT YET MEASURED ON A GPU: the 16-byte kernel is checked
// only in its sm_90 SASS (tests/test_extension.py::test_cuda_vector_path_is_16_bytes), which
// also shows the cost: the 16-bit instantiations take 58-80 registers, 3 or 4 blocks of 256
// an SM, where the 4-element kernel took 38-54, 4 to 6 (nvcc 13.0; no spills either way).
constexpr int kVecBytes = 16;

template <typename PT, typename GT, typename ST>
constexpr int kVecOf = int(kVecBytes / std::min({sizeof(PT), sizeof(GT), sizeof(ST)}));

// [note: 16-byte alignment] A Vec is aligned to 16 bytes, not to its size: an fp32 Vec of 8
// elements (32 bytes) moves as two 16-byte halves, so every stream needs 16-byte alignment
// only, the test tables.py makes for the Triton hints (VEC_BYTES). 32 bytes would send an
// fp32 tensor at a 16-byte storage offset down the element path for nothing: sm_90 has no
// global access wider than 16 bytes. A 16-bit tensor 8 bytes off (vector path before, 8-byte
// accesses) now takes the element path.
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
                                                         bool maximize) {
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
  const Scalars s = scalars == nullptr ? host_s
                                       : Scalars{scalars[0], scalars[1], scalars[2], scalars[3], scalars[4],
                                                 scalars[5], scalars[6], scalars[7], __float_as_uint(scalars[8])};
  const float scale = grad_scale != nullptr ? *grad_scale : 1.0f;
  const uint32_t key = W == Write::Stochastic ? sr_key(seed, s.step, uint32_t(t.param_id)) : 0u;
  PT* p = static_cast<PT*>(t.p);
  const GT* g = static_cast<const GT*>(t.g);
  ST* m = static_cast<ST*>(t.m);
  ST* v = static_cast<ST*>(t.v);
  ST* vmax = static_cast<ST*>(t.vmax);
  float* master = t.master;
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
  if constexpr (W == Write::Master) __builtin_assume(__isGlobal(master));

  // Every pass starts at start + a multiple of kVec, so with 16-byte aligned pointers every
  // Vec is 16-byte aligned when start % kVec == 0. Blocks start at multiples of the chunk
  // (tables.CHUNK = 4096, a multiple of 8); the start test keeps any other chunk correct (it
  // takes the element path). The loop needs no relation between chunk and kThreads * kVec:
  // with 4096, a thread of a full block makes 2 passes of 8 or 4 of 4, and none idles.
  auto aligned = [](const void* ptr) { return reinterpret_cast<uintptr_t>(ptr) % kVecBytes == 0; };
  const bool vec = start % kVec == 0 && aligned(p) && aligned(g) && aligned(m) && aligned(v) &&
                   (!AMSGRAD || aligned(vmax)) && (W != Write::Master || aligned(master));

  for (int64_t i = start + int64_t(threadIdx.x) * kVec; i < end; i += int64_t(kThreads) * kVec) {
    Vec<PT, kVec> pv;
    Vec<GT, kVec> gv;
    Vec<ST, kVec> mv, vv, xv;
    Vec<float, kVec> wv;
    const bool full = vec && i + kVec <= end;
    if (full) {
      gv = *reinterpret_cast<const Vec<GT, kVec>*>(g + i);
      mv = *reinterpret_cast<const Vec<ST, kVec>*>(m + i);
      vv = *reinterpret_cast<const Vec<ST, kVec>*>(v + i);
      if constexpr (AMSGRAD) xv = *reinterpret_cast<const Vec<ST, kVec>*>(vmax + i);
      if constexpr (W == Write::Master) wv = *reinterpret_cast<const Vec<float, kVec>*>(master + i);
      else pv = *reinterpret_cast<const Vec<PT, kVec>*>(p + i);
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
        }
      }
    }
#pragma unroll
    for (int j = 0; j < kVec; ++j) {
      float w = W == Write::Master ? wv.v[j] : widen<P>(pv.v[j]);
      float mi = widen<S>(mv.v[j]), vi = widen<S>(vv.v[j]);
      float vm = AMSGRAD ? widen<S>(xv.v[j]) : 0.0f;
      update<AMSGRAD>(w, widen<G>(gv.v[j]), mi, vi, vm, s, scale, maximize);
      mv.v[j] = narrow<S>(mi);
      vv.v[j] = narrow<S>(vi);
      if constexpr (AMSGRAD) xv.v[j] = narrow<S>(vm);
      wv.v[j] = w;
      if constexpr (W == Write::Stochastic && P != Kind::F32) pv.v[j] = stochastic_round<P>(w, sr_bits(key, i + j));
      else pv.v[j] = narrow<P>(w);
    }
    if (full) {
      *reinterpret_cast<Vec<ST, kVec>*>(m + i) = mv;
      *reinterpret_cast<Vec<ST, kVec>*>(v + i) = vv;
      if constexpr (AMSGRAD) *reinterpret_cast<Vec<ST, kVec>*>(vmax + i) = xv;
      if constexpr (W == Write::Master) *reinterpret_cast<Vec<float, kVec>*>(master + i) = wv;
      *reinterpret_cast<Vec<PT, kVec>*>(p + i) = pv;
    } else {
#pragma unroll
      for (int j = 0; j < kVec; ++j) {
        if (i + j < end) {
          m[i + j] = mv.v[j];
          v[i + j] = vv.v[j];
          if constexpr (AMSGRAD) vmax[i + j] = xv.v[j];
          if constexpr (W == Write::Master) master[i + j] = wv.v[j];
          p[i + j] = pv.v[j];
        }
      }
    }
  }
}

void launch_cuda(const at::Tensor& tensor_table, const at::Tensor& block_table, int64_t chunk, const at::Tensor& scalars,
                 at::ScalarType param_dtype, at::ScalarType grad_dtype, at::ScalarType state_dtype, int64_t seed,
                 bool amsgrad, bool maximize, bool master, bool stochastic_rounding,
                 const std::optional<at::Tensor>& grad_scale, const std::optional<at::Tensor>& found_inf) {
  const LaunchArgs b = launch_args(tensor_table, block_table, chunk, param_dtype, grad_dtype, state_dtype, seed, amsgrad,
                                   maximize, master, stochastic_rounding);
  const at::Device device = tensor_table.device();
  // [note: host scalars] A CPU scalars tensor is read here and passed by value: no pinned
  // copy per step (measured on an H200: the copy was a quarter of a 1-tensor step's host time).
  const bool on_host = scalars.is_cpu();
  TORCH_CHECK(device.is_cuda() && (on_host || scalars.device() == device) && scalars.scalar_type() == at::kFloat &&
                  scalars.numel() == 9 && scalars.is_contiguous(),
              "adamw_tau: scalars must be 9 contiguous float32 values on the CPU or on ", device);
  const Scalars host_s = on_host ? read_scalars(scalars.data_ptr<float>()) : Scalars{};
  for (const auto& opt : {grad_scale, found_inf})
    TORCH_CHECK(!opt.has_value() || (opt->device() == device && opt->scalar_type() == at::kFloat),
                "adamw_tau: grad_scale and found_inf must be float32 on ", device);
  if (b.n_blocks == 0) return;
  TORCH_CHECK(b.n_blocks < (int64_t(1) << 31), "adamw_tau: too many blocks for one launch");
  const c10::cuda::CUDAGuard guard(device);
  const auto stream = at::cuda::getCurrentCUDAStream();
  const float* scale = grad_scale.has_value() ? grad_scale->data_ptr<float>() : nullptr;
  const float* inf = found_inf.has_value() ? found_inf->data_ptr<float>() : nullptr;
  dispatch_kinds(b, [&]<Kind P, Kind G, Kind S>() {
    auto launch = [&]<bool A, Write W>() {
      adamw_kernel<P, G, S, A, W><<<unsigned(b.n_blocks), kThreads, 0, stream>>>(
          b.tensors, b.blocks, b.chunk, on_host ? nullptr : scalars.data_ptr<float>(), host_s, scale, inf, b.seed,
          b.maximize);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    };
    dispatch_flags(b, launch);
  });
}

// "" if this build has a kernel image (or PTX the driver can compile) for the device, else
// why not: a build for other archs must not crash at the first step.
std::string cuda_kernel_problem(int64_t device) {
  const c10::cuda::CUDAGuard guard(c10::DeviceIndex(device));
  cudaFuncAttributes attr;
  const cudaError_t err =
      cudaFuncGetAttributes(&attr, adamw_kernel<Kind::F32, Kind::F32, Kind::F32, false, Write::Plain>);
  if (err == cudaSuccess) return "";
  (void)cudaGetLastError();  // clear it: the next launch must not see it
  cudaDeviceProp prop;
  C10_CUDA_CHECK(cudaGetDeviceProperties(&prop, int(device)));
  return std::string("the CUDA extension has no kernel for this GPU (sm_") + std::to_string(prop.major) +
         std::to_string(prop.minor) + "): " + cudaGetErrorString(err) +
         "; rebuild it with TORCH_CUDA_ARCH_LIST including " + std::to_string(prop.major) + "." +
         std::to_string(prop.minor);
}

}  // namespace

TORCH_LIBRARY_IMPL(adamw_tau, CUDA, m) { m.impl("launch_", &launch_cuda); }

TORCH_LIBRARY_FRAGMENT(adamw_tau, m) { m.def("cuda_kernel_problem(int device) -> str", &cuda_kernel_problem); }

}  // namespace adamw_tau
