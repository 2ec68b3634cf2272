// CUDA implementation of adamw_tau::launch_: one launch per table, whatever its tensor count.
//
// The tensor and block tables are built, cached and checked by adamw_tau/launch/tables.py, where
// the CPU tests run them. The kernel itself is adamw_kernel_body.h, which the CPU tests also
// compile for the host and run over the same tables ([note: host-compilable] there); this file
// holds only what must run on the GPU: the launch, its checks, device guard and stream, and
// the build's kernel-image test.
//
// [note: bitwise] Built with -fmad=false and no fast-math; the math in adamw_math.h uses
// the _rn intrinsics, which are never contracted, so the compiler flag is a second guard.
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include <string>

#include "adamw_kernel_body.h"
#include "adamw_quant_kernel.h"
#include "adamw_step.h"

namespace adamw_tau {
namespace {

void launch_cuda(const at::Tensor& tensor_table, const at::Tensor& block_table, int64_t chunk, const at::Tensor& scalars,
                 at::ScalarType param_dtype, at::ScalarType grad_dtype, int64_t state_format, int64_t seed,
                 bool amsgrad, bool maximize, int64_t master, bool stochastic_rounding,
                 const std::optional<at::Tensor>& grad_scale, const std::optional<at::Tensor>& found_inf,
                 const std::optional<at::Tensor>& grad_coef) {
  const LaunchArgs b = launch_args(tensor_table, block_table, chunk, param_dtype, grad_dtype, state_format, seed, amsgrad,
                                   maximize, master, stochastic_rounding);
  const at::Device device = tensor_table.device();
  // [note: host scalars] A CPU scalars tensor is read here and passed by value: no pinned
  // copy per step (measured on an H200: the copy was a quarter of a 1-tensor step's host time).
  const bool on_host = scalars.is_cpu();
  TORCH_CHECK(device.is_cuda() && (on_host || scalars.device() == device) && scalars.scalar_type() == at::kFloat &&
                  scalars.numel() == 9 && scalars.is_contiguous(),
              "adamw_tau: scalars must be 9 contiguous float32 values on the CPU or on ", device);
  const Scalars host_s = on_host ? read_scalars(scalars.data_ptr<float>()) : Scalars{};
  for (const auto& opt : {grad_scale, found_inf, grad_coef})
    TORCH_CHECK(!opt.has_value() || (opt->device() == device && opt->scalar_type() == at::kFloat),
                "adamw_tau: grad_scale, found_inf and grad_coef must be float32 on ", device);
  if (b.n_blocks == 0) return;
  TORCH_CHECK(b.n_blocks < (int64_t(1) << 31), "adamw_tau: too many blocks for one launch");
  const c10::cuda::CUDAGuard guard(device);
  const auto stream = at::cuda::getCurrentCUDAStream();
  const float* scale = grad_scale.has_value() ? grad_scale->data_ptr<float>() : nullptr;
  const float* inf = found_inf.has_value() ? found_inf->data_ptr<float>() : nullptr;
  const float* coef = grad_coef.has_value() ? grad_coef->data_ptr<float>() : nullptr;
  dispatch_kinds(b, [&]<Kind P, Kind G, Kind S>() {
    auto launch = [&]<bool A, Write W>() {
      const float* device_s = on_host ? nullptr : scalars.data_ptr<float>();
      if constexpr (is_quantized(S))
        adamw_quant_kernel<typename CodecOf<S>::type, P, G, A, W>
            <<<unsigned(b.n_blocks), kQ8Threads, 0, stream>>>(
            b.tensors, b.blocks, b.chunk, device_s, host_s, scale, inf, b.seed, b.maximize, coef);
      else
        adamw_kernel<P, G, S, A, W><<<unsigned(b.n_blocks), kThreads, 0, stream>>>(
            b.tensors, b.blocks, b.chunk, device_s, host_s, scale, inf, b.seed, b.maximize, coef);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    };
    dispatch_flags<P>(b, launch);
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
