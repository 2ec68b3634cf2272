// The op's argument checks and its dtype dispatch, shared by the CPU and CUDA implementations.
#pragma once

#include <ATen/ATen.h>
#include <torch/library.h>

#include "adamw_math.h"

namespace adamw_tau {

// What a kernel needs for one tensor of the bucket.
struct TensorArgs {
  void* p;
  const void* g;
  void* m;
  void* v;
  void* vmax;
  float* master;
  int64_t numel;
  int64_t param_id;
};

struct BucketArgs {
  std::vector<TensorArgs> tensors;
  Kind param_kind, grad_kind, state_kind;
  bool amsgrad, maximize, master, stochastic_rounding;
  uint64_t seed;
};

inline Kind kind_of(const at::Tensor& t, const char* what) {
  switch (t.scalar_type()) {
    case at::kFloat: return Kind::F32;
    case at::kBFloat16: return Kind::BF16;
    case at::kHalf: return Kind::F16;
    default: TORCH_CHECK(false, "adamw_tau: ", what, " must be float32, bfloat16 or float16, got ", t.scalar_type());
  }
}

inline BucketArgs bucket_args(const at::TensorList params, const at::TensorList grads, const at::TensorList exp_avgs,
                              const at::TensorList exp_avg_sqs, const at::TensorList max_exp_avg_sqs,
                              const at::TensorList masters, const at::IntArrayRef param_ids, int64_t seed,
                              bool amsgrad, bool maximize, bool stochastic_rounding) {
  const size_t n = params.size();
  TORCH_CHECK(grads.size() == n && exp_avgs.size() == n && exp_avg_sqs.size() == n && param_ids.size() == n,
              "adamw_tau: params, grads, exp_avgs, exp_avg_sqs and param_ids must have the same length");
  TORCH_CHECK(!amsgrad || max_exp_avg_sqs.size() == n, "adamw_tau: amsgrad needs one max_exp_avg_sq per param");
  TORCH_CHECK(masters.empty() || masters.size() == n, "adamw_tau: masters must be empty or one per param");
  BucketArgs b;
  b.amsgrad = amsgrad;
  b.maximize = maximize;
  b.master = !masters.empty();
  b.seed = uint64_t(seed);
  b.param_kind = n ? kind_of(params[0], "params") : Kind::F32;
  b.grad_kind = n ? kind_of(grads[0], "grads") : Kind::F32;
  b.state_kind = n ? kind_of(exp_avgs[0], "exp_avgs") : Kind::F32;
  b.stochastic_rounding = stochastic_rounding && !b.master && b.param_kind != Kind::F32;
  b.tensors.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    const auto numel = params[i].numel();
    auto same = [&](const at::Tensor& t, const char* what, Kind k) {
      TORCH_CHECK(t.numel() == numel && t.is_contiguous() && t.device() == params[i].device() && kind_of(t, what) == k,
                  "adamw_tau: ", what, "[", i, "] must be contiguous, on ", params[i].device(), ", with ", numel,
                  " elements of the bucket's dtype");
    };
    same(params[i], "params", b.param_kind);
    same(grads[i], "grads", b.grad_kind);
    same(exp_avgs[i], "exp_avgs", b.state_kind);
    same(exp_avg_sqs[i], "exp_avg_sqs", b.state_kind);
    if (amsgrad) same(max_exp_avg_sqs[i], "max_exp_avg_sqs", b.state_kind);
    if (b.master) same(masters[i], "masters", Kind::F32);
    if (numel == 0) continue;
    b.tensors.push_back({params[i].data_ptr(), grads[i].data_ptr(), exp_avgs[i].data_ptr(), exp_avg_sqs[i].data_ptr(),
                         amsgrad ? max_exp_avg_sqs[i].data_ptr() : nullptr,
                         b.master ? masters[i].data_ptr<float>() : nullptr, numel, param_ids[i]});
  }
  return b;
}

inline Scalars read_scalars(const float* s) {
  Scalars out{s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7], as_bits(s[8])};
  return out;
}

// How the new fp32 weight reaches the param: as it is, rounded to nearest, or stochastically.
enum class Write { Plain, Master, Stochastic };

// Calls f.template operator()<AMSGRAD, W>() for the bucket's flags.
template <typename F>
void dispatch_flags(const BucketArgs& b, F&& f) {
  auto with_write = [&]<bool A>() {
    if (b.master) f.template operator()<A, Write::Master>();
    else if (b.stochastic_rounding) f.template operator()<A, Write::Stochastic>();
    else f.template operator()<A, Write::Plain>();
  };
  if (b.amsgrad) with_write.template operator()<true>();
  else with_write.template operator()<false>();
}

// Calls f.template operator()<P, G, S>() for the bucket's kinds (grads share the param's kind
// or are fp32; states are fp32, bf16, or fp16 as torch keeps them for fp16 params).
template <typename F>
void dispatch_kinds(const BucketArgs& b, F&& f) {
  auto with_state = [&](auto pk, auto gk) {
    if (b.state_kind == Kind::F32) f.template operator()<decltype(pk)::value, decltype(gk)::value, Kind::F32>();
    else if (b.state_kind == Kind::BF16) f.template operator()<decltype(pk)::value, decltype(gk)::value, Kind::BF16>();
    else f.template operator()<decltype(pk)::value, decltype(gk)::value, Kind::F16>();  // torch's choice for fp16 params
  };
  auto with_grad = [&](auto pk) {
    if (b.grad_kind == Kind::F32) with_state(pk, std::integral_constant<Kind, Kind::F32>{});
    else {
      TORCH_CHECK(b.grad_kind == decltype(pk)::value, "adamw_tau: grads must be float32 or the params' dtype");
      with_state(pk, pk);
    }
  };
  switch (b.param_kind) {
    case Kind::F32: with_grad(std::integral_constant<Kind, Kind::F32>{}); break;
    case Kind::BF16: with_grad(std::integral_constant<Kind, Kind::BF16>{}); break;
    case Kind::F16: with_grad(std::integral_constant<Kind, Kind::F16>{}); break;
  }
}


}  // namespace adamw_tau
