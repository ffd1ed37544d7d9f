#include "models/linear.h"

#include <ATen/ops/empty.h>
#include <ATen/ops/sum.h>
#include <torch/csrc/autograd/custom_function.h>

#include <vector>

#include "core/precision.h"
#include "models/matmul.h"

namespace moelab {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

class LinearFunction : public torch::autograd::Function<LinearFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& weight,
                            const at::Tensor& bias, int64_t precision_value) {
    const auto precision = static_cast<Precision>(precision_value);
    const int64_t in = weight.size(1), out_features = weight.size(0);
    const at::Tensor rows = x.reshape({-1, in});                          // [N, in]
    const at::Tensor x_op = MatmulOperand(rows, precision);               // [N, in]
    const at::Tensor w_op = MatmulOperand(weight, precision);             // [out, in]
    at::Tensor y = at::empty({rows.size(0), out_features}, x.options());  // [N, out]
    const bool has_bias = bias.numel() > 0;
    if (has_bias) y.copy_(bias.expand_as(y));
    MatmulInto(y, x_op, w_op.t(), /*accumulate=*/has_bias);
    ctx->save_for_backward({x_op, w_op});
    ctx->saved_data["precision"] = precision_value;
    ctx->saved_data["has_bias"] = has_bias;
    std::vector<int64_t> shape = x.sizes().vec();
    shape.back() = out_features;
    return y.view(shape);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const variable_list saved = ctx->get_saved_variables();
    const at::Tensor& x_op = saved[0];  // [N, in]
    const at::Tensor& w_op = saved[1];  // [out, in]
    const auto precision = static_cast<Precision>(ctx->saved_data["precision"].toInt());
    const at::Tensor grad_y = grad_outputs[0].reshape({-1, w_op.size(0)});  // [N, out]
    const at::Tensor grad_op = MatmulOperand(grad_y, precision);
    at::Tensor grad_x, grad_w, grad_b;
    if (ctx->needs_input_grad(0)) {
      std::vector<int64_t> shape = grad_outputs[0].sizes().vec();
      shape.back() = w_op.size(1);
      grad_x = Matmul(grad_op, w_op).view(shape);
    }
    if (ctx->needs_input_grad(1)) grad_w = Matmul(grad_op.t(), x_op);
    if (ctx->needs_input_grad(2) && ctx->saved_data["has_bias"].toBool()) {
      grad_b = grad_y.sum(0);
    }
    return {grad_x, grad_w, grad_b, at::Tensor()};
  }
};

}  // namespace

at::Tensor Linear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias) {
  TORCH_CHECK(weight.dim() == 2 && x.dim() >= 1 && x.size(-1) == weight.size(1),
              "Linear: x must be [..., ", weight.dim() == 2 ? weight.size(1) : -1,
              "] for a weight of ", weight.sizes(), ", got ", x.sizes());
  TORCH_CHECK(!bias.defined() || (bias.dim() == 1 && bias.size(0) == weight.size(0)),
              "Linear: bias must be [", weight.size(0), "], got ", bias.sizes());
  // Custom functions in this LibTorch cannot take undefined tensors: a
  // missing bias travels as an empty one.
  return LinearFunction::apply(x, weight, bias.defined() ? bias : at::empty({0}, weight.options()),
                               static_cast<int64_t>(CurrentPrecision()));
}

}  // namespace moelab
