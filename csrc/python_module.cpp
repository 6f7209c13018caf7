// The Python module that carries the extension's shared library (`import easyhard._C` loads it
// and, with it, the operator registrations). Ops are reached through torch.ops.easyhard, never
// through this module; it only exposes how the library was built (setup.py passes these as
// macros), for `easyhard info` and for the mismatch check in easyhard/_extension.py, and which
// instruction-set path the CPU kernels dispatch to (cpu_capability(), cpu_capabilities()).
#include <Python.h>

#include <exception>

#include "cpu/cpu_capability.h"

#ifndef EASYHARD_TORCH_VERSION
#define EASYHARD_TORCH_VERSION "unknown"
#endif
#ifndef EASYHARD_CUDA_VERSION
#define EASYHARD_CUDA_VERSION ""
#endif
#ifndef EASYHARD_CUDA_ARCHS
#define EASYHARD_CUDA_ARCHS ""
#endif

namespace {

// The path the CPU kernels use now (EASYHARD_CPU_CAPABILITY or the best): "avx512", "avx2" or
// "baseline"; ValueError for a bad EASYHARD_CPU_CAPABILITY.
PyObject* cpu_capability(PyObject*, PyObject*) {
  try {
    return PyUnicode_FromString(easyhard::cpu::path_name(easyhard::cpu::selected_path()));
  } catch (const std::exception& e) {
    PyErr_SetString(PyExc_ValueError, e.what());
    return nullptr;
  }
}

// Every path this CPU can run, baseline first.
PyObject* cpu_capabilities(PyObject*, PyObject*) {
  const auto& paths = easyhard::cpu::runnable_paths();
  PyObject* list = PyList_New(static_cast<Py_ssize_t>(paths.size()));
  if (list == nullptr) return nullptr;
  for (size_t i = 0; i < paths.size(); ++i) {
    PyList_SET_ITEM(list, static_cast<Py_ssize_t>(i),
                    PyUnicode_FromString(easyhard::cpu::path_name(paths[i])));
  }
  return list;
}

PyMethodDef methods[] = {
    {"cpu_capability", cpu_capability, METH_NOARGS, "The CPU kernels' instruction-set path now."},
    {"cpu_capabilities", cpu_capabilities, METH_NOARGS, "The paths this CPU can run."},
    {nullptr, nullptr, 0, nullptr}};

}  // namespace

extern "C" PyMODINIT_FUNC PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, methods};
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
