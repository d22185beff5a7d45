// gpt_kernels._C: the compiled half of the gpt_kernels package.
//
// Importing it runs the static registrations below (op schemas) and in the other files of
// csrc/ (CPU kernels) and csrc/cuda/ (CUDA kernels), which makes torch.ops.gpt_kernels.* exist.
// It is a plain Python module with no functions: everything is reached through torch.ops,
// so no pybind11 is needed and the file compiles fast.
#include <Python.h>
#include <torch/library.h>

extern "C" {
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
}

// Every op of the library is declared here, once, with its schema; each backend registers its
// kernel in its own file (TORCH_LIBRARY_IMPL(gpt_kernels, CPU|CUDA, m)), and the Python files
// of gpt_kernels/ register autograd and fake (meta) implementations.
TORCH_LIBRARY(gpt_kernels, m) {
  // cross-entropy (issue 3) and causal attention (issue 4) schemas go here.
}
