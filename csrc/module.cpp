// fastspike._C: the Python module (build facts for fastspike/native.py and the tests) and the contract
// checks every op family's registration shares. The op families register their kernels in
// <family>_ops.cpp.
#include "op_utils.h"
#include "surrogate.h"

#include <Python.h>

#ifndef FASTSPIKE_SOURCE_HASH
#define FASTSPIKE_SOURCE_HASH unknown
#endif
#ifndef FASTSPIKE_CUDA_ARCHS
#define FASTSPIKE_CUDA_ARCHS
#endif
#define FS_STRINGIFY_(x) #x
#define FS_STRINGIFY(x) FS_STRINGIFY_(x)

namespace fastspike {

int surrogate_id(const std::string& name) {
  for (int i = 0; i < kNumSurrogates; ++i) {
    if (name == kSurrogateNames[i]) return i;
  }
  TORCH_CHECK(false, "fastspike: unknown surrogate '", name, "'");
}

int dtype_case(at::ScalarType x, at::ScalarType state) {
  using at::ScalarType;
  if (x == ScalarType::Double && state == ScalarType::Double) return kDouble;
  TORCH_CHECK(state == ScalarType::Float, "fastspike: a ", x, " input needs float32 state, got ", state);
  switch (x) {
    case ScalarType::Float: return kFloat;
    case ScalarType::Half: return kHalf;
    case ScalarType::BFloat16: return kBFloat16;
    case ScalarType::Double: TORCH_CHECK(false, "fastspike: a float64 input needs float64 state, got ", state);
    default: TORCH_CHECK(false, "fastspike: unsupported input dtype ", x);
  }
}

bool same_order(const at::Tensor& a, const at::Tensor& b) {
  if (a.sizes() != b.sizes() || !a.is_non_overlapping_and_dense() || !b.is_non_overlapping_and_dense()) {
    return false;
  }
  for (int64_t d = 0; d < a.dim(); ++d) {
    if (a.size(d) != 1 && a.stride(d) != b.stride(d)) return false;
  }
  return true;
}

void check_time_major(const at::Tensor& x, const char* name) {
  TORCH_CHECK(x.dim() >= 2 && x.size(0) > 0, "fastspike: ", name, " must be [T, N, *] with T > 0");
  TORCH_CHECK(x.numel() == 0 ||
              (x.is_non_overlapping_and_dense() && (x.size(0) == 1 || x.stride(0) == x.numel() / x.size(0))),
              "fastspike: ", name, " must be dense with the time dimension outermost (the Python "
              "wrapper makes it so; call the op through fastspike.functional)");
}

void check_like(const std::optional<at::Tensor>& t, const at::Tensor& like, at::ScalarType dtype, const char* name) {
  if (!t.has_value()) return;
  TORCH_CHECK(t->device() == like.device(), "fastspike: ", name, " is on ", t->device(), ", expected ",
              like.device());
  TORCH_CHECK(t->scalar_type() == dtype, "fastspike: ", name, " has dtype ", t->scalar_type(),
              ", expected ", dtype);
  TORCH_CHECK(same_order(*t, like), "fastspike: ", name, " must have shape ", like.sizes(),
              " and the same memory order as the step it belongs to");
}

}  // namespace fastspike

extern "C" PyObject* PyInit__C(void) {
  static PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C", "fastspike's compiled neuron ops", -1, nullptr};
  PyObject* m = PyModule_Create(&module);
  if (m == nullptr) return nullptr;
#ifdef FASTSPIKE_WITH_CUDA
  const long with_cuda = 1;
#else
  const long with_cuda = 0;
#endif
  std::string surrogates;
  for (int i = 0; i < fastspike::kNumSurrogates; ++i) {
    surrogates += (i ? "," : "") + std::string(fastspike::kSurrogateNames[i]);
  }
  // CUDA_ARCHS: the GPU architectures compiled for, e.g. "80_90ptx" for TORCH_CUDA_ARCH_LIST="8.0;9.0+PTX".
  // SURROGATES: the kernels' surrogate names in id order, for the tests to check against Python's table.
  if (PyModule_AddStringConstant(m, "SOURCE_HASH", FS_STRINGIFY(FASTSPIKE_SOURCE_HASH)) < 0 ||
      PyModule_AddStringConstant(m, "CUDA_ARCHS", FS_STRINGIFY(FASTSPIKE_CUDA_ARCHS)) < 0 ||
      PyModule_AddStringConstant(m, "SURROGATES", surrogates.c_str()) < 0 ||
      PyModule_AddIntConstant(m, "WITH_CUDA", with_cuda) < 0) {
    Py_DECREF(m);
    return nullptr;
  }
  return m;
}
