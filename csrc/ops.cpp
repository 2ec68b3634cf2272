// adamw_tau::launch_, declared once; implemented per device in adamw_cpu.cpp and adamw_cuda.cu.
//
// It steps the tensors that the launch tables (adamw_tau/launch/tables.py) point at: a raw launch,
// called by the adamw_tau::adamw_step_ custom op (adamw_tau/launch/ops.py, what torch.compile sees)
// and, in eager, by the optimizer straight from its cached tables.
#include <Python.h>
#include <torch/library.h>

// Importing the built library registers the ops; the module itself is empty.
extern "C" PyObject* PyInit__C(void) {
  static struct PyModuleDef def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&def);
}

// `state_format` is the moments' format (adamw_tau/formats/registry.py ids, csrc/adamw_math.h
// Kind: 0 fp32, 1 bf16, 2 fp16, 3 and up quantized codes); `master` says what the tensor
// table's master column points at: 0 nothing, 1 an fp32 master, 2 the int16 remainder of a
// bfloat16 param (csrc/adamw_args.h, MasterForm). `grad_coef`: the gradient clipping
// coefficient (adamw_tau/core/grad_norm.py), applied after unscaling.
TORCH_LIBRARY(adamw_tau, m) {
  m.def(
      "launch_(Tensor tensor_table, Tensor block_table, int chunk, Tensor scalars, ScalarType param_dtype, "
      "ScalarType grad_dtype, int state_format, int seed, bool amsgrad, bool maximize, int master, "
      "bool stochastic_rounding, Tensor? grad_scale, Tensor? found_inf, Tensor? grad_coef=None) -> ()");
}
