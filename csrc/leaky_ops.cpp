// The leaky family's ops (snnTorch's Leaky and Synaptic), fastspike::leaky_forward / leaky_backward: CPU and
// CUDA kernels registered as boxed functions that read their arguments by the names of the schemas in
// fastspike/_contract.py (LEAKY_FORWARD, LEAKY_BACKWARD), check the layout contract documented in
// fastspike/_leaky_ops.py, allocate and launch.
#include "leaky.h"
#include "op_utils.h"

#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>

#ifdef FASTSPIKE_WITH_CUDA
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

namespace fastspike {
namespace {

// The record LeakyParams of fastspike/_contract.py, as the kernels use it.
struct LeakyParams {
  bool synaptic;
  int reset;
  bool reset_delay;
  int surrogate;
  double sg_alpha, sg_a, sg_b;
};

LeakyParams read_params(const OpArgs& args) {
  const std::string reset = args.text("reset");
  LeakyParams p;
  p.synaptic = args.flag("synaptic");
  TORCH_CHECK(reset == "subtract" || reset == "zero" || reset == "none", "fastspike: unknown reset '", reset, "'");
  p.reset = reset == "subtract" ? kSubtract : (reset == "zero" ? kZeroReset : kNoReset);
  p.reset_delay = args.flag("reset_delay");
  p.surrogate = surrogate_id(args.text("surrogate"));
  p.sg_alpha = args.real("sg_alpha");
  p.sg_a = args.real("sg_a");
  p.sg_b = args.real("sg_b");
  return p;
}

// beta, alpha, threshold, gsf: one element, or one per neuron of `step` in its memory order.
LeakyParamPtrs read_param_tensors(const OpArgs& args, bool synaptic, const at::Tensor& step, at::ScalarType state) {
  LeakyParamPtrs p{};
  const char* names[4] = {"beta", "alpha", "threshold", "gsf"};
  const void** ptrs[4] = {&p.beta, &p.alpha, &p.threshold, &p.gsf};
  bool* per_neuron[4] = {&p.beta_n, &p.alpha_n, &p.threshold_n, &p.gsf_n};
  for (int i = 0; i < 4; ++i) {
    const std::optional<at::Tensor> t = args.optional_tensor(names[i]);
    if (i == 1 && !synaptic) continue;
    TORCH_CHECK(t.has_value(), "fastspike: ", names[i], " is required");
    TORCH_CHECK(t->scalar_type() == state && t->device() == step.device(), "fastspike: ", names[i], " must be ",
                state, " on ", step.device(), ", got ", t->scalar_type(), " on ", t->device());
    if (t->numel() == 1) {
      TORCH_CHECK(t->is_contiguous(), "fastspike: ", names[i], " must be contiguous");
    } else {
      check_like(t, step, state, names[i]);
    }
    *ptrs[i] = t->data_ptr();
    *per_neuron[i] = t->numel() != 1;
  }
  return p;
}

void leaky_forward(const c10::OperatorHandle& op, torch::jit::Stack* stack) {
  OpArgs args(op, stack);
  const LeakyParams p = read_params(args);
  const at::Tensor x_seq = args.tensor("x_seq");
  check_time_major(x_seq, "x_seq");
  const at::Tensor step = x_seq[0];
  const at::ScalarType state = args.tensor("beta").scalar_type();
  const int dtype = dtype_case(x_seq.scalar_type(), state);
  const std::optional<at::Tensor> syn_init = args.optional_tensor("syn_init"), mem_init = args.optional_tensor("mem_init");
  check_like(syn_init, step, state, "syn_init");
  check_like(mem_init, step, state, "mem_init");
  const bool store_seq = args.flag("store_seq"), save = args.flag("save"), save_syn = args.flag("save_syn");

  const auto opts = x_seq.options().dtype(state);
  auto seq = [&](bool written) { return written ? at::empty_like(x_seq, opts) : at::empty({0}, opts); };
  at::Tensor spk = at::empty_like(x_seq, opts);
  at::Tensor syn_last = p.synaptic ? at::empty_like(step, opts) : at::empty({0}, opts);
  at::Tensor mem_last = at::empty_like(step, opts);
  at::Tensor syn_seq = seq(p.synaptic && (store_seq || save_syn));
  at::Tensor mem_seq = seq(store_seq || save);
  at::Tensor pre_seq = seq(save && !p.reset_delay);

  LeakyForwardArgs a{};
  a.x = x_seq.data_ptr(); a.spk = spk.data_ptr();
  a.syn_last = p.synaptic ? syn_last.data_ptr() : nullptr; a.mem_last = mem_last.data_ptr();
  a.syn_seq = syn_seq.numel() ? syn_seq.data_ptr() : nullptr;
  a.mem_seq = mem_seq.numel() ? mem_seq.data_ptr() : nullptr;
  a.pre_seq = pre_seq.numel() ? pre_seq.data_ptr() : nullptr;
  a.syn_init = p.synaptic ? ptr_or_null(syn_init) : nullptr; a.mem_init = ptr_or_null(mem_init);
  a.p = read_param_tensors(args, p.synaptic, step, state);
  a.T = x_seq.size(0); a.N = step.numel();
  a.synaptic = p.synaptic; a.reset = p.reset; a.reset_delay = p.reset_delay;
  if (a.N > 0) {
    if (x_seq.is_cuda()) {
#ifdef FASTSPIKE_WITH_CUDA
      const c10::cuda::CUDAGuard guard(x_seq.device());
      leaky_forward_cuda(a, dtype, c10::cuda::getCurrentCUDAStream().stream());
#endif
    } else {
      leaky_forward_cpu(a, dtype);
    }
  }
  args.results({spk, syn_last, mem_last, syn_seq, mem_seq, pre_seq});
}

void leaky_backward(const c10::OperatorHandle& op, torch::jit::Stack* stack) {
  OpArgs args(op, stack);
  const LeakyParams p = read_params(args);
  const at::Tensor mem_seq = args.tensor("mem_seq"), grad_spk = args.tensor("grad_spk_seq");
  TORCH_CHECK(mem_seq.dim() >= 2 && mem_seq.sizes() == grad_spk.sizes(),
              "fastspike: the backward needs the mem sequence saved by a forward with save=True");
  check_time_major(mem_seq, "mem_seq");
  const at::ScalarType state = mem_seq.scalar_type();
  const at::ScalarType x_dtype = args.scalar_type("grad_x_dtype");
  const int dtype = dtype_case(x_dtype, state);
  const at::Tensor step = mem_seq[0];
  const std::optional<at::Tensor> grad_syn_last = args.optional_tensor("grad_syn_last");
  const at::Tensor grad_mem_last = args.tensor("grad_mem_last");
  const std::optional<at::Tensor> grad_syn_seq = args.optional_tensor("grad_syn_seq"),
                                  grad_mem_seq = args.optional_tensor("grad_mem_seq"),
                                  pre_seq = args.optional_tensor("pre_seq"), syn_seq = args.optional_tensor("syn_seq"),
                                  syn_init = args.optional_tensor("syn_init"),
                                  mem_init = args.optional_tensor("mem_init");
  check_like(grad_spk, mem_seq, state, "grad_spk_seq");
  check_like(grad_syn_last, step, state, "grad_syn_last");
  check_like(grad_mem_last, step, state, "grad_mem_last");
  check_like(grad_syn_seq, mem_seq, state, "grad_syn_seq");
  check_like(grad_mem_seq, mem_seq, state, "grad_mem_seq");
  check_like(pre_seq, mem_seq, state, "pre_seq");
  check_like(syn_seq, mem_seq, state, "syn_seq");
  check_like(syn_init, step, state, "syn_init");
  check_like(mem_init, step, state, "mem_init");
  TORCH_CHECK(p.reset_delay || pre_seq.has_value(), "fastspike: reset_delay=False needs the saved pre_seq");
  const bool need_alpha = p.synaptic && args.flag("need_alpha");
  TORCH_CHECK(!need_alpha || syn_seq.has_value(), "fastspike: alpha's gradient needs the saved syn_seq");

  const auto opts = mem_seq.options();
  auto param_grad = [&](bool needed) { return needed ? at::empty_like(step) : at::empty({0}, opts); };
  at::Tensor grad_x = at::empty_like(mem_seq, opts.dtype(x_dtype));
  at::Tensor grad_syn_init = p.synaptic ? at::empty_like(step) : at::empty({0}, opts);
  at::Tensor grad_mem_init = at::empty_like(step);
  at::Tensor grad_beta = param_grad(args.flag("need_beta")), grad_alpha = param_grad(need_alpha),
             grad_threshold = param_grad(args.flag("need_threshold")), grad_gsf = param_grad(args.flag("need_gsf"));

  LeakyBackwardArgs a{};
  a.grad_spk = grad_spk.data_ptr();
  a.grad_syn_last = p.synaptic ? ptr_or_null(grad_syn_last) : nullptr;
  a.grad_mem_last = grad_mem_last.data_ptr();
  a.grad_syn_seq = p.synaptic ? ptr_or_null(grad_syn_seq) : nullptr;
  a.grad_mem_seq = ptr_or_null(grad_mem_seq);
  a.mem_seq = mem_seq.data_ptr(); a.pre_seq = ptr_or_null(pre_seq);
  a.syn_seq = need_alpha ? ptr_or_null(syn_seq) : nullptr;
  a.syn_init = p.synaptic ? ptr_or_null(syn_init) : nullptr; a.mem_init = ptr_or_null(mem_init);
  a.p = read_param_tensors(args, p.synaptic, step, state);
  a.grad_x = grad_x.data_ptr();
  a.grad_syn_init = p.synaptic ? grad_syn_init.data_ptr() : nullptr;
  a.grad_mem_init = grad_mem_init.data_ptr();
  a.grad_beta = grad_beta.numel() ? grad_beta.data_ptr() : nullptr;
  a.grad_alpha = grad_alpha.numel() ? grad_alpha.data_ptr() : nullptr;
  a.grad_threshold = grad_threshold.numel() ? grad_threshold.data_ptr() : nullptr;
  a.grad_gsf = grad_gsf.numel() ? grad_gsf.data_ptr() : nullptr;
  a.T = mem_seq.size(0); a.N = step.numel();
  a.synaptic = p.synaptic; a.reset = p.reset; a.reset_delay = p.reset_delay; a.surrogate = p.surrogate;
  a.sg_alpha = p.sg_alpha; a.sg_a = p.sg_a; a.sg_b = p.sg_b;
  if (a.N > 0) {
    if (mem_seq.is_cuda()) {
#ifdef FASTSPIKE_WITH_CUDA
      const c10::cuda::CUDAGuard guard(mem_seq.device());
      leaky_backward_cuda(a, dtype, c10::cuda::getCurrentCUDAStream().stream());
#endif
    } else {
      leaky_backward_cpu(a, dtype);
    }
  }
  args.results({grad_x, grad_syn_init, grad_mem_init, grad_beta, grad_alpha, grad_threshold, grad_gsf});
}

}  // namespace

TORCH_LIBRARY_IMPL(fastspike, CPU, m) {
  m.impl("leaky_forward", torch::CppFunction::makeFromBoxedFunction<&leaky_forward>());
  m.impl("leaky_backward", torch::CppFunction::makeFromBoxedFunction<&leaky_backward>());
}

#ifdef FASTSPIKE_WITH_CUDA
TORCH_LIBRARY_IMPL(fastspike, CUDA, m) {
  m.impl("leaky_forward", torch::CppFunction::makeFromBoxedFunction<&leaky_forward>());
  m.impl("leaky_backward", torch::CppFunction::makeFromBoxedFunction<&leaky_backward>());
}
#endif

}  // namespace fastspike
