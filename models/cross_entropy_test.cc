#include "models/cross_entropy.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/generated/variable_factories.h>
#include <torch/utils.h>

#include <cmath>

#include "core/precision.h"
#include "gtest/gtest.h"
#include "models/matmul.h"

namespace moelab {
namespace {

double MaxAbsDiff(const at::Tensor& a, const at::Tensor& b) {
  return (a - b).abs().max().item<double>();
}

TEST(MeanCrossEntropyTest, MatchesAtenValuesAndGradients) {
  torch::manual_seed(0);
  for (at::ScalarType dtype : {at::kDouble, at::kFloat}) {
    const double tol = dtype == at::kDouble ? 1e-12 : 1e-5;
    // Large logits check the max subtraction.
    at::Tensor logits = (torch::randn({7, 11}, dtype) * 30).requires_grad_(true);
    const at::Tensor targets = torch::randint(11, {7}, at::kLong);
    const at::Tensor loss = MeanCrossEntropy(logits, targets);
    const at::Tensor expected = at::cross_entropy_loss(logits, targets);
    EXPECT_LT(MaxAbsDiff(loss, expected), tol * 30);
    // A scaled upstream gradient, as in loss * coefficient.
    auto grad = torch::autograd::grad({loss * 3.0}, {logits});
    auto grad_expected = torch::autograd::grad({expected * 3.0}, {logits});
    EXPECT_LT(MaxAbsDiff(grad[0], grad_expected[0]), tol);
  }
}

TEST(MeanCrossEntropyTest, HandComputedValue) {
  // Row 0: logsumexp(0, ln 3) = ln 4, target 1 -> ln 4 - ln 3.
  // Row 1: uniform over 2, target 0 -> ln 2.
  const at::Tensor logits = torch::tensor({0.0, std::log(3.0), 5.0, 5.0}, at::kDouble).view({2, 2});
  const at::Tensor targets = torch::tensor({1, 0}, at::kLong);
  EXPECT_NEAR(MeanCrossEntropy(logits, targets).item<double>(),
              (std::log(4.0) - std::log(3.0) + std::log(2.0)) / 2, 1e-12);
}

TEST(MeanCrossEntropyTest, SecondBackwardThroughTheSameGraphFails) {
  at::Tensor logits = torch::randn({3, 4}).requires_grad_(true);
  const at::Tensor loss = MeanCrossEntropy(logits, torch::tensor({0, 1, 2}, at::kLong));
  loss.backward({}, /*retain_graph=*/true);
  EXPECT_ANY_THROW(loss.backward());
}

TEST(MeanLinearCrossEntropyTest, MatchesAtenOnLogitsAcrossPartialBlocks) {
  torch::manual_seed(1);
  // V = 30000 gives blocks of 139 rows: 300 rows are two full blocks and a
  // partial one.
  constexpr int64_t kRows = 300, kDim = 8, kVocab = 30000;
  for (at::ScalarType dtype : {at::kDouble, at::kFloat}) {
    const double tol = dtype == at::kDouble ? 1e-12 : 2e-5;
    at::Tensor hidden = torch::randn({kRows, kDim}, dtype).requires_grad_(true);
    at::Tensor weight = (torch::randn({kVocab, kDim}, dtype) * 0.5).requires_grad_(true);
    const at::Tensor targets = torch::randint(kVocab, {kRows}, at::kLong);
    const at::Tensor loss = MeanLinearCrossEntropy(hidden, weight, targets);
    const at::Tensor expected = at::cross_entropy_loss(at::matmul(hidden, weight.t()), targets);
    EXPECT_LT(MaxAbsDiff(loss, expected), tol * 10);
    auto grads = torch::autograd::grad({loss * 3.0}, {hidden, weight});
    auto expected_grads = torch::autograd::grad({expected * 3.0}, {hidden, weight});
    EXPECT_LT(MaxAbsDiff(grads[0], expected_grads[0]), tol);
    EXPECT_LT(MaxAbsDiff(grads[1], expected_grads[1]), tol);
    {
      at::NoGradGuard no_grad;  // the loss-only path
      EXPECT_LT(MaxAbsDiff(MeanLinearCrossEntropy(hidden, weight, targets), expected), tol * 10);
    }
  }
}

TEST(MeanLinearCrossEntropyTest, TargetFarBelowTheMaximumKeepsAFiniteExactLoss) {
  // Logits (0, 200, -300) for target 0 and (1, 0, 0) for target 0: the first
  // target's float softmax probability underflows to 0, yet its loss is
  // logsumexp - logit = 200 + log(1 + e^-200 + e^-500) = 200 (to 1e-80).
  const at::Tensor hidden = torch::tensor({{1.0f, 0.0f}, {0.0f, 1.0f}});
  const at::Tensor weight = torch::tensor({{0.0f, 1.0f}, {200.0f, 0.0f}, {-300.0f, 0.0f}});
  const at::Tensor targets = torch::tensor({0, 0}, at::kLong);
  const double second_row = std::log(std::exp(1.0) + 2.0) - 1.0;
  const double expected = (200.0 + second_row) / 2.0;
  EXPECT_NEAR(MeanLinearCrossEntropy(hidden, weight, targets).item<double>(), expected, 1e-4);
  const at::Tensor hidden_grad = hidden.clone().requires_grad_(true);
  const at::Tensor loss = MeanLinearCrossEntropy(hidden_grad, weight, targets);
  EXPECT_NEAR(loss.item<double>(), expected, 1e-4);
  loss.backward();
  // Row 0: softmax is (0, 1, 0), minus onehot(0) gives (-1, 1, 0); times the
  // weight rows and halved: (-0 + 200, -1 + 0) / 2 = (100, -0.5).
  EXPECT_NEAR(hidden_grad.grad()[0][0].item<double>(), 100.0, 1e-4);
  EXPECT_NEAR(hidden_grad.grad()[0][1].item<double>(), -0.5, 1e-4);
}

TEST(MeanLinearCrossEntropyTest, HandComputedValue) {
  // hidden · weightᵀ gives the logits of HandComputedValue above.
  const at::Tensor hidden = torch::tensor({1.0, 0.0, 0.0, 5.0}, at::kDouble).view({2, 2});
  const at::Tensor weight = torch::tensor({0.0, 1.0, std::log(3.0), 1.0}, at::kDouble).view({2, 2});
  const at::Tensor targets = torch::tensor({1, 0}, at::kLong);
  EXPECT_NEAR(MeanLinearCrossEntropy(hidden, weight, targets).item<double>(),
              (std::log(4.0) - std::log(3.0) + std::log(2.0)) / 2, 1e-12);
}

// Under BF16 with its operands held in fp32 (models/matmul.h), each block's
// logit gradient is rounded in place for the backward products after the
// loss has read the block's probabilities. On inputs that already hold bf16
// values the logits are FP32's to the bit, so the loss must be too. A
// vocabulary of 2^18 makes the blocks 16 rows: three blocks here, the last
// partial, through one reused buffer.
TEST(MeanLinearCrossEntropyTest, Bf16LossIsTheFp32LossOfRoundedInputs) {
  const Bf16Operands saved_storage = CurrentBf16Operands();
  SetBf16Operands(Bf16Operands::kRoundedFp32);
  torch::manual_seed(12);
  const auto bf16_values = [](const at::Tensor& t) { return t.to(at::kBFloat16).to(at::kFloat); };
  const at::Tensor hidden = bf16_values(torch::randn({40, 32}));
  const at::Tensor weight = bf16_values(torch::randn({1 << 18, 32}) * 0.2);
  const at::Tensor targets = torch::randint(1 << 18, {40}, at::kLong);
  double losses[2];
  at::Tensor grad_hidden[2];
  for (int run = 0; run < 2; ++run) {
    PrecisionScope precision(run == 0 ? FP32 : BF16);
    at::Tensor h = hidden.clone().requires_grad_();
    const at::Tensor loss = MeanLinearCrossEntropy(h, weight.clone().requires_grad_(), targets);
    loss.backward();
    losses[run] = loss.item<double>();
    grad_hidden[run] = h.grad();
  }
  SetBf16Operands(saved_storage);
  EXPECT_EQ(losses[1], losses[0]);
  // The backward products did take the rounded logit gradient.
  EXPECT_FALSE(grad_hidden[1].equal(grad_hidden[0]));
  EXPECT_LT(MaxAbsDiff(grad_hidden[1], grad_hidden[0]),
            2e-2 * grad_hidden[0].abs().max().item<double>());
}

TEST(MeanLinearCrossEntropyTest, SecondBackwardThroughTheSameGraphFails) {
  at::Tensor hidden = torch::randn({3, 4}).requires_grad_(true);
  const at::Tensor loss =
      MeanLinearCrossEntropy(hidden, torch::randn({5, 4}), torch::tensor({0, 1, 4}, at::kLong));
  loss.backward({}, /*retain_graph=*/true);
  EXPECT_ANY_THROW(loss.backward());
}

}  // namespace
}  // namespace moelab
