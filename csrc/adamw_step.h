// The op's argument checks, shared by the CPU and CUDA implementations; what they check is
// read through adamw_args.h (ATen-free: the host build of the CUDA kernel body uses it too).
#pragma once

#include <ATen/ATen.h>
#include <torch/library.h>

#include "adamw_args.h"
#include "state_formats.h"

namespace adamw_tau {

inline Kind kind_of(at::ScalarType t, const char* what) {
  switch (t) {
    case at::kFloat: return Kind::F32;
    case at::kBFloat16: return Kind::BF16;
    case at::kHalf: return Kind::F16;
    default:
      TORCH_CHECK(false, "adamw_tau: ", what, " must be float32, bfloat16 or float16, got ", t);
  }
}

// A state format id (adamw_tau/formats/registry.py) as its Kind.
inline Kind state_kind_of(int64_t state_format) {
  TORCH_CHECK(state_format >= 0 && state_format < kNumKinds, "adamw_tau: state_format must be a state format id "
              "of adamw_tau/formats/registry.py (0 fp32, 1 bf16, 2 fp16, 3 and up quantized, fewer than ", kNumKinds,
              "), got ", state_format);
  return Kind(state_format);
}

// Checks the tables' dtype, shape and device (an int64 table read as bytes, or a column too
// few, fails here on every device), the dtype pairing, and reads the flags.
inline LaunchArgs launch_args(const at::Tensor& tensor_table, const at::Tensor& block_table, int64_t chunk,
                              at::ScalarType param_dtype, at::ScalarType grad_dtype, int64_t state_format,
                              int64_t seed, bool amsgrad, bool maximize, int64_t master, bool stochastic_rounding) {
  for (const auto* t : {&tensor_table, &block_table})
    TORCH_CHECK(t->scalar_type() == at::kLong && t->dim() == 2 && t->is_contiguous(),
                "adamw_tau: launch tables must be contiguous 2-d int64 tensors, got ", t->scalar_type(), " of shape ",
                t->sizes());
  TORCH_CHECK(tensor_table.size(1) == kTableColumns && block_table.size(1) == 2, "adamw_tau: the tensor table has ",
              kTableColumns, " columns and the block table 2, got ", tensor_table.size(1), " and ", block_table.size(1));
  TORCH_CHECK(tensor_table.device() == block_table.device(), "adamw_tau: both tables must be on one device");
  TORCH_CHECK(chunk > 0, "adamw_tau: chunk must be positive");
  const Kind p = kind_of(param_dtype, "param_dtype"), g = kind_of(grad_dtype, "grad_dtype");
  TORCH_CHECK(grad_kind_ok(p, g), "adamw_tau: grads must be float32 or the params' dtype");
  TORCH_CHECK(master_form_ok(p, master), "adamw_tau: master must be 0 (none), 1 (fp32) or 2 (int16 remainder, for "
              "bfloat16 params only), got ", master, " for ", param_dtype, " params");
  const Kind s = state_kind_of(state_format);
  TORCH_CHECK(!is_quantized(s) || chunk % kQuantChunkMultiple == 0, "adamw_tau: quantized states need a chunk that "
              "is a multiple of ", kQuantChunkMultiple, " elements, got ", chunk);
  return make_launch_args(tensor_table.data_ptr<int64_t>(), tensor_table.size(0), block_table.data_ptr<int64_t>(),
                          block_table.size(0), chunk, p, g, s, uint64_t(seed),
                          amsgrad, maximize, master, stochastic_rounding);
}

}  // namespace adamw_tau
