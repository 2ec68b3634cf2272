// The CUDA names adamw_kernel_body.h uses, for its host build (kernel_body_host.cpp) and for
// nothing else: [note: host-compilable] in that header says why this is enough.
#pragma once

#if defined(__CUDACC__)
#error "host_emulation.h is for the g++ build of the kernel body only"
#endif

#include <cstdint>
#include <cstdio>
#include <cstdlib>

#define ADAMW_HOST_EMULATION 1
#define __global__
#define __launch_bounds__(...)

// The launch's coordinates: the driver sets them before each call of the kernel.
struct HostDim3 { unsigned x = 0, y = 0, z = 0; };
inline thread_local HostDim3 blockIdx, threadIdx;

// The device build assumes every table address it reads is global memory; the host build
// checks the part of that it can see: the address is a real one, not a 0 column.
inline bool __isGlobal(const void* ptr) { return ptr != nullptr; }
#define __builtin_assume(cond) \
  ((cond) ? (void)0 : (std::fprintf(stderr, "kernel body: assumption failed: %s\n", #cond), std::abort()))

// The device build moves a lane's run in whole accesses (adamw_quant_kernel.h: [note: lane
// accesses]), which fault on the GPU unless aligned to their width; the host build checks that
// alignment for each one it stands in for, and counts the bytes so moved, for the tests to read
// (kernel_body_host.cpp: adamw_tau_host_body_lane_bytes).
inline thread_local int64_t host_lane_bytes = 0;
inline void host_lane_access(const void* ptr, int access_bytes, int bytes) {
  if (reinterpret_cast<uintptr_t>(ptr) % uintptr_t(access_bytes) != 0) {
    std::fprintf(stderr, "kernel body: a %d-byte lane access at %p is not aligned to its width\n", access_bytes, ptr);
    std::abort();
  }
  host_lane_bytes += bytes;
}
