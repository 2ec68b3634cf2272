// CPU implementation of adamw_tau::adamw_step_: each tensor split into chunks across threads
// (at::parallel_for); the inner loop is the shared per-element math, compiled with
// -ffp-contract=off and left to the compiler to vectorise.
#include <ATen/Parallel.h>

#include "adamw_step.h"

namespace adamw_tau {
namespace {

template <Kind P, Kind G, Kind S, bool AMSGRAD, Write W>
void step_range(const TensorArgs& t, int64_t begin, int64_t end, const Scalars& s, float grad_scale, bool maximize,
                uint32_t key) {
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
    update<AMSGRAD>(w, widen<G>(g[i]), mi, vi, vm, s, grad_scale, maximize);
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
      for (const TensorArgs& t : b.tensors) {
        const uint32_t key = W == Write::Stochastic ? sr_key(b.seed, s.step, uint32_t(t.param_id)) : 0u;
        at::parallel_for(0, t.numel, kGrain, [&](int64_t begin, int64_t end) {
          step_range<P, G, S, A, W>(t, begin, end, s, scale, b.maximize, key);
        });
      }
    };
    auto with_write = [&]<bool A>() {
      if (b.master) run.template operator()<A, Write::Master>();
      else if (b.stochastic_rounding) run.template operator()<A, Write::Stochastic>();
      else run.template operator()<A, Write::Plain>();
    };
    if (b.amsgrad) with_write.template operator()<true>();
    else with_write.template operator()<false>();
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(adamw_tau, CPU, m) { m.impl("adamw_step_", &adamw_step_cpu); }

}  // namespace adamw_tau
