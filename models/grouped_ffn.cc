#include "models/grouped_ffn.h"

#include <ATen/ops/empty.h>
#include <ATen/ops/gelu_backward.h>
#include <ATen/ops/sum.h>
#include <ATen/ops/threshold_backward.h>
#include <torch/csrc/autograd/custom_function.h>

#include <numeric>

#include "core/precision.h"
#include "models/feed_forward.h"
#include "models/matmul.h"

namespace moelab {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

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
    int64_t offset = 0;
    for (int64_t e = 0; e < w1.size(0); ++e) {
      const int64_t n = group_sizes[e];
      if (n == 0) continue;
      at::Tensor h_e = h_pre.narrow(0, offset, n);
      h_e.copy_(b1[e].expand_as(h_e));
      MatmulInto(h_e, x.narrow(0, offset, n), w1_op[e], /*accumulate=*/true);
      offset += n;
    }
    const at::Tensor h = MatmulOperandInPlace(
        ApplyActivation(h_pre, static_cast<Activation>(activation)), precision);
    offset = 0;
    for (int64_t e = 0; e < w1.size(0); ++e) {
      const int64_t n = group_sizes[e];
      if (n == 0) continue;
      at::Tensor y_e = y.narrow(0, offset, n);
      y_e.copy_(b2[e].expand_as(y_e));
      MatmulInto(y_e, h.narrow(0, offset, n), w2_op[e], /*accumulate=*/true);
      offset += n;
    }
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
    int64_t offset = 0;
    for (int64_t e = 0; e < num_experts; ++e) {
      const int64_t n = group_sizes[e];
      if (n == 0) {
        // An expert without tokens gets an exact zero gradient.
        if (need_w2) grad_w2[e].zero_();
        if (need_b2) grad_b2[e].zero_();
        continue;
      }
      const at::Tensor grad_y_e = grad_y.narrow(0, offset, n);
      if (need_w2) {
        at::Tensor out = grad_w2[e];
        MatmulInto(out, h.narrow(0, offset, n).t(), grad_y_e);
      }
      if (need_b2) {
        at::Tensor out = grad_b2[e];
        at::sum_out(out, grad_y_fp32.narrow(0, offset, n), at::IntArrayRef{0});
      }
      if (need_hidden) {
        at::Tensor out = grad_h.narrow(0, offset, n);
        MatmulInto(out, grad_y_e, w2[e].t());
      }
      offset += n;
    }
    if (need_hidden) {
      const at::Tensor grad_h_pre_fp32 = activation == RELU
                                             ? at::threshold_backward(grad_h, h_pre, 0)
                                             : at::gelu_backward(grad_h, h_pre);
      // The bias gradients take the fp32 values; then the products' operand
      // may overwrite them.
      if (need_b1) {
        offset = 0;
        for (int64_t e = 0; e < num_experts; ++e) {
          at::Tensor out = grad_b1[e];
          at::sum_out(out, grad_h_pre_fp32.narrow(0, offset, group_sizes[e]), at::IntArrayRef{0});
          offset += group_sizes[e];
        }
      }
      if (need_w1 || need_x) {
        const at::Tensor grad_h_pre = MatmulOperandInPlace(grad_h_pre_fp32, precision);
        // Input layer: grads of w1 and x.
        offset = 0;
        for (int64_t e = 0; e < num_experts; ++e) {
          const int64_t n = group_sizes[e];
          if (n == 0) {
            if (need_w1) grad_w1[e].zero_();
            continue;
          }
          const at::Tensor grad_h_e = grad_h_pre.narrow(0, offset, n);
          if (need_w1) {
            at::Tensor out = grad_w1[e];
            MatmulInto(out, x.narrow(0, offset, n).t(), grad_h_e);
          }
          if (need_x) {
            at::Tensor out = grad_x.narrow(0, offset, n);
            MatmulInto(out, grad_h_e, w1[e].t());
          }
          offset += n;
        }
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
