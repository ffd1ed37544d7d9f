#include "models/cross_entropy.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/generated/variable_factories.h>
#include <torch/utils.h>

#include <cmath>

#include "gtest/gtest.h"

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

TEST(MeanLinearCrossEntropyTest, SecondBackwardThroughTheSameGraphFails) {
  at::Tensor hidden = torch::randn({3, 4}).requires_grad_(true);
  const at::Tensor loss =
      MeanLinearCrossEntropy(hidden, torch::randn({5, 4}), torch::tensor({0, 1, 4}, at::kLong));
  loss.backward({}, /*retain_graph=*/true);
  EXPECT_ANY_THROW(loss.backward());
}

}  // namespace
}  // namespace moelab
