// The neuron family's ops (SpikingJelly's IF/LIF/PLIF), fastspike::neuron_forward / neuron_backward: their
// CPU and CUDA kernels registered as boxed functions that read their arguments by the names of the schema
// in fastspike/_contract.py (NEURON_FORWARD, NEURON_BACKWARD), check the layout contract documented in
// fastspike/_neuron_ops.py, allocate and launch.
#include "neuron.h"
#include "op_utils.h"

#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/rsub.h>
#include <ATen/ops/scalar_tensor.h>

#ifdef FASTSPIKE_WITH_CUDA
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

namespace fastspike {
namespace {

// The record NeuronParams of fastspike/_contract.py, as the kernels use it.
struct NeuronParams {
  int mode;
  bool hard, detach_reset;
  double v_threshold, v_reset, tau;
  int surrogate;
  double sg_alpha, sg_a, sg_b;
};

int charge_mode(const std::string& kind, bool decay_input, std::optional<double> v_reset) {
  const bool zero = !v_reset.has_value() || *v_reset == 0.0;
  if (kind == "if") return kIF;
  TORCH_CHECK(kind == "lif" || kind == "plif", "fastspike: unknown neuron kind '", kind, "'");
  const int base = kind == "lif" ? kLifDecayZero : kPlifDecayZero;
  return base + (decay_input ? 0 : 2) + (zero ? 0 : 1);
}

NeuronParams read_params(const OpArgs& args) {
  const std::optional<double> v_reset = args.optional_real("v_reset");
  NeuronParams p;
  p.mode = charge_mode(args.text("kind"), args.flag("decay_input"), v_reset);
  p.hard = v_reset.has_value();
  p.detach_reset = args.flag("detach_reset");
  p.v_threshold = args.real("v_threshold");
  p.v_reset = v_reset.value_or(0.0);
  p.tau = args.real("tau");
  p.surrogate = surrogate_id(args.text("surrogate"));
  TORCH_CHECK(p.surrogate < kNumNeuronSurrogates, "fastspike: the neuron kernels take fastspike.surrogate's ",
              "surrogates, not '", args.text("surrogate"), "'");
  p.sg_alpha = args.real("sg_alpha");
  p.sg_a = args.real("sg_a");
  p.sg_b = args.real("sg_b");
  return p;
}

// PLIF's k = sigmoid(w) and 1 - k, both computed in k's dtype as the reference does, then in the state dtype.
std::pair<at::Tensor, at::Tensor> plif_scalars(int mode, const std::optional<at::Tensor>& k,
                                               const at::Tensor& like, at::ScalarType state) {
  if (!is_plif(mode)) return {};
  TORCH_CHECK(k.has_value() && k->numel() == 1 && k->device() == like.device(),
              "fastspike: PLIF needs k = sigmoid(w), a one-element tensor on ", like.device());
  return {k->to(state).contiguous(), at::rsub(*k, 1).to(state).contiguous()};
}

void neuron_forward(const c10::OperatorHandle& op, torch::jit::Stack* stack) {
  OpArgs args(op, stack);
  const NeuronParams p = read_params(args);
  const at::Tensor x_seq = args.tensor("x_seq");
  const std::optional<at::Tensor> v_init = args.optional_tensor("v_init");
  const bool store_v_seq = args.flag("store_v_seq"), save_h = args.flag("save_h");
  check_time_major(x_seq, "x_seq");
  const at::Tensor step = x_seq[0];
  const at::ScalarType state = v_init.has_value() ? v_init->scalar_type()
      : (x_seq.scalar_type() == at::kDouble ? at::kDouble : at::kFloat);
  const int dtype = dtype_case(x_seq.scalar_type(), state);
  check_like(v_init, step, state, "v_init");
  auto [kf, km] = plif_scalars(p.mode, args.optional_tensor("k"), x_seq, state);

  const auto state_opts = x_seq.options().dtype(state);
  at::Tensor spike = at::empty_like(x_seq);
  at::Tensor v_last = at::empty_like(step, state_opts);
  at::Tensor v_seq = store_v_seq ? at::empty_like(x_seq, state_opts) : at::empty({0}, state_opts);
  at::Tensor h_seq = save_h ? at::empty_like(x_seq, state_opts) : at::empty({0}, state_opts);

  ForwardArgs a{};
  a.x = x_seq.data_ptr(); a.spike = spike.data_ptr(); a.v_last = v_last.data_ptr();
  a.v_seq = store_v_seq ? v_seq.data_ptr() : nullptr;
  a.h_seq = save_h ? h_seq.data_ptr() : nullptr;
  a.v_init = ptr_or_null(v_init);
  a.v_init_value = args.real("v_init_value");
  a.k = ptr_or_null(kf); a.km = ptr_or_null(km);
  a.T = x_seq.size(0); a.N = step.numel();
  a.mode = p.mode; a.hard = p.hard;
  a.v_threshold = p.v_threshold; a.v_reset = p.v_reset; a.tau = p.tau;
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
  args.results({spike, v_last, v_seq, h_seq});
}

void neuron_backward(const c10::OperatorHandle& op, torch::jit::Stack* stack) {
  OpArgs args(op, stack);
  const NeuronParams p = read_params(args);
  const at::Tensor grad_spike_seq = args.tensor("grad_spike_seq"), h_seq = args.tensor("h_seq");
  const std::optional<at::Tensor> grad_v_last = args.optional_tensor("grad_v_last");
  const std::optional<at::Tensor> grad_v_seq = args.optional_tensor("grad_v_seq");
  const std::optional<at::Tensor> x_seq = args.optional_tensor("x_seq");
  const std::optional<at::Tensor> v_init = args.optional_tensor("v_init");
  const bool need_grad_k = is_plif(p.mode) && args.flag("need_grad_k");
  const bool decay = p.mode == kPlifDecayZero || p.mode == kPlifDecay;
  TORCH_CHECK(h_seq.dim() >= 2 && h_seq.sizes() == grad_spike_seq.sizes(),
              "fastspike: the backward needs the h sequence saved by a forward with save_h=True");
  TORCH_CHECK(!(need_grad_k && decay) || x_seq.has_value(),
              "fastspike: PLIF's grad_w with decay_input needs the x sequence saved by the forward");
  check_time_major(h_seq, "h_seq");
  const at::ScalarType state = h_seq.scalar_type();
  const int dtype = dtype_case(grad_spike_seq.scalar_type(), state);
  const at::Tensor step = h_seq[0];
  check_like(grad_spike_seq, h_seq, grad_spike_seq.scalar_type(), "grad_spike_seq");
  check_like(grad_v_last, step, state, "grad_v_last");
  check_like(grad_v_seq, h_seq, state, "grad_v_seq");
  check_like(x_seq, h_seq, grad_spike_seq.scalar_type(), "x_seq");
  check_like(v_init, step, state, "v_init");
  auto [kf, km] = plif_scalars(p.mode, args.optional_tensor("k"), h_seq, state);

  at::Tensor grad_x = at::empty_like(h_seq, grad_spike_seq.options());
  at::Tensor grad_v_init = at::empty_like(step);
  BackwardArgs a{};
  a.grad_spike = grad_spike_seq.data_ptr(); a.grad_v_last = ptr_or_null(grad_v_last);
  a.grad_v_seq = ptr_or_null(grad_v_seq);
  a.h_seq = h_seq.data_ptr();
  a.x = need_grad_k && decay ? ptr_or_null(x_seq) : nullptr;
  a.v_init = ptr_or_null(v_init);
  a.v_init_value = args.real("v_init_value");
  a.k = ptr_or_null(kf); a.km = ptr_or_null(km);
  a.grad_x = grad_x.data_ptr(); a.grad_v_init = grad_v_init.data_ptr();
  a.T = h_seq.size(0); a.N = step.numel();
  a.mode = p.mode; a.hard = p.hard; a.detach_reset = p.detach_reset; a.surrogate = p.surrogate;
  a.v_threshold = p.v_threshold; a.v_reset = p.v_reset; a.tau = p.tau;
  a.sg_alpha = p.sg_alpha; a.sg_a = p.sg_a; a.sg_b = p.sg_b;

  const bool cuda = h_seq.is_cuda();
  at::Tensor partials;
  if (need_grad_k) {
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
  if (!need_grad_k) {
    grad_k = at::empty({0}, h_seq.options());
  } else if (cuda) {
    grad_k = partials.sum().to(state);
  } else {
    // A serial sum in chunk order: at::sum would split by thread count on very large inputs, and grad_w
    // must not depend on torch.get_num_threads().
    double total = 0.0;
    const double* q = partials.data_ptr<double>();
    for (int64_t i = 0; i < partials.numel(); ++i) total += q[i];
    grad_k = at::scalar_tensor(total, h_seq.options().dtype(at::kDouble)).to(state);
  }
  args.results({grad_x, grad_v_init, grad_k});
}

}  // namespace

TORCH_LIBRARY_IMPL(fastspike, CPU, m) {
  m.impl("neuron_forward", torch::CppFunction::makeFromBoxedFunction<&neuron_forward>());
  m.impl("neuron_backward", torch::CppFunction::makeFromBoxedFunction<&neuron_backward>());
}

#ifdef FASTSPIKE_WITH_CUDA
TORCH_LIBRARY_IMPL(fastspike, CUDA, m) {
  m.impl("neuron_forward", torch::CppFunction::makeFromBoxedFunction<&neuron_forward>());
  m.impl("neuron_backward", torch::CppFunction::makeFromBoxedFunction<&neuron_backward>());
}
#endif

}  // namespace fastspike
