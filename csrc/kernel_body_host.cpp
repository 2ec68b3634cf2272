// The CUDA kernel (adamw_kernel_body.h) run on the host, for the CPU tests: every (block,
// thread) of the grid launch_cuda launches -- one block per block-table row, kThreads threads
// each -- one after another, over the tables adamw_tau/launch/tables.py builds on CPU tensors.
// Built with g++ alone (no ATen, no nvcc) and called through ctypes by
// adamw_tau/testing/host_body.py; not part of the extension.
#include "host_emulation.h"  // first: the CUDA names the body uses
#include "adamw_kernel_body.h"
#include "adamw_quant_kernel.h"

using namespace adamw_tau;

// The threads a block has on the GPU, so the caller can check the grid it ran.
extern "C" int adamw_tau_host_body_threads() { return kThreads; }

// The bytes the quantized kernel's lanes have moved in whole accesses since the library was
// loaded (host_emulation.h: host_lane_access): the tests' view of which lanes went whole.
extern "C" int64_t adamw_tau_host_body_lane_bytes() { return host_lane_bytes; }

// Runs the kernel over the grid, with the arguments launch_cuda would pass it: scalars by
// value (read here, as launch_cuda reads a CPU scalars tensor) or by address (a device
// scalars tensor); grad_scale, found_inf and grad_coef null where absent. Returns the number of kernel
// calls made, or -1 if the kinds or the master form cannot go together (launch_args's checks).
extern "C" int64_t adamw_tau_host_body_launch(const int64_t* tensor_table, int64_t n_tensors,
                                              const int64_t* block_table, int64_t n_blocks, int64_t chunk,
                                              const float* scalars, int scalars_by_value, int param_kind,
                                              int grad_kind, int state_kind, uint64_t seed, int amsgrad, int maximize,
                                              int64_t master, int stochastic_rounding, const float* grad_scale,
                                              const float* found_inf, const float* grad_coef) {
  const Kind p = Kind(param_kind), g = Kind(grad_kind);
  if (!grad_kind_ok(p, g) || !master_form_ok(p, master) || chunk <= 0 ||
      state_kind < 0 || state_kind >= kNumKinds ||
      (is_quantized(Kind(state_kind)) && chunk % kQuantChunkMultiple != 0))
    return -1;
  const LaunchArgs b = make_launch_args(tensor_table, n_tensors, block_table, n_blocks, chunk, p, g, Kind(state_kind),
                                        seed, amsgrad, maximize, master, stochastic_rounding);
  const Scalars host_s = scalars_by_value ? read_scalars(scalars) : Scalars{};
  const float* device_s = scalars_by_value ? nullptr : scalars;
  int64_t calls = 0;
  dispatch_kinds(b, [&]<Kind P, Kind G, Kind S>() {
    dispatch_flags<P>(b, [&]<bool A, Write W>() {
      for (int64_t block = 0; block < b.n_blocks; ++block) {
        blockIdx.x = unsigned(block);
        if constexpr (is_quantized(S)) {
          // one call per warp: the call runs the warp's 32 lanes phase by phase (adamw_quant_kernel.h);
          // counted as 32 threads, so the caller's grid check holds
          for (int thread = 0; thread < kQ8Threads; thread += kLanesPerCall) {
            threadIdx.x = unsigned(thread);
            adamw_quant_kernel<typename CodecOf<S>::type, P, G, A, W>(b.tensors, b.blocks, b.chunk, device_s, host_s,
                                                                      grad_scale, found_inf, b.seed, b.maximize,
                                                                      grad_coef);
            calls += kLanesPerCall;
          }
        } else {
          for (int thread = 0; thread < kThreads; ++thread) {
            threadIdx.x = unsigned(thread);
            adamw_kernel<P, G, S, A, W>(b.tensors, b.blocks, b.chunk, device_s, host_s, grad_scale, found_inf,
                                        b.seed, b.maximize, grad_coef);
            ++calls;
          }
        }
      }
    });
  });
  return calls;
}
