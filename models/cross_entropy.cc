#include "models/cross_entropy.h"

#include <ATen/TensorOperators.h>
#include <ATen/ops/full_like.h>
#include <ATen/ops/max.h>
#include <torch/csrc/autograd/custom_function.h>

#include <tuple>

namespace moelab {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

class MeanCrossEntropyFunction
    : public torch::autograd::Function<MeanCrossEntropyFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& logits,
                            const at::Tensor& targets) {
    const at::Tensor row_max = std::get<0>(logits.max(1, /*keepdim=*/true));
    at::Tensor exps = (logits - row_max).exp_();            // [N, V]
    const at::Tensor sums = exps.sum(1, /*keepdim=*/true);  // [N, 1]
    const at::Tensor index = targets.unsqueeze(1);          // [N, 1]
    const at::Tensor loss =
        (sums.log() + row_max - logits.gather(1, index)).mean();
    ctx->save_for_backward({exps, sums, index});
    return loss;
  }

  static variable_list backward(AutogradContext* ctx,
                                variable_list grad_outputs) {
    // Unpacking checks that `exps` is unmodified: a second backward through
    // the same graph fails here instead of reading a gradient.
    const variable_list saved = ctx->get_saved_variables();
    at::Tensor grad = saved[0];  // becomes d loss / d logits, in place
    const at::Tensor& sums = saved[1];
    const at::Tensor& index = saved[2];
    grad.div_(sums);  // softmax
    grad.scatter_add_(1, index, at::full_like(index, -1, grad.options()));
    grad.mul_(grad_outputs[0] / static_cast<double>(grad.size(0)));
    return {grad, at::Tensor()};
  }
};

}  // namespace

at::Tensor MeanCrossEntropy(const at::Tensor& logits,
                            const at::Tensor& targets) {
  TORCH_CHECK(logits.dim() == 2 && targets.dim() == 1 &&
                  targets.size(0) == logits.size(0),
              "MeanCrossEntropy: logits must be [N, V] and targets [N], got ",
              logits.sizes(), " and ", targets.sizes());
  return MeanCrossEntropyFunction::apply(logits, targets);
}

}  // namespace moelab
