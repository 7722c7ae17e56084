// What every op family's registration file needs: arguments of a boxed call read by their schema names
// (the schemas are defined in fastspike/_contract.py, not here), and the layout checks of the contract.
#pragma once

#include "common.h"

#include <ATen/core/Tensor.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/core/stack.h>
#include <torch/library.h>

#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace fastspike {

// The arguments of one boxed call on `stack`, by name; results() replaces them with the outputs.
class OpArgs {
 public:
  OpArgs(const c10::OperatorHandle& op, torch::jit::Stack* stack)
      : schema_(op.schema()), stack_(stack), n_(schema_.arguments().size()) {}

  at::Tensor tensor(const char* name) const { return get(name).toTensor(); }
  std::optional<at::Tensor> optional_tensor(const char* name) const {
    const c10::IValue& v = get(name);
    return v.isNone() ? std::nullopt : std::optional<at::Tensor>(v.toTensor());
  }
  double real(const char* name) const { return get(name).toDouble(); }
  std::optional<double> optional_real(const char* name) const {
    const c10::IValue& v = get(name);
    return v.isNone() ? std::nullopt : std::optional<double>(v.toDouble());
  }
  bool flag(const char* name) const { return get(name).toBool(); }
  std::string text(const char* name) const { return get(name).toStringRef(); }
  at::ScalarType scalar_type(const char* name) const { return get(name).toScalarType(); }

  void results(std::vector<at::Tensor> outputs) {
    TORCH_CHECK(outputs.size() == schema_.returns().size(), "fastspike: ", schema_.name(), " returns ",
                schema_.returns().size(), " tensors, the kernel made ", outputs.size());
    torch::jit::drop(*stack_, n_);
    for (at::Tensor& t : outputs) torch::jit::push(*stack_, std::move(t));
  }

 private:
  const c10::IValue& get(const char* name) const {
    const std::optional<int> index = schema_.argumentIndexWithName(name);
    TORCH_CHECK(index.has_value(), "fastspike: ", schema_.name(), " has no argument '", name,
                "' (its schema comes from fastspike/_contract.py)");
    return torch::jit::peek(*stack_, static_cast<size_t>(*index), n_);
  }

  const c10::FunctionSchema& schema_;
  torch::jit::Stack* stack_;
  size_t n_;
};

// The id of surrogate `name` in kSurrogateNames (surrogate.h).
int surrogate_id(const std::string& name);

// Which DTypeCase an input/state dtype pair is; any other pair is an error.
int dtype_case(at::ScalarType x, at::ScalarType state);

// a and b store their elements in the same order (strides agree wherever a size is not 1).
bool same_order(const at::Tensor& a, const at::Tensor& b);

// x is [T, N, *], dense with T outermost.
void check_time_major(const at::Tensor& x, const char* name);

// t (when given) is on like's device, has `dtype` and like's shape and memory order.
void check_like(const std::optional<at::Tensor>& t, const at::Tensor& like, at::ScalarType dtype, const char* name);

inline const void* ptr_or_null(const at::Tensor& t) { return t.defined() ? t.data_ptr() : nullptr; }
inline const void* ptr_or_null(const std::optional<at::Tensor>& t) { return t.has_value() ? t->data_ptr() : nullptr; }

}  // namespace fastspike
