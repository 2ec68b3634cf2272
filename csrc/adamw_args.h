// What one launch reads, without ATen: the tensor table's row (TensorArgs), the launch's
// flags (LaunchArgs) and their dispatch to template arguments. The CUDA launcher and the CPU
// op reach it through adamw_step.h, which adds the ATen checks; the host build of the CUDA
// kernel body (kernel_body_host.cpp) includes it as it is.
#pragma once

#include <cstddef>
#include <cstdint>
#include <type_traits>
#include <utility>

#include "adamw_math.h"

namespace adamw_tau {

// One row of the tensor table that adamw_tau/launch/tables.py builds (int64 [n, 11]): the addresses
// of p, g, m, v, vmax and the master (0 where absent: an fp32 master, or with a remainder
// master an int16 remainder), numel, param_id, and the fp32 scales of 8-bit m, v, vmax (0 for
// other states). The kernels read the table as an array of these.
struct TensorArgs {
  void* p;
  const void* g;
  void* m;
  void* v;
  void* vmax;
  void* master;
  int64_t numel;
  int64_t param_id;
  float* m_scale;
  float* v_scale;
  float* vmax_scale;
};
constexpr int64_t kTableColumns = 11;
static_assert(sizeof(TensorArgs) == kTableColumns * sizeof(int64_t), "TensorArgs must be one int64 table row");
static_assert(offsetof(TensorArgs, g) == 1 * 8 && offsetof(TensorArgs, master) == 5 * 8 &&
                  offsetof(TensorArgs, numel) == 6 * 8 && offsetof(TensorArgs, param_id) == 7 * 8 &&
                  offsetof(TensorArgs, m_scale) == 8 * 8 && offsetof(TensorArgs, vmax_scale) == 10 * 8,
              "TensorArgs fields must sit in tables.COLUMNS order");

// How the new fp32 weight reaches the param: as it is (rounded to nearest even), through an
// fp32 master, stochastically, or through a bf16 param + int16 remainder.
enum class Write { Plain, Master, Stochastic, Remainder };

// Element i's weight before the step, and where the new one goes, for each Write: through the
// fp32 master, the bf16 param + int16 remainder, stochastic rounding, or to nearest even. The
// element-wise kernels (the CPU op, both 8-bit kernels) share these; the CUDA body's 16-byte
// path does the same on its registers.
template <Kind P, Write W>
ADAMW_HD float read_weight(const typename Storage<P>::type* p, const float* master, const int16_t* rem, int64_t i) {
  if constexpr (W == Write::Master) return master[i];
  else if constexpr (W == Write::Remainder) return merge_remainder(p[i], rem[i]);
  else return widen<P>(p[i]);
}

// ``element``: the element's index in its tensor, which keys its stochastic rounding bits, when
// p, master and rem are a lane's registers indexed by ``i`` (adamw_quant_kernel.h).
template <Kind P, Write W>
ADAMW_HD void write_weight(float w, typename Storage<P>::type* p, float* master, int16_t* rem, int64_t i,
                           uint32_t key, int64_t element) {
  if constexpr (W == Write::Master) {
    master[i] = w;
    p[i] = narrow<P>(w);
  } else if constexpr (W == Write::Remainder) {
    split_remainder(w, p[i], rem[i]);
  } else if constexpr (W == Write::Stochastic && P != Kind::F32) {
    p[i] = stochastic_round<P>(w, sr_bits(key, element));
  } else {
    p[i] = narrow<P>(w);
  }
}

template <Kind P, Write W>
ADAMW_HD void write_weight(float w, typename Storage<P>::type* p, float* master, int16_t* rem, int64_t i,
                           uint32_t key) {
  write_weight<P, W>(w, p, master, rem, i, key, i);
}

// The op's `int master`: which master the tensor table's master column points at.
enum MasterForm : int64_t { kNoMaster = 0, kFp32Master = 1, kRemainderMaster = 2 };

// One launch: the tables, the dtype path and the flags.
struct LaunchArgs {
  const TensorArgs* tensors;
  const int64_t* blocks;  // (row, first element) pairs
  int64_t n_tensors, n_blocks, chunk;
  Kind param_kind, grad_kind, state_kind;
  bool amsgrad, maximize;
  Write write;
  uint64_t seed;
};

// The launch's fields from tables already checked (adamw_step.h: launch_args; master_form_ok).
// Stochastic rounding applies only where a 16-bit param is written without a master.
inline LaunchArgs make_launch_args(const int64_t* tensor_table, int64_t n_tensors, const int64_t* block_table,
                                   int64_t n_blocks, int64_t chunk, Kind param_kind, Kind grad_kind, Kind state_kind,
                                   uint64_t seed, bool amsgrad, bool maximize, int64_t master, bool stochastic_rounding) {
  LaunchArgs a;
  a.tensors = reinterpret_cast<const TensorArgs*>(tensor_table);
  a.blocks = block_table;
  a.n_tensors = n_tensors;
  a.n_blocks = n_blocks;
  a.chunk = chunk;
  a.param_kind = param_kind;
  a.grad_kind = grad_kind;
  a.state_kind = state_kind;
  a.amsgrad = amsgrad;
  a.maximize = maximize;
  a.write = master == kRemainderMaster ? Write::Remainder
            : master == kFp32Master   ? Write::Master
            : (stochastic_rounding && param_kind != Kind::F32) ? Write::Stochastic
                                                               : Write::Plain;
  a.seed = seed;
  return a;
}

// A remainder master belongs to a bf16 param; the other forms to any param.
inline bool master_form_ok(Kind param_kind, int64_t master) {
  return master == kNoMaster || master == kFp32Master || (master == kRemainderMaster && param_kind == Kind::BF16);
}

// The blockwise quantized state kinds (their chunks are multiples of 256 elements).
constexpr bool is_quantized(Kind k) { return int(k) >= int(Kind::Q8); }

// Grads share the param's kind or are fp32: the one pairing dispatch_kinds cannot take.
inline bool grad_kind_ok(Kind param_kind, Kind grad_kind) {
  return grad_kind == Kind::F32 || grad_kind == param_kind;
}

ADAMW_HD Scalars read_scalars(const float* s) {
  Scalars out{s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7], as_bits(s[8])};
  return out;
}

