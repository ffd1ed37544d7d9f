#include "models/cross_entropy.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/generated/variable_factories.h>
#include <torch/utils.h>

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
    at::Tensor logits =
        (torch::randn({7, 11}, dtype) * 30).requires_grad_(true);
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
  const at::Tensor logits =
      torch::tensor({0.0, std::log(3.0), 5.0, 5.0}, at::kDouble).view({2, 2});
  const at::Tensor targets = torch::tensor({1, 0}, at::kLong);
  EXPECT_NEAR(MeanCrossEntropy(logits, targets).item<double>(),
              (std::log(4.0) - std::log(3.0) + std::log(2.0)) / 2, 1e-12);
}

TEST(MeanCrossEntropyTest, SecondBackwardThroughTheSameGraphFails) {
  at::Tensor logits = torch::randn({3, 4}).requires_grad_(true);
  const at::Tensor loss =
      MeanCrossEntropy(logits, torch::tensor({0, 1, 2}, at::kLong));
  loss.backward({}, /*retain_graph=*/true);
  EXPECT_ANY_THROW(loss.backward());
}

}  // namespace
}  // namespace moelab
