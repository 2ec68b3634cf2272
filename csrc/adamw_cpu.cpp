// CPU implementation of adamw_tau::adamw_step_: each tensor split into chunks across threads
// (at::parallel_for); the inner loop is the shared per-element math, compiled with
// -ffp-contract=off and left to the compiler to vectorise.
#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

#include "adamw_step.h"

namespace adamw_tau {
namespace {

template <Kind P, Kind G, Kind S, bool AMSGRAD, Write W, bool SCALE>
__attribute__((noinline)) void step_range(const TensorArgs t, int64_t begin, int64_t end, const Scalars s, const float grad_scale,
                const bool maximize, const uint32_t key) {
  // by value and not inlined into the OpenMP region: there GCC does not vectorise the loop (measured: 3x slower)
  using PT = typename Storage<P>::type;
  using GT = typename Storage<G>::type;
  using ST = typename Storage<S>::type;
  PT* __restrict__ p = static_cast<PT*>(t.p);
  const GT* __restrict__ g = static_cast<const GT*>(t.g);
  ST* __restrict__ m = static_cast<ST*>(t.m);
  ST* __restrict__ v = static_cast<ST*>(t.v);
  ST* __restrict__ vmax = static_cast<ST*>(t.vmax);
  float* __restrict__ master = t.master;
  for (int64_t i = begin; i < end; ++i) {
    float w = W == Write::Master ? master[i] : widen<P>(p[i]);
    float mi = widen<S>(m[i]), vi = widen<S>(v[i]);
    float vm = AMSGRAD ? widen<S>(vmax[i]) : 0.0f;
    // without a GradScaler the division by 1 is skipped: g / 1 == g exactly, so the bits agree
    update<AMSGRAD>(w, widen<G>(g[i]), mi, vi, vm, s, SCALE ? grad_scale : 1.0f, maximize, SCALE);
    m[i] = narrow<S>(mi);
    v[i] = narrow<S>(vi);
    if constexpr (AMSGRAD) vmax[i] = narrow<S>(vm);
    if constexpr (W == Write::Master) {
      master[i] = w;
      p[i] = narrow<P>(w);
    } else if constexpr (W == Write::Stochastic && P != Kind::F32) {
      p[i] = stochastic_round<P>(w, sr_bits(key, i));
    } else {
      p[i] = narrow<P>(w);
    }
  }
}

constexpr int64_t kGrain = 1 << 15;

void adamw_step_cpu(at::TensorList params, at::TensorList grads, at::TensorList exp_avgs, at::TensorList exp_avg_sqs,
                    at::TensorList max_exp_avg_sqs, at::TensorList masters, const at::Tensor& scalars,
                    at::IntArrayRef param_ids, int64_t seed, bool amsgrad, bool maximize, bool stochastic_rounding,
                    const std::optional<at::Tensor>& grad_scale, const std::optional<at::Tensor>& found_inf) {
  const BucketArgs b = bucket_args(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, masters, param_ids, seed,
                                   amsgrad, maximize, stochastic_rounding);
  TORCH_CHECK(scalars.is_cpu() && scalars.scalar_type() == at::kFloat && scalars.numel() == 9,
              "adamw_tau: scalars must be 9 float32 values on the CPU");
  if (found_inf.has_value() && found_inf->item<float>() != 0.0f) return;
  const float scale = grad_scale.has_value() ? grad_scale->item<float>() : 1.0f;
  const Scalars s = read_scalars(scalars.contiguous().data_ptr<float>());
  dispatch_kinds(b, [&]<Kind P, Kind G, Kind S>() {
    auto run = [&]<bool A, Write W>() {
      // One parallel region over all the bucket's elements, split across tensor boundaries:
      // a region per tensor costs a fork/join each, which dominates with many small tensors.
      std::vector<int64_t> offsets(b.tensors.size() + 1, 0);
      std::vector<uint32_t> keys(b.tensors.size(), 0u);
      for (size_t k = 0; k < b.tensors.size(); ++k) {
        offsets[k + 1] = offsets[k] + b.tensors[k].numel;
        if (W == Write::Stochastic) keys[k] = sr_key(b.seed, s.step, uint32_t(b.tensors[k].param_id));
      }
      at::parallel_for(0, offsets.back(), kGrain, [&](int64_t begin, int64_t end) {
        size_t k = std::upper_bound(offsets.begin(), offsets.end(), begin) - offsets.begin() - 1;
        for (; k < b.tensors.size() && offsets[k] < end; ++k) {
          const int64_t lo = std::max(begin, offsets[k]) - offsets[k];
          const int64_t hi = std::min(end, offsets[k + 1]) - offsets[k];
          if (grad_scale.has_value()) step_range<P, G, S, A, W, true>(b.tensors[k], lo, hi, s, scale, b.maximize, keys[k]);
          else step_range<P, G, S, A, W, false>(b.tensors[k], lo, hi, s, scale, b.maximize, keys[k]);
        }
      });
    };
    dispatch_flags(b, run);
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(adamw_tau, CPU, m) { m.impl("adamw_step_", &adamw_step_cpu); }

}  // namespace adamw_tau
