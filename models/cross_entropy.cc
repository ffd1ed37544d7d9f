#include "models/cross_entropy.h"

#include <ATen/TensorOperators.h>
#include <ATen/core/grad_mode.h>
#include <ATen/ops/_log_softmax.h>
#include <ATen/ops/_softmax.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/full.h>
#include <ATen/ops/full_like.h>
#include <ATen/ops/logsumexp.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/nonzero.h>
#include <ATen/ops/scalar_tensor.h>
#include <ATen/ops/zeros.h>
#include <ATen/ops/zeros_like.h>
#include <torch/csrc/autograd/custom_function.h>

#include <algorithm>
#include <limits>

#include "core/precision.h"
#include "models/fused_kernels.h"
#include "models/matmul.h"

namespace moelab {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// Turns softmax probabilities [n, V] in place into the gradient of the summed
// cross-entropy with respect to the logits: softmax - onehot(index).
at::Tensor& SubtractOneHot(at::Tensor& probs, const at::Tensor& index) {
  probs.scatter_add_(1, index, at::full_like(index, -1, probs.options()));
  return probs;
}

// The same from log-probabilities [n, V], in place.
at::Tensor& LogProbsToLogitGradient(at::Tensor& log_probs, const at::Tensor& index) {
  return SubtractOneHot(log_probs.exp_(), index);
}

// Sum over rows of log softmax(logits)[index] given probs = softmax(logits).
// log(probs) is exact unless a target's probability underflowed (more than
// ~87 nats below its row's maximum in float); those rare rows are recomputed
// from the logits as logit - logsumexp in double.
double TargetLogProbSum(const at::Tensor& probs, const at::Tensor& logits,
                        const at::Tensor& index) {
  const at::Tensor target_probs = probs.gather(1, index).squeeze(1);  // [n]
  at::Tensor log_probs = target_probs.log();
  const double smallest_normal = probs.scalar_type() == at::kFloat
                                     ? std::numeric_limits<float>::min()
                                     : std::numeric_limits<double>::min();
  const at::Tensor underflowed = (target_probs < smallest_normal).nonzero().squeeze(1);
  if (underflowed.numel() > 0) {
    const at::Tensor rows = logits.index_select(0, underflowed).to(at::kDouble);
    const at::Tensor exact =
        rows.gather(1, index.index_select(0, underflowed)).squeeze(1) - rows.logsumexp(1);
    log_probs.index_put_({underflowed}, exact.to(log_probs.scalar_type()));
  }
  return log_probs.sum(at::kDouble).item<double>();
}

class MeanCrossEntropyFunction : public torch::autograd::Function<MeanCrossEntropyFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& logits,
                            const at::Tensor& targets) {
    // One vectorised, parallel ATen kernel gives log p [N, V]; this is both
    // the loss's input and (after exp_) the backward's softmax, so no other
    // [N, V] pass or buffer is needed.
    at::Tensor log_probs = at::_log_softmax(logits, 1, /*half_to_float=*/false);
    const at::Tensor index = targets.unsqueeze(1);  // [N, 1]
    const at::Tensor loss = log_probs.gather(1, index).mean().neg();
    ctx->save_for_backward({log_probs, index});
    return loss;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    // Unpacking checks that the saved log-probabilities are unmodified: a
    // second backward through the same graph fails here instead of reading
    // a gradient.
    const variable_list saved = ctx->get_saved_variables();
    at::Tensor grad = saved[0];
    LogProbsToLogitGradient(grad, saved[1]);
    grad.mul_(grad_outputs[0] / static_cast<double>(grad.size(0)));
    return {grad, at::Tensor()};
  }
};

// Rows per block: 4M logits (16 MiB in float) whatever the vocabulary. On 2
// cores, bench_lm's output layer + loss took 168, 155, 153 and 159 ms per
// step with 1M, 4M, 8M and 20M logits per block (and 155 ms unfused): the
// matmuls dominate, so the gain is memory (peak RSS 786 -> 543 MB), not time.
int64_t BlockRows(int64_t vocab) { return std::max<int64_t>(16, (4 << 20) / vocab); }

