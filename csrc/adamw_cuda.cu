// CUDA implementation of adamw_tau::adamw_step_: one launch per bucket, whatever its tensor count.
//
// A table of TensorArgs and a block table (tensor, first element) live on the device and
// are rebuilt only when the tensors' pointers change; the host's work per step is
// collecting pointers. 64-bit indices throughout; 4-element vector loads and stores where
// every pointer allows them, element by element in the tail.
//
// [note: bitwise] Built with -fmad=false and no fast-math; the math in adamw_math.h uses
// the _rn intrinsics, which are never contracted, so the compiler flag is a second guard.
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include <list>
#include <mutex>

#include "adamw_step.h"

namespace adamw_tau {
namespace {

constexpr int kThreads = 256;
constexpr int kVec = 4;
constexpr int64_t kChunk = 4096;  // elements per block

template <typename T>
struct alignas(sizeof(T) * kVec) Vec {
  T v[kVec];
};

template <Kind P, Kind G, Kind S, bool AMSGRAD, Write W>
__global__ void __launch_bounds__(kThreads) adamw_kernel(const TensorArgs* __restrict__ tensors,
                                                         const int64_t* __restrict__ blocks,
                                                         const float* __restrict__ scalars,
                                                         const float* __restrict__ grad_scale,
                                                         const float* __restrict__ found_inf, uint64_t seed,
                                                         bool maximize) {
  using PT = typename Storage<P>::type;
  using GT = typename Storage<G>::type;
  using ST = typename Storage<S>::type;
  if (found_inf != nullptr && *found_inf != 0.0f) return;
  const TensorArgs t = tensors[blocks[2 * blockIdx.x]];
  const int64_t start = blocks[2 * blockIdx.x + 1];
  const int64_t end = start + kChunk < t.numel ? start + kChunk : t.numel;
  const Scalars s{scalars[0], scalars[1], scalars[2], scalars[3], scalars[4],
                  scalars[5], scalars[6], scalars[7], __float_as_uint(scalars[8])};
  const float scale = grad_scale != nullptr ? *grad_scale : 1.0f;
  const uint32_t key = W == Write::Stochastic ? sr_key(seed, s.step, uint32_t(t.param_id)) : 0u;
  PT* p = static_cast<PT*>(t.p);
  const GT* g = static_cast<const GT*>(t.g);
  ST* m = static_cast<ST*>(t.m);
  ST* v = static_cast<ST*>(t.v);
  ST* vmax = static_cast<ST*>(t.vmax);
  float* master = t.master;

  auto aligned = [](const void* ptr, size_t elem) { return reinterpret_cast<uintptr_t>(ptr) % (elem * kVec) == 0; };
  const bool vec = aligned(p, sizeof(PT)) && aligned(g, sizeof(GT)) && aligned(m, sizeof(ST)) &&
                   aligned(v, sizeof(ST)) && (!AMSGRAD || aligned(vmax, sizeof(ST))) &&
                   (W != Write::Master || aligned(master, sizeof(float)));

  for (int64_t i = start + int64_t(threadIdx.x) * kVec; i < end; i += int64_t(kThreads) * kVec) {
    Vec<PT> pv;
    Vec<GT> gv;
    Vec<ST> mv, vv, xv;
    Vec<float> wv;
    const bool full = vec && i + kVec <= end;
    if (full) {
      gv = *reinterpret_cast<const Vec<GT>*>(g + i);
      mv = *reinterpret_cast<const Vec<ST>*>(m + i);
      vv = *reinterpret_cast<const Vec<ST>*>(v + i);
      if constexpr (AMSGRAD) xv = *reinterpret_cast<const Vec<ST>*>(vmax + i);
      if constexpr (W == Write::Master) wv = *reinterpret_cast<const Vec<float>*>(master + i);
      else pv = *reinterpret_cast<const Vec<PT>*>(p + i);
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
      *reinterpret_cast<Vec<ST>*>(m + i) = mv;
      *reinterpret_cast<Vec<ST>*>(v + i) = vv;
      if constexpr (AMSGRAD) *reinterpret_cast<Vec<ST>*>(vmax + i) = xv;
      if constexpr (W == Write::Master) *reinterpret_cast<Vec<float>*>(master + i) = wv;
      *reinterpret_cast<Vec<PT>*>(p + i) = pv;
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

// Device tables keyed by every pointer, numel and id of the bucket; a hit means this call's
// tensors sit exactly where the table says.
struct Tables {
  at::Tensor tensors, blocks;
  int64_t n_blocks;
};
struct Plan {
  std::vector<int64_t> key;
  Tables tables;
};
std::mutex plans_mutex;
std::list<Plan> plans;
constexpr size_t kMaxPlans = 16;

Tables plan_for(const BucketArgs& b, const at::Device& device) {
  std::vector<int64_t> key;
  key.reserve(b.tensors.size() * 8 + 1);
  key.push_back(device.index());
  for (const auto& t : b.tensors) {
    key.insert(key.end(), {reinterpret_cast<int64_t>(t.p), reinterpret_cast<int64_t>(t.g),
                           reinterpret_cast<int64_t>(t.m), reinterpret_cast<int64_t>(t.v),
                           reinterpret_cast<int64_t>(t.vmax), reinterpret_cast<int64_t>(t.master), t.numel,
                           t.param_id});
  }
  std::lock_guard<std::mutex> lock(plans_mutex);
  for (auto it = plans.begin(); it != plans.end(); ++it) {
    if (it->key == key) {
      plans.splice(plans.begin(), plans, it);
      return plans.front().tables;
    }
  }
  std::vector<int64_t> blocks;
  for (size_t i = 0; i < b.tensors.size(); ++i)
    for (int64_t s = 0; s < b.tensors[i].numel; s += kChunk) blocks.insert(blocks.end(), {int64_t(i), s});
  const auto pinned = at::TensorOptions().dtype(at::kByte).pinned_memory(true);
  at::Tensor host_t = at::empty({int64_t(b.tensors.size() * sizeof(TensorArgs))}, pinned);
  std::memcpy(host_t.data_ptr(), b.tensors.data(), host_t.numel());
  at::Tensor host_b = at::empty({int64_t(blocks.size() * sizeof(int64_t))}, pinned);
  std::memcpy(host_b.data_ptr(), blocks.data(), host_b.numel());
  Tables tables{host_t.to(device, /*non_blocking=*/true), host_b.to(device, /*non_blocking=*/true),
                int64_t(blocks.size() / 2)};
  plans.push_front(Plan{std::move(key), tables});
  if (plans.size() > kMaxPlans) plans.pop_back();
  return tables;
}

void adamw_step_cuda(at::TensorList params, at::TensorList grads, at::TensorList exp_avgs,
                     at::TensorList exp_avg_sqs, at::TensorList max_exp_avg_sqs, at::TensorList masters,
                     const at::Tensor& scalars, at::IntArrayRef param_ids, int64_t seed, bool amsgrad, bool maximize,
                     bool stochastic_rounding, const std::optional<at::Tensor>& grad_scale,
                     const std::optional<at::Tensor>& found_inf) {
  const BucketArgs b = bucket_args(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, masters, param_ids, seed,
                                   amsgrad, maximize, stochastic_rounding);
  if (b.tensors.empty()) return;
  const at::Device device = params[0].device();
  TORCH_CHECK(scalars.device() == device && scalars.scalar_type() == at::kFloat && scalars.numel() == 9 &&
                  scalars.is_contiguous(),
              "adamw_tau: scalars must be 9 contiguous float32 values on ", device);
  for (const auto& opt : {grad_scale, found_inf})
    TORCH_CHECK(!opt.has_value() || (opt->device() == device && opt->scalar_type() == at::kFloat),
                "adamw_tau: grad_scale and found_inf must be float32 on ", device);
  const c10::cuda::CUDAGuard guard(device);
  const Tables plan = plan_for(b, device);
  const auto stream = at::cuda::getCurrentCUDAStream();
  const float* scale = grad_scale.has_value() ? grad_scale->data_ptr<float>() : nullptr;
  const float* inf = found_inf.has_value() ? found_inf->data_ptr<float>() : nullptr;
  dispatch_kinds(b, [&]<Kind P, Kind G, Kind S>() {
    auto launch = [&]<bool A, Write W>() {
      adamw_kernel<P, G, S, A, W><<<plan.n_blocks, kThreads, 0, stream>>>(
          reinterpret_cast<const TensorArgs*>(plan.tensors.data_ptr()), plan.blocks.data_ptr<int64_t>(),
          scalars.data_ptr<float>(), scale, inf, b.seed, b.maximize);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    };
    dispatch_flags(b, launch);
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(adamw_tau, CUDA, m) { m.impl("adamw_step_", &adamw_step_cuda); }

}  // namespace adamw_tau
