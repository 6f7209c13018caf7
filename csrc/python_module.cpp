// The Python module that carries the extension's shared library (`import easyhard._C` loads it
// and, with it, the operator registrations). Ops are reached through torch.ops.easyhard, never
// through this module; it only exposes how the library was built (setup.py passes these as
// macros), for `easyhard info` and for the mismatch check in easyhard/_extension.py.
#include <Python.h>

#ifndef EASYHARD_TORCH_VERSION
#define EASYHARD_TORCH_VERSION "unknown"
#endif
#ifndef EASYHARD_CUDA_VERSION
#define EASYHARD_CUDA_VERSION ""
#endif
#ifndef EASYHARD_CUDA_ARCHS
#define EASYHARD_CUDA_ARCHS ""
#endif

extern "C" PyMODINIT_FUNC PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  PyObject* m = PyModule_Create(&module_def);
  if (m == nullptr) return nullptr;
  PyModule_AddStringConstant(m, "torch_version", EASYHARD_TORCH_VERSION);
#ifdef WITH_CUDA
  PyModule_AddIntConstant(m, "with_cuda", 1);
#else
  PyModule_AddIntConstant(m, "with_cuda", 0);
#endif
  PyModule_AddStringConstant(m, "cuda_version", EASYHARD_CUDA_VERSION);
  PyModule_AddStringConstant(m, "cuda_archs", EASYHARD_CUDA_ARCHS);
  return m;
}
