// A minimal Python module so that `import smdim_kernels._C` loads this library; the ops
// themselves are registered with the PyTorch dispatcher by static initialisers.
#include <Python.h>

static struct PyModuleDef smdim_native_module = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};

PyMODINIT_FUNC PyInit__C(void) { return PyModule_Create(&smdim_native_module); }
