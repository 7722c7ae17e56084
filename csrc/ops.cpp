// fastspike._C: the op schemas (TORCH_LIBRARY), their CPU and CUDA implementations, and the Python module.
//
// The ops are the native backend of fastspike/_ops.py, which documents the contract: x_seq [T, N, *] is
// dense with T outermost, so every tensor here is a flat [T, N] array in one memory order shared by all
// per-step tensors; the Python side brings inputs into that order and registers the fake (meta)
// implementations and the autograd formula. This file checks the contract, allocates and launches.
#include "neuron.h"

#include <Python.h>
#include <ATen/ATen.h>
#include <torch/library.h>

#ifdef FASTSPIKE_WITH_CUDA
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

#include <string>

#ifndef FASTSPIKE_SOURCE_HASH
#define FASTSPIKE_SOURCE_HASH unknown
#endif
#define FS_STRINGIFY_(x) #x
#define FS_STRINGIFY(x) FS_STRINGIFY_(x)

namespace fastspike {
namespace {

int surrogate_kind(const std::string& name) {
  static const char* names[kNumSurrogates] = {"sigmoid", "atan", "piecewise_quadratic", "piecewise_exp",
                                             "soft_sign", "super_spike", "erf", "fast_sigmoid"};
  for (int i = 0; i < kNumSurrogates; ++i) {
    if (name == names[i]) return i;
  }
  TORCH_CHECK(false, "fastspike: unknown surrogate '", name, "'");
}

int charge_mode(const std::string& kind, bool decay_input, std::optional<double> v_reset) {
  const bool zero = !v_reset.has_value() || *v_reset == 0.0;
  if (kind == "if") return kIF;
  const int base = kind == "lif" ? kLifDecayZero : kPlifDecayZero;
  TORCH_CHECK(kind == "lif" || kind == "plif", "fastspike: unknown neuron kind '", kind, "'");
  return base + (decay_input ? 0 : 2) + (zero ? 0 : 1);
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

// True when a and b store their elements in the same order (strides agree wherever a size is not 1).
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
              (x.is_non_overlapping_and_dense() && (x.size(0) == 1 || x.stride(0) == x[0].numel())),
              "fastspike: ", name, " must be dense with the time dimension outermost (the Python "
              "wrapper makes it so; call the op through fastspike.functional)");
}

void check_like(const std::optional<at::Tensor>& t, const at::Tensor& like, at::ScalarType dtype,
                const char* name) {
  if (!t.has_value()) return;
  TORCH_CHECK(t->device() == like.device(), "fastspike: ", name, " is on ", t->device(), ", expected ",
              like.device());
  TORCH_CHECK(t->scalar_type() == dtype, "fastspike: ", name, " has dtype ", t->scalar_type(),
              ", expected ", dtype);
  TORCH_CHECK(same_order(*t, like), "fastspike: ", name, " must have shape ", like.sizes(),
              " and the same memory order as the step it belongs to");
}

// PLIF's k = sigmoid(w) and 1 - k, both computed in k's dtype as the reference does, then in the state dtype.
std::pair<at::Tensor, at::Tensor> plif_scalars(int mode, const std::optional<at::Tensor>& k,
                                               const at::Tensor& like, at::ScalarType state) {
  if (!is_plif(mode)) return {};
  TORCH_CHECK(k.has_value() && k->numel() == 1 && k->device() == like.device(),
              "fastspike: PLIF needs k = sigmoid(w), a one-element tensor on ", like.device());
  return {k->to(state).contiguous(), (1 - *k).to(state).contiguous()};
}

const void* ptr_or_null(const at::Tensor& t) { return t.defined() ? t.data_ptr() : nullptr; }

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> neuron_forward(
    const at::Tensor& x_seq, const std::optional<at::Tensor>& v_init, double v_init_value,
    const std::optional<at::Tensor>& k, c10::string_view kind, double v_threshold,
    std::optional<double> v_reset, double tau, bool decay_input, bool detach_reset,
    c10::string_view surrogate, double alpha, bool store_v_seq, bool save_h) {
  check_time_major(x_seq, "x_seq");
  const at::Tensor step = x_seq[0];
  const at::ScalarType state = v_init.has_value() ? v_init->scalar_type()
      : (x_seq.scalar_type() == at::kDouble ? at::kDouble : at::kFloat);
  const int dtype = dtype_case(x_seq.scalar_type(), state);
  check_like(v_init, step, state, "v_init");
  const int mode = charge_mode(std::string(kind), decay_input, v_reset);
  surrogate_kind(std::string(surrogate));
  auto [kf, km] = plif_scalars(mode, k, x_seq, state);

  const auto state_opts = x_seq.options().dtype(state);
  at::Tensor spike = at::empty_like(x_seq);
  at::Tensor v_last = at::empty_like(step, state_opts);
  at::Tensor v_seq = store_v_seq ? at::empty_like(x_seq, state_opts) : at::empty({0}, state_opts);
  at::Tensor h_seq = save_h ? at::empty_like(x_seq, state_opts) : at::empty({0}, state_opts);

  ForwardArgs a{};
  a.x = x_seq.data_ptr(); a.spike = spike.data_ptr(); a.v_last = v_last.data_ptr();
  a.v_seq = store_v_seq ? v_seq.data_ptr() : nullptr;
  a.h_seq = save_h ? h_seq.data_ptr() : nullptr;
  a.v_init = v_init.has_value() ? v_init->data_ptr() : nullptr;
  a.v_init_value = v_init_value;
  a.k = ptr_or_null(kf); a.km = ptr_or_null(km);
  a.T = x_seq.size(0); a.N = step.numel();
  a.mode = mode; a.hard = v_reset.has_value();
  a.v_threshold = v_threshold; a.v_reset = v_reset.value_or(0.0); a.tau = tau;
  if (a.N > 0) {
    if (x_seq.is_cuda()) {
#ifdef FASTSPIKE_WITH_CUDA
      const c10::cuda::CUDAGuard guard(x_seq.device());
      forward_cuda(a, dtype, c10::cuda::getCurrentCUDAStream().stream());
#endif
    } else {
      forward_cpu(a, dtype);
    }
  }
  return {spike, v_last, v_seq, h_seq};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> neuron_backward(
    const at::Tensor& grad_spike_seq, const at::Tensor& grad_v_last,
    const std::optional<at::Tensor>& grad_v_seq, const at::Tensor& h_seq,
    const std::optional<at::Tensor>& v_init, double v_init_value, const std::optional<at::Tensor>& k,
    c10::string_view kind, double v_threshold, std::optional<double> v_reset, double tau,
    bool decay_input, bool detach_reset, c10::string_view surrogate, double alpha) {
  TORCH_CHECK(h_seq.dim() >= 2 && h_seq.sizes() == grad_spike_seq.sizes(),
              "fastspike: the backward needs the h sequence saved by a forward with save_h=True");
  check_time_major(h_seq, "h_seq");
  const at::ScalarType state = h_seq.scalar_type();
  const int dtype = dtype_case(grad_spike_seq.scalar_type(), state);
  const at::Tensor step = h_seq[0];
  check_like(grad_spike_seq, h_seq, grad_spike_seq.scalar_type(), "grad_spike_seq");
  check_like(grad_v_last, step, state, "grad_v_last");
  check_like(grad_v_seq, h_seq, state, "grad_v_seq");
  check_like(v_init, step, state, "v_init");
  const int mode = charge_mode(std::string(kind), decay_input, v_reset);
  auto [kf, km] = plif_scalars(mode, k, h_seq, state);

  at::Tensor grad_x = at::empty_like(h_seq, grad_spike_seq.options());
  at::Tensor grad_v_init = at::empty_like(step);
  BackwardArgs a{};
  a.grad_spike = grad_spike_seq.data_ptr(); a.grad_v_last = grad_v_last.data_ptr();
  a.grad_v_seq = grad_v_seq.has_value() ? grad_v_seq->data_ptr() : nullptr;
  a.h_seq = h_seq.data_ptr();
  a.v_init = v_init.has_value() ? v_init->data_ptr() : nullptr;
  a.v_init_value = v_init_value;
  a.k = ptr_or_null(kf); a.km = ptr_or_null(km);
  a.grad_x = grad_x.data_ptr(); a.grad_v_init = grad_v_init.data_ptr();
  a.T = h_seq.size(0); a.N = step.numel();
  a.mode = mode; a.hard = v_reset.has_value(); a.detach_reset = detach_reset;
  a.surrogate = surrogate_kind(std::string(surrogate));
  a.v_threshold = v_threshold; a.v_reset = v_reset.value_or(0.0); a.tau = tau; a.alpha = alpha;

  const bool cuda = h_seq.is_cuda();
  at::Tensor partials;
  if (is_plif(mode)) {
    int64_t blocks = cpu_num_chunks(a.N);
#ifdef FASTSPIKE_WITH_CUDA
    if (cuda) blocks = cuda_backward_blocks(a, dtype);
#endif
    partials = at::empty({blocks}, h_seq.options().dtype(at::kDouble));  // every slot is written
    a.grad_k_partial = partials.data_ptr<double>();
  }
  if (a.N > 0) {
    if (cuda) {
#ifdef FASTSPIKE_WITH_CUDA
      const c10::cuda::CUDAGuard guard(h_seq.device());
      backward_cuda(a, dtype, c10::cuda::getCurrentCUDAStream().stream());
#endif
    } else {
      backward_cpu(a, dtype);
    }
  }
  at::Tensor grad_k;
  if (!is_plif(mode)) {
    grad_k = at::empty({0}, h_seq.options());
  } else if (cuda) {
    grad_k = partials.sum().to(state);
  } else {
    // A serial sum in chunk order: at::sum would split by thread count on very large inputs, and grad_w
    // must not depend on torch.get_num_threads().
    double total = 0.0;
    const double* p = partials.data_ptr<double>();
    for (int64_t i = 0; i < partials.numel(); ++i) total += p[i];
    grad_k = at::scalar_tensor(total, h_seq.options().dtype(at::kDouble)).to(state);
  }
  return {grad_x, grad_v_init, grad_k};
}

}  // namespace

TORCH_LIBRARY(fastspike, m) {
  m.def("neuron_forward(Tensor x_seq, Tensor? v_init, float v_init_value, Tensor? k, str kind, "
        "float v_threshold, float? v_reset, float tau, bool decay_input, bool detach_reset, str surrogate, "
        "float alpha, bool store_v_seq, bool save_h) -> (Tensor, Tensor, Tensor, Tensor)");
  m.def("neuron_backward(Tensor grad_spike_seq, Tensor grad_v_last, Tensor? grad_v_seq, Tensor h_seq, "
        "Tensor? v_init, float v_init_value, Tensor? k, str kind, float v_threshold, float? v_reset, "
        "float tau, bool decay_input, bool detach_reset, str surrogate, float alpha) "
        "-> (Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(fastspike, CPU, m) {
  m.impl("neuron_forward", &neuron_forward);
  m.impl("neuron_backward", &neuron_backward);
}

#ifdef FASTSPIKE_WITH_CUDA
TORCH_LIBRARY_IMPL(fastspike, CUDA, m) {
  m.impl("neuron_forward", &neuron_forward);
  m.impl("neuron_backward", &neuron_backward);
}
#endif

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
#ifndef FASTSPIKE_CUDA_ARCHS
#define FASTSPIKE_CUDA_ARCHS
#endif
  // The GPU architectures compiled for, e.g. "80_90ptx" for TORCH_CUDA_ARCH_LIST="8.0;9.0+PTX".
  if (PyModule_AddStringConstant(m, "SOURCE_HASH", FS_STRINGIFY(FASTSPIKE_SOURCE_HASH)) < 0 ||
      PyModule_AddStringConstant(m, "CUDA_ARCHS", FS_STRINGIFY(FASTSPIKE_CUDA_ARCHS)) < 0 ||
      PyModule_AddIntConstant(m, "WITH_CUDA", with_cuda) < 0) {
    Py_DECREF(m);
    return nullptr;
  }
  return m;
}
