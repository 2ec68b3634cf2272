// The op's argument checks and its dtype dispatch, shared by the CPU and CUDA implementations.
#pragma once

#include <ATen/ATen.h>
#include <torch/library.h>

#include <cstddef>

#include "adamw_math.h"

namespace adamw_tau {

// One row of the tensor table that adamw_tau/launch/tables.py builds (int64 [n, 8]): the addresses
// of p, g, m, v, vmax and the fp32 master (0 where absent), numel, param_id. The kernels read
// the table as an array of these.
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
static_assert(sizeof(TensorArgs) == 8 * sizeof(int64_t), "TensorArgs must be one int64 table row");
static_assert(offsetof(TensorArgs, g) == 1 * 8 && offsetof(TensorArgs, master) == 5 * 8 &&
                  offsetof(TensorArgs, numel) == 6 * 8 && offsetof(TensorArgs, param_id) == 7 * 8,
              "TensorArgs fields must sit in tables.COLUMNS order");

// One launch: the tables, the dtype path and the flags.
struct LaunchArgs {
  const TensorArgs* tensors;
  const int64_t* blocks;  // (row, first element) pairs
  int64_t n_tensors, n_blocks, chunk;
  Kind param_kind, grad_kind, state_kind;
  bool amsgrad, maximize, master, stochastic_rounding;
  uint64_t seed;
};

inline Kind kind_of(at::ScalarType t, const char* what) {
  switch (t) {
    case at::kFloat: return Kind::F32;
    case at::kBFloat16: return Kind::BF16;
    case at::kHalf: return Kind::F16;
    default: TORCH_CHECK(false, "adamw_tau: ", what, " must be float32, bfloat16 or float16, got ", t);
  }
}

// Checks the tables' dtype, shape and device (an int64 table read as bytes, or a column too
// few, fails here on every device) and reads the flags.
inline LaunchArgs launch_args(const at::Tensor& tensor_table, const at::Tensor& block_table, int64_t chunk,
                              at::ScalarType param_dtype, at::ScalarType grad_dtype, at::ScalarType state_dtype,
                              int64_t seed, bool amsgrad, bool maximize, bool master, bool stochastic_rounding) {
  for (const auto* t : {&tensor_table, &block_table})
    TORCH_CHECK(t->scalar_type() == at::kLong && t->dim() == 2 && t->is_contiguous(),
                "adamw_tau: launch tables must be contiguous 2-d int64 tensors, got ", t->scalar_type(), " of shape ",
                t->sizes());
  TORCH_CHECK(tensor_table.size(1) == 8 && block_table.size(1) == 2,
              "adamw_tau: the tensor table has 8 columns and the block table 2, got ", tensor_table.size(1), " and ",
              block_table.size(1));
  TORCH_CHECK(tensor_table.device() == block_table.device(), "adamw_tau: both tables must be on one device");
  TORCH_CHECK(chunk > 0, "adamw_tau: chunk must be positive");
  LaunchArgs a;
  a.tensors = reinterpret_cast<const TensorArgs*>(tensor_table.data_ptr<int64_t>());
  a.blocks = block_table.data_ptr<int64_t>();
  a.n_tensors = tensor_table.size(0);
  a.n_blocks = block_table.size(0);
  a.chunk = chunk;
  a.param_kind = kind_of(param_dtype, "param_dtype");
  a.grad_kind = kind_of(grad_dtype, "grad_dtype");
  a.state_kind = kind_of(state_dtype, "state_dtype");
  a.amsgrad = amsgrad;
  a.maximize = maximize;
  a.master = master;
  a.stochastic_rounding = stochastic_rounding && !master && a.param_kind != Kind::F32;
  a.seed = uint64_t(seed);
  return a;
}

inline Scalars read_scalars(const float* s) {
  Scalars out{s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7], as_bits(s[8])};
  return out;
}

// How the new fp32 weight reaches the param: as it is, rounded to nearest, or stochastically.
enum class Write { Plain, Master, Stochastic };

// Calls f.template operator()<AMSGRAD, W>() for the bucket's flags.
template <typename F>
void dispatch_flags(const LaunchArgs& b, F&& f) {
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
void dispatch_kinds(const LaunchArgs& b, F&& f) {
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
