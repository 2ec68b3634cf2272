"""Launching the fused step: launch tables (tables), buckets of tensors that share a launch
(buckets), each step's scalars (step_scalars), which backend runs (backends), the registered
torch ops (ops) and the C++/CUDA build (extension). Imports core only; kernels live in
csrc/ and triton_kernels/.
"""
