// adamw_tau::chunk_sums: the gradient norm's chunk sums on the CPU (adamw_tau/core/grad_norm.py,
// docs/numerics.md "Gradient clipping"), the bits of the torch ops there in one pass:
//   each gradient flattened and cut into chunks of kChunk elements (the last padded with zeros);
//   each element widened to float64 (exact), with a GradScaler first unscaled as
//   fp32(g / scale) (a float64 division rounded to fp32, as `(g64 / scale64).to(float32)`);
//   squared in float64 (exact: an fp32 square has at most 48 significant bits);
//   each chunk summed by the fixed tree: the first half added to the second half, 11 levels.
// Every op is one IEEE float64 op in the order the torch ops take, so the sums are theirs
// bit for bit (tests/optim/test_clipping.py compares them). launch/clipping.py calls it for
// CPU gradients in eager; the torch ops stay for other devices and under torch.compile.
// [note: why a kernel] The torch ops copy every gradient into a float64 buffer (8 bytes an
// element), then pass over it a dozen times: GPT-2-124M's clipped step took 874 ms on the 2-core
// CPU machine against 177 for torch's clip_grad_norm_ + fused step (README's bench, 2026-12-03).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <optional>
#include <vector>

namespace adamw_tau {
namespace {

constexpr int64_t kChunk = 2048;  // core/grad_norm.py: CHUNK (tests tie them)

template <class T>
double chunk_sum(const T* g, int64_t n, bool unscale, double scale, double* buf) {
  for (int64_t i = 0; i < n; ++i) {
    double x = static_cast<double>(static_cast<float>(g[i]));
    if (unscale) x = static_cast<double>(static_cast<float>(x / scale));
    buf[i] = x * x;
  }
  for (int64_t i = n; i < kChunk; ++i) buf[i] = 0.0;
  for (int64_t h = kChunk / 2; h >= 1; h /= 2)
    for (int64_t i = 0; i < h; ++i) buf[i] = buf[i] + buf[i + h];
  return buf[0];
}

at::Tensor chunk_sums(const std::vector<at::Tensor>& grads, const std::optional<at::Tensor>& grad_scale) {
  std::vector<at::Tensor> flat;
  std::vector<int64_t> first{0};  // each gradient's first chunk in the output
  for (size_t j = 0; j < grads.size(); ++j) {
    const auto& g = grads[j];
    TORCH_CHECK(g.is_cpu(), "adamw_tau::chunk_sums: gradient ", j, " is on ", g.device(), ", not the CPU");
    TORCH_CHECK(g.scalar_type() == at::kFloat || g.scalar_type() == at::kBFloat16 || g.scalar_type() == at::kHalf,
                "adamw_tau::chunk_sums: gradient ", j, " is ", g.scalar_type(), "; fp32, bf16 or fp16 only");
    flat.push_back(g.reshape(-1).contiguous());
    first.push_back(first.back() + (g.numel() + kChunk - 1) / kChunk);
  }
  bool unscale = false;
  double scale = 1.0;
  if (grad_scale.has_value() && grad_scale->defined()) {
    TORCH_CHECK(grad_scale->numel() == 1, "adamw_tau::chunk_sums: grad_scale must hold one value");
    unscale = true;
    scale = grad_scale->to(at::kCPU, at::kDouble).item<double>();
  }
  at::Tensor out = at::empty({first.back()}, at::TensorOptions().dtype(at::kDouble));
  double* o = out.data_ptr<double>();
  at::parallel_for(0, first.back(), 16, [&](int64_t begin, int64_t end) {
    std::vector<double> buf(kChunk);
    size_t j = size_t(std::upper_bound(first.begin(), first.end(), begin) - first.begin()) - 1;
    for (int64_t c = begin; c < end; ++c) {
      while (c >= first[j + 1]) ++j;
      const auto& g = flat[j];
      const int64_t at = (c - first[j]) * kChunk;
      const int64_t n = std::min(kChunk, g.numel() - at);
      AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, g.scalar_type(), "chunk_sums", [&] {
        o[c] = chunk_sum(g.const_data_ptr<scalar_t>() + at, n, unscale, scale, buf.data());
      });
    }
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(adamw_tau, m) { m.def("chunk_sums(Tensor[] grads, Tensor? grad_scale) -> Tensor"); }

TORCH_LIBRARY_IMPL(adamw_tau, CPU, m) { m.impl("chunk_sums", &chunk_sums); }

}  // namespace adamw_tau
