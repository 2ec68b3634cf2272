// CPU implementation of adamw_tau::launch_: the blocks of the block table (tables.py) split
// across threads (at::parallel_for); the inner loop is the shared per-element math, compiled
// with -ffp-contract=off and left to the compiler to vectorise. It reads the same tables as
// the GPU kernels, so the CPU tests check them.
#include <ATen/Parallel.h>

#include <algorithm>

#include "adamw_quant_cpu.h"
#include "adamw_step.h"

namespace adamw_tau {
namespace {

template <Kind P, Kind G, Kind S, bool AMSGRAD, Write W, bool SCALE>
__attribute__((noinline)) void step_range(const TensorArgs t, int64_t begin, int64_t end, const Scalars s, const float grad_scale,
                const bool maximize, const uint32_t key, const float coef, const bool clipped) {
  // by value and not inlined into the OpenMP region: there GCC does not vectorise the loop (measured: 3x slower)
  using PT = typename Storage<P>::type;
  using GT = typename Storage<G>::type;
  using ST = typename Storage<S>::type;
  PT* __restrict__ p = static_cast<PT*>(t.p);
  const GT* __restrict__ g = static_cast<const GT*>(t.g);
  ST* __restrict__ m = static_cast<ST*>(t.m);
  ST* __restrict__ v = static_cast<ST*>(t.v);
  ST* __restrict__ vmax = static_cast<ST*>(t.vmax);
  float* __restrict__ master = static_cast<float*>(t.master);
  int16_t* __restrict__ rem = static_cast<int16_t*>(t.master);
  for (int64_t i = begin; i < end; ++i) {
    float w = read_weight<P, W>(p, master, rem, i);
    float mi = widen<S>(m[i]), vi = widen<S>(v[i]);
    float vm = AMSGRAD ? widen<S>(vmax[i]) : 0.0f;
    // without a GradScaler the division by 1 is skipped: g / 1 == g exactly, so the bits agree
    update<AMSGRAD>(w, widen<G>(g[i]), mi, vi, vm, s, SCALE ? grad_scale : 1.0f, maximize, SCALE, coef, clipped);
    m[i] = narrow<S>(mi);
    v[i] = narrow<S>(vi);
    if constexpr (AMSGRAD) vmax[i] = narrow<S>(vm);
    write_weight<P, W>(w, p, master, rem, i, key);
  }
}

constexpr int64_t kGrain = 1 << 15;  // elements per thread task at the least

void launch_cpu(const at::Tensor& tensor_table, const at::Tensor& block_table, int64_t chunk, const at::Tensor& scalars,
                at::ScalarType param_dtype, at::ScalarType grad_dtype, int64_t state_format, int64_t seed,
                bool amsgrad, bool maximize, int64_t master, bool stochastic_rounding,
                const std::optional<at::Tensor>& grad_scale, const std::optional<at::Tensor>& found_inf,
                const std::optional<at::Tensor>& grad_coef) {
  const LaunchArgs b = launch_args(tensor_table, block_table, chunk, param_dtype, grad_dtype, state_format, seed, amsgrad,
                                   maximize, master, stochastic_rounding);
  TORCH_CHECK(tensor_table.is_cpu(), "adamw_tau: the CPU op takes CPU tables");
  TORCH_CHECK(scalars.is_cpu() && scalars.scalar_type() == at::kFloat && scalars.numel() == 9,
              "adamw_tau: scalars must be 9 float32 values on the CPU");
  if (found_inf.has_value() && found_inf->item<float>() != 0.0f) return;
  const float scale = grad_scale.has_value() ? grad_scale->item<float>() : 1.0f;
  const bool scaled = grad_scale.has_value(), clipped = grad_coef.has_value();
  const float coef = clipped ? grad_coef->item<float>() : 1.0f;
  const Scalars s = read_scalars(scalars.contiguous().data_ptr<float>());
  dispatch_kinds(b, [&]<Kind P, Kind G, Kind S>() {
    auto run = [&]<bool A, Write W>() {
      // One parallel region over the block table, as a GPU grid: a region per tensor costs
      // a fork/join each, which dominates with many small tensors.
      // Threads only when there is work for them: many tiny tensors are many tiny blocks, and a
      // parallel region over them cost milliseconds (measured: 52 tensors of 16 elements, 6.6 ms).
      int64_t total = 0;
      for (int64_t r = 0; r < b.n_tensors; ++r) total += b.tensors[r].numel;
      const int64_t grain = total <= kGrain ? std::max<int64_t>(1, b.n_blocks) : std::max<int64_t>(1, kGrain / b.chunk);
      at::parallel_for(0, b.n_blocks, grain, [&](int64_t begin, int64_t end) {
        for (int64_t k = begin; k < end; ++k) {
          const TensorArgs& t = b.tensors[b.blocks[2 * k]];
          const int64_t lo = b.blocks[2 * k + 1];
          const int64_t hi = std::min(lo + b.chunk, t.numel);
          const uint32_t key = W == Write::Stochastic ? sr_key(b.seed, s.step, uint32_t(t.param_id)) : 0u;
          if constexpr (is_quantized(S)) {
            using C = typename CodecOf<S>::type;
            if (scaled) step_range_quant<C, P, G, A, W, true>(t, lo, hi, s, scale, b.maximize, key, coef, clipped);
            else step_range_quant<C, P, G, A, W, false>(t, lo, hi, s, scale, b.maximize, key, coef, clipped);
          } else {
            if (scaled) step_range<P, G, S, A, W, true>(t, lo, hi, s, scale, b.maximize, key, coef, clipped);
            else step_range<P, G, S, A, W, false>(t, lo, hi, s, scale, b.maximize, key, coef, clipped);
          }
        }
      });
    };
    dispatch_flags<P>(b, run);
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(adamw_tau, CPU, m) { m.impl("launch_", &launch_cpu); }

}  // namespace adamw_tau
