"""Launching the fused step: opt.state's tracked dicts (state), launch tables (tables), buckets
of tensors that share a launch (buckets), a DTensor parameter's 8-bit scales (sharded_scales),
each step's scalars (step_scalars), which backend runs (backends), the registered torch ops
(ops) and the C++/CUDA build (extension). Imports formats and core, and the kernels, which live
in csrc/ and triton_kernels/.
"""
