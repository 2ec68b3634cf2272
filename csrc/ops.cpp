// adamw_tau::adamw_step_, declared once; implemented per device in adamw_cpu.cpp and adamw_cuda.cu.
#include <Python.h>
#include <torch/library.h>

// Importing the built library registers the ops; the module itself is empty.
extern "C" PyObject* PyInit__C(void) {
  static struct PyModuleDef def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&def);
}

TORCH_LIBRARY(adamw_tau, m) {
  m.def(
      "adamw_step_(Tensor(a!)[] params, Tensor[] grads, Tensor(b!)[] exp_avgs, Tensor(c!)[] exp_avg_sqs, "
      "Tensor(d!)[] max_exp_avg_sqs, Tensor(e!)[] masters, Tensor scalars, int[] param_ids, int seed, "
      "bool amsgrad, bool maximize, bool stochastic_rounding, Tensor? grad_scale, Tensor? found_inf) -> ()");
}
