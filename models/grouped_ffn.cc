#include "models/grouped_ffn.h"

#include <ATen/ops/empty.h>
#include <ATen/ops/gelu_backward.h>
#include <ATen/ops/sum.h>
#include <ATen/ops/threshold_backward.h>
#include <torch/csrc/autograd/custom_function.h>

#include <numeric>

#include "core/precision.h"
#include "models/feed_forward.h"
#include "models/fused_kernels.h"
#include "models/matmul.h"

namespace moelab {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// For one layer of every expert: the rows of `out` [P, out] for expert e
// are bias[e] + in_e w_e, with `input` [P, in] and `weight` [E, in, out] in
// the run's operand type and the bias fp32.
void ExpertProducts(const at::Tensor& input, const at::Tensor& weight, const at::Tensor& bias,
                    const std::vector<int64_t>& group_sizes, at::Tensor& out) {
  int64_t offset = 0;
  for (size_t e = 0; e < group_sizes.size(); ++e) {
    const int64_t n = group_sizes[e];
    if (n == 0) continue;
    at::Tensor out_e = out.narrow(0, offset, n);
    out_e.copy_(bias[e].expand_as(out_e));
    MatmulInto(out_e, input.narrow(0, offset, n), weight[e], /*accumulate=*/true);
    offset += n;
  }
}

// For one layer of every expert, y_e = in_e w_e (+ bias), given g = dL/dy
// [P, out] and the layer's saved operands (all in the run's operand type):
// grad_weight[e] = in_eᵀ g_e and the rows of grad_input g_e w_eᵀ, each
// skipped when undefined. An expert without rows gets an exact zero weight
// gradient.
void ExpertProductGradients(const at::Tensor& grad, const at::Tensor& input,
                            const at::Tensor& weight, const std::vector<int64_t>& group_sizes,
                            at::Tensor& grad_weight, at::Tensor& grad_input) {
  int64_t offset = 0;
  for (size_t e = 0; e < group_sizes.size(); ++e) {
    const int64_t n = group_sizes[e];
    if (n == 0) {
      if (grad_weight.defined()) grad_weight[e].zero_();
      continue;
    }
    const at::Tensor grad_e = grad.narrow(0, offset, n);
    if (grad_weight.defined()) {
      at::Tensor out = grad_weight[e];
      MatmulInto(out, input.narrow(0, offset, n).t(), grad_e);
    }
    if (grad_input.defined()) {
      at::Tensor out = grad_input.narrow(0, offset, n);
      MatmulInto(out, grad_e, weight[e].t());
    }
    offset += n;
  }
}

// grad_bias[e] = the sum of expert e's rows of `grad` (fp32); exact zeros for
// an expert without rows.
void ExpertBiasGradients(const at::Tensor& grad, const std::vector<int64_t>& group_sizes,
                         at::Tensor& grad_bias) {
  int64_t offset = 0;
  for (size_t e = 0; e < group_sizes.size(); ++e) {
    at::Tensor out = grad_bias[e];
    at::sum_out(out, grad.narrow(0, offset, group_sizes[e]), at::IntArrayRef{0});
    offset += group_sizes[e];
  }
}

// Whether the activation runs in fused_kernels (GELU of float rows).
bool FusedGelu(int64_t activation, const at::Tensor& h_pre) {
  return activation == GELU && h_pre.scalar_type() == at::kFloat;
}

class GroupedExpertFfnFunction : public torch::autograd::Function<GroupedExpertFfnFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x_in, const at::Tensor& w1,
                            const at::Tensor& b1, const at::Tensor& w2, const at::Tensor& b2,
                            const std::vector<int64_t>& group_sizes, int64_t activation,
                            int64_t precision_value) {
    const auto precision = static_cast<Precision>(precision_value);
    // Operands in the run's precision, cast once for all experts and kept
    // for the backward pass; products and everything else in fp32.
    const at::Tensor x = MatmulOperand(x_in, precision).contiguous();  // [P, D]
    const at::Tensor w1_op = MatmulOperand(w1, precision);             // [E, D, H]
    const at::Tensor w2_op = MatmulOperand(w2, precision);             // [E, H, D]
    const int64_t rows = x.size(0);
    const int64_t model_dim = w1.size(1), hidden_dim = w1.size(2);
    const at::TensorOptions fp32 = x_in.options();
    at::Tensor h_pre = at::empty({rows, hidden_dim}, fp32);  // [P, H]
    at::Tensor y = at::empty({rows, model_dim}, fp32);       // [P, D]
    ExpertProducts(x, w1_op, b1, group_sizes, h_pre);
    // GELU of float rows and its cast in one pass (fused_kernels.h); ReLU
    // (and doubles, in reference tests) through ATen.
    const at::Tensor h =
        FusedGelu(activation, h_pre)
            ? GeluOperand(h_pre, precision)
            : MatmulOperandInPlace(ApplyActivation(h_pre, static_cast<Activation>(activation)),
                                   precision);
    ExpertProducts(h, w2_op, b2, group_sizes, y);
    ctx->save_for_backward({x, h_pre, h, w1_op, w2_op});
    ctx->saved_data["group_sizes"] = group_sizes;
    ctx->saved_data["activation"] = activation;
    ctx->saved_data["precision"] = precision_value;
    return y;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const variable_list saved = ctx->get_saved_variables();
    const at::Tensor& x = saved[0];      // [P, D] operand type
    const at::Tensor& h_pre = saved[1];  // [P, H] fp32
    const at::Tensor& h = saved[2];      // [P, H] operand type
    const at::Tensor& w1 = saved[3];     // [E, D, H] operand type
    const at::Tensor& w2 = saved[4];     // [E, H, D] operand type
    const std::vector<int64_t> group_sizes = ctx->saved_data["group_sizes"].toIntVector();
    const auto activation = static_cast<Activation>(ctx->saved_data["activation"].toInt());
    const auto precision = static_cast<Precision>(ctx->saved_data["precision"].toInt());
    const at::Tensor grad_y_fp32 = grad_outputs[0].contiguous();      // [P, D]
    const at::Tensor grad_y = MatmulOperand(grad_y_fp32, precision);  // [P, D]
    const int64_t num_experts = w1.size(0);
    const at::TensorOptions fp32 = grad_y_fp32.options();

    const bool need_x = ctx->needs_input_grad(0);
    const bool need_w1 = ctx->needs_input_grad(1);
    const bool need_b1 = ctx->needs_input_grad(2);
    const bool need_w2 = ctx->needs_input_grad(3);
    const bool need_b2 = ctx->needs_input_grad(4);
    const bool need_hidden = need_x || need_w1 || need_b1;

    at::Tensor grad_x, grad_w1, grad_b1, grad_w2, grad_b2;
    if (need_x) grad_x = at::empty(x.sizes(), fp32);
    if (need_w1) grad_w1 = at::empty(w1.sizes(), fp32);
    if (need_b1) grad_b1 = at::empty({num_experts, w1.size(2)}, fp32);
    if (need_w2) grad_w2 = at::empty(w2.sizes(), fp32);
    if (need_b2) grad_b2 = at::empty({num_experts, w2.size(2)}, fp32);
    at::Tensor grad_h;
    if (need_hidden) grad_h = at::empty(h.sizes(), fp32);

    // Output layer: grads of w2, b2 and of the hidden activations.
    if (need_b2) ExpertBiasGradients(grad_y_fp32, group_sizes, grad_b2);
    ExpertProductGradients(grad_y, h, w2, group_sizes, grad_w2, grad_h);
    if (need_hidden) {
      // dL/dh_pre in fp32 and, for the products, as their operand (from the
      // same pass where that is bf16; else rounded below, after the bias
      // gradients have taken the fp32 values).
      at::Tensor grad_h_pre_fp32, grad_h_pre_op;
      if (FusedGelu(activation, h_pre)) {
        grad_h_pre_op = GeluBackwardInPlace(grad_h, h_pre, precision);
        grad_h_pre_fp32 = grad_h;
      } else {
        grad_h_pre_fp32 = activation == RELU ? at::threshold_backward(grad_h, h_pre, 0)
                                             : at::gelu_backward(grad_h, h_pre);
        grad_h_pre_op = grad_h_pre_fp32;
      }
      // Input layer.
      if (need_b1) ExpertBiasGradients(grad_h_pre_fp32, group_sizes, grad_b1);
      if (need_w1 || need_x) {
        ExpertProductGradients(MatmulOperandInPlace(grad_h_pre_op, precision), x, w1, group_sizes,
                               grad_w1, grad_x);
      }
    }
    return {grad_x, grad_w1, grad_b1, grad_w2, grad_b2, at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

at::Tensor GroupedExpertFfn(const at::Tensor& x_sorted, const std::vector<int64_t>& group_sizes,
                            const at::Tensor& w1, const at::Tensor& b1, const at::Tensor& w2,
                            const at::Tensor& b2, Activation activation) {
  TORCH_CHECK(x_sorted.dim() == 2 && w1.dim() == 3 && w2.dim() == 3,
              "GroupedExpertFfn: x_sorted must be [P, D], w1 [E, D, H], "
              "w2 [E, H, D]");
  TORCH_CHECK(static_cast<int64_t>(group_sizes.size()) == w1.size(0),
              "GroupedExpertFfn: ", group_sizes.size(), " group sizes for ", w1.size(0),
              " experts");
  TORCH_CHECK(
      std::accumulate(group_sizes.begin(), group_sizes.end(), int64_t{0}) == x_sorted.size(0),
      "GroupedExpertFfn: group sizes do not add up to ", x_sorted.size(0), " rows");
  return GroupedExpertFfnFunction::apply(x_sorted, w1, b1, w2, b2, group_sizes,
                                         static_cast<int64_t>(activation),
                                         static_cast<int64_t>(CurrentPrecision()));
}

}  // namespace moelab