// Sum over rows of -log softmax(hidden · weightᵀ)[target]; when `grad_hidden`
// and `grad_weight` are given, also writes the gradients of that sum. The
// products take operands in `precision` (models/matmul.h); logits, softmax,
// loss and gradients keep the inputs' type (float, or double in tests).
double LinearCrossEntropySum(const at::Tensor& hidden_in, const at::Tensor& weight_in,
                             const at::Tensor& targets, Precision precision,
                             at::Tensor* grad_hidden, at::Tensor* grad_weight) {
  const at::Tensor hidden = MatmulOperand(hidden_in, precision);  // [N, D]
  const at::Tensor weight = MatmulOperand(weight_in, precision);  // [V, D]
  const int64_t rows = hidden.size(0), vocab = weight.size(0);
  const int64_t block = std::min(rows, BlockRows(vocab));
  at::Tensor logits = at::empty({block, vocab}, hidden_in.options());
  // Float rows take the fused kernel (softmax, loss and the gradient as the
  // products' operand in one pass; bf16 operands in a buffer of their own,
  // others over the logits); doubles (reference tests) take ATen's ops.
  const bool fused = hidden_in.scalar_type() == at::kFloat;
  const bool bf16_operands = OperandType(precision) == at::kBFloat16;
  at::Tensor probs;
  if (!fused) {
    probs = at::empty({block, vocab}, hidden_in.options());
  } else if (grad_hidden != nullptr && bf16_operands) {
    probs = at::empty({block, vocab}, hidden_in.options().dtype(at::kBFloat16));
  }
  double total = 0;
  for (int64_t begin = 0; begin < rows; begin += block) {
    const int64_t n = std::min(block, rows - begin);
    const at::Tensor x = hidden.narrow(0, begin, n);  // [n, D]
    at::Tensor z = logits.narrow(0, 0, n);
    MatmulInto(z, x, weight.t());
    if (fused) {
      const at::Tensor block_targets = targets.narrow(0, begin, n);  // [n]
      if (grad_hidden == nullptr) {
        total += SoftmaxCrossEntropySum(z, block_targets, nullptr);
      } else {
        at::Tensor grad_logits_op = bf16_operands ? probs.narrow(0, 0, n) : z;
        total += SoftmaxCrossEntropySum(z, block_targets, &grad_logits_op,
                                        /*round_to_bf16=*/precision == BF16 && !bf16_operands);
        at::Tensor gh = grad_hidden->narrow(0, begin, n);
        MatmulInto(gh, grad_logits_op, weight);
        MatmulInto(*grad_weight, grad_logits_op.t(), x, /*accumulate=*/true);
      }
      continue;
    }
    const at::Tensor index = targets.narrow(0, begin, n).unsqueeze(1);  // [n, 1]
    at::Tensor p = probs.narrow(0, 0, n);
    // softmax, not log_softmax: the gradient needs the probabilities, and
    // one exp pass over the block instead of two saved ~15 ms of a 450 ms
    // bench_lm step.
    at::_softmax_out(p, z, 1, /*half_to_float=*/false);
    total -= TargetLogProbSum(p, z, index);
    if (grad_hidden == nullptr) continue;
    const at::Tensor& grad_logits = SubtractOneHot(p, index);
    at::Tensor gh = grad_hidden->narrow(0, begin, n);
    const at::Tensor grad_logits_op = MatmulOperandInPlace(grad_logits, precision);
    MatmulInto(gh, grad_logits_op, weight);
    MatmulInto(*grad_weight, grad_logits_op.t(), x, /*accumulate=*/true);
  }
  return total;
}

class MeanLinearCrossEntropyFunction
    : public torch::autograd::Function<MeanLinearCrossEntropyFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& hidden,
                            const at::Tensor& weight, const at::Tensor& targets,
                            int64_t precision) {
    at::Tensor grad_hidden = at::empty_like(hidden);
    at::Tensor grad_weight = at::zeros_like(weight);
    const double sum = LinearCrossEntropySum(
        hidden, weight, targets, static_cast<Precision>(precision), &grad_hidden, &grad_weight);
    const double inverse_rows = 1.0 / static_cast<double>(hidden.size(0));
    grad_hidden.mul_(inverse_rows);
    grad_weight.mul_(inverse_rows);
    ctx->save_for_backward({grad_hidden, grad_weight});
    return at::scalar_tensor(sum * inverse_rows, hidden.options());
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    // Scaled in place: a second backward through the same graph fails when
    // unpacking instead of reading a scaled gradient.
    const variable_list saved = ctx->get_saved_variables();
    const at::Tensor& g = grad_outputs[0];
    return {saved[0].mul_(g), saved[1].mul_(g), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

at::Tensor MeanLinearCrossEntropy(const at::Tensor& hidden, const at::Tensor& weight,
                                  const at::Tensor& targets) {
  TORCH_CHECK(hidden.dim() == 2 && weight.dim() == 2 && targets.dim() == 1 &&
                  hidden.size(1) == weight.size(1) && targets.size(0) == hidden.size(0),
              "MeanLinearCrossEntropy: hidden must be [N, D], weight [V, D] and "
              "targets [N], got ",
              hidden.sizes(), ", ", weight.sizes(), " and ", targets.sizes());
  TORCH_CHECK((hidden.scalar_type() == at::kFloat || hidden.scalar_type() == at::kDouble) &&
                  weight.scalar_type() == hidden.scalar_type(),
              "MeanLinearCrossEntropy: hidden and weight must both be float or both double");
  if (!at::GradMode::is_enabled() || (!hidden.requires_grad() && !weight.requires_grad())) {
    const double sum =
        LinearCrossEntropySum(hidden, weight, targets, CurrentPrecision(), nullptr, nullptr);
    return at::scalar_tensor(sum / static_cast<double>(hidden.size(0)), hidden.options());
  }
  return MeanLinearCrossEntropyFunction::apply(hidden, weight, targets,
                                               static_cast<int64_t>(CurrentPrecision()));
}

at::Tensor MeanCrossEntropy(const at::Tensor& logits, const at::Tensor& targets) {
  TORCH_CHECK(logits.dim() == 2 && targets.dim() == 1 && targets.size(0) == logits.size(0),
              "MeanCrossEntropy: logits must be [N, V] and targets [N], got ", logits.sizes(),
              " and ", targets.sizes());
  return MeanCrossEntropyFunction::apply(logits, targets);
}

}  // namespace moelab