// Calls f.template operator()<AMSGRAD, W>() for the bucket's flags. Write::Remainder is
// instantiated for bf16 params only (master_form_ok has refused it for others).
template <Kind P, typename F>
void dispatch_flags(const LaunchArgs& b, F&& f) {
  auto with_write = [&]<bool A>() {
    if (b.write == Write::Master) f.template operator()<A, Write::Master>();
    else if (b.write == Write::Stochastic) f.template operator()<A, Write::Stochastic>();
    else if constexpr (P == Kind::BF16) {
      if (b.write == Write::Remainder) f.template operator()<A, Write::Remainder>();
      else f.template operator()<A, Write::Plain>();
    } else {
      f.template operator()<A, Write::Plain>();
    }
  };
  if (b.amsgrad) with_write.template operator()<true>();
  else with_write.template operator()<false>();
}

// Calls f.template operator()<P, G, S>() for the bucket's kinds (grads share the param's kind
// or are fp32, which the caller has checked: grad_kind_ok; states are fp32, bf16, or fp16 as
// torch keeps them for fp16 params).
template <typename F>
void dispatch_kinds(const LaunchArgs& b, F&& f) {
  auto with_state = [&](auto pk, auto gk) {  // every state kind (adamw_math.h: kNumKinds), the one that matches
    [&]<int... K>(std::integer_sequence<int, K...>) {
      (void)((int(b.state_kind) == K && (f.template operator()<decltype(pk)::value, decltype(gk)::value, Kind(K)>(),
                                          true)) || ...);
    }(std::make_integer_sequence<int, kNumKinds>{});
  };
  auto with_grad = [&](auto pk) {
    if (b.grad_kind == Kind::F32) with_state(pk, std::integral_constant<Kind, Kind::F32>{});
    else with_state(pk, pk);
  };
  switch (b.param_kind) {
    case Kind::F32: with_grad(std::integral_constant<Kind, Kind::F32>{}); break;
    case Kind::BF16: with_grad(std::integral_constant<Kind, Kind::BF16>{}); break;
    case Kind::F16: with_grad(std::integral_constant<Kind, Kind::F16>{}); break;
    default: break;  // a quantized kind is not a param kind: kind_of refuses it
  }
}

}  // namespace adamw_tau
