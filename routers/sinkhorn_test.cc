#include "routers/sinkhorn.h"

#include <ATen/ATen.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <memory>

#include "routers/testing/router_test_util.h"

namespace moelab {
namespace {

using ::moelab::testing::Context;
using ::moelab::testing::ExpectTensorNear;
using ::moelab::testing::ExpectWellFormed;
using ::moelab::testing::Parameter;
using ::moelab::testing::ResolveAndCreate;
using ::moelab::testing::SetParameter;
using ::testing::HasSubstr;

RouterSpec Spec(double k) {
  RouterSpec spec;
  spec.set_name("sinkhorn");
  spec.set_top_k(k);
  return spec;
}

// exp(logits) = [[3, 1], [2, 1]]. Both tokens prefer expert 0. The balanced
// matrix keeps the cross ratio (3 * 1) / (1 * 2) = 1.5 with rows and columns
// summing to 1/2, so it is [[a, 1/2 - a], [1/2 - a, a]] with
// a / (1/2 - a) = sqrt(1.5): a = sqrt(1.5) / (2 (1 + sqrt(1.5))).
at::Tensor HandHidden() {
  return at::log(at::tensor({3., 1., 2., 1.}).to(at::kFloat)).reshape({1, 2, 2});
}

TEST(SinkhornTest, BalancedMatrixByHand) {
  const double a = std::sqrt(1.5) / (2 * (1 + std::sqrt(1.5)));
  at::Tensor balanced =
      SinkhornLogBalance(at::log(at::tensor({3., 1., 2., 1.})).reshape({2, 2}), 50).exp();
  ExpectTensorNear(balanced, {a, .5 - a, .5 - a, a}, 1e-9);
}

TEST(SinkhornTest, TrainingBalancesEvaluationDoesNotByHand) {
  auto router = ResolveAndCreate(Spec(1), RouterDims{2, 2, 2, true});
  ASSERT_TRUE(router.ok()) << router.status();
  SetParameter(**router, "gate_weight", at::eye(2));
  // Evaluation: both tokens take expert 0, weights sigmoid(log 3) = 3/4 and
  // sigmoid(log 2) = 2/3.
  RoutingDecision eval = (*router)->Route(HandHidden(), Context(false));
  ExpectWellFormed(eval, 1, 2, 2);
  ExpectTensorNear(eval.combine_weights, {.75, 0, 2. / 3, 0});
  // Training: the balanced matrix sends token 1 to expert 1, weight
  // sigmoid(0) = 1/2.
  RoutingDecision train = (*router)->Route(HandHidden(), Context(true));
  ExpectWellFormed(train, 1, 2, 2);
  ExpectTensorNear(train.combine_weights, {.75, 0, 0, .5});
  ExpectTensorNear(train.gate_probs, {.75, .25, 2. / 3, 1. / 3});
}

TEST(SinkhornTest, RowsAndColumnsConverge) {
  torch::manual_seed(1);
  at::Tensor logits = 3 * at::randn({40, 5}, at::kDouble);
  at::Tensor balanced = SinkhornLogBalance(logits, 200).exp();
  EXPECT_TRUE(at::allclose(balanced.sum(1), at::full({40}, 1.0 / 40, at::kDouble), 1e-6, 1e-8));
  EXPECT_TRUE(at::allclose(balanced.sum(0), at::full({5}, 1.0 / 5, at::kDouble)));
  // Huge logits do not overflow in the log domain.
  EXPECT_TRUE(at::isfinite(SinkhornLogBalance(logits * 1000, 8)).all().item<bool>());
}

TEST(SinkhornTest, TrainingSpreadsTokensNearlyEvenly) {
  torch::manual_seed(2);
  for (int k : {1, 2}) {
    auto router = ResolveAndCreate(Spec(k), RouterDims{8, 4, 2, false});
    ASSERT_TRUE(router.ok());
    // A gate that strongly prefers expert 0, then 1.
    SetParameter(
        **router, "gate_weight",
        at::randn({4, 8}) * 0.3 +
            at::tensor({3., 1., 0., -1.}).to(at::kFloat).unsqueeze(1) * at::ones({1, 8}) / 8);
    at::Tensor hidden = at::randn({4, 128, 8}) + 1;
    const double fair = 512.0 * k / 4;
    at::Tensor eval_load =
        (*router)->Route(hidden, Context(false)).selected.sum(at::IntArrayRef{0, 1}).to(at::kFloat);
    at::Tensor train_load =
        (*router)->Route(hidden, Context(true)).selected.sum(at::IntArrayRef{0, 1}).to(at::kFloat);
    EXPECT_GT(eval_load.max().item<float>(), 1.5 * fair) << eval_load;
    EXPECT_TRUE(((train_load - fair).abs() < 0.15 * fair).all().item<bool>()) << train_load;
  }
}

TEST(SinkhornTest, GradientReachesGateWeight) {
  torch::manual_seed(3);
  for (bool training : {true, false}) {
    auto router = ResolveAndCreate(Spec(2), RouterDims{8, 4, 2, false});
    ASSERT_TRUE(router.ok());
    RoutingDecision d = (*router)->Route(at::randn({2, 6, 8}), Context(training));
    ExpectWellFormed(d, 2, 6, 4);
    EXPECT_TRUE((d.selected.sum(-1) == 2).all().item<bool>());
    (d.combine_weights * at::arange(4).to(at::kFloat)).sum().backward();
    at::Tensor grad = Parameter(**router, "gate_weight").grad();
    ASSERT_TRUE(grad.defined());
    EXPECT_TRUE(at::isfinite(grad).all().item<bool>());
    EXPECT_GT(grad.abs().sum().item<float>(), 0);
  }
}

TEST(SinkhornTest, DefaultsDeclarationsAndErrors) {
  const RouterDims dims{8, 4, 2, true};
  RouterSpec spec = Spec(2);
  (*RouterRegistry().Find("sinkhorn"))->resolve(&spec, dims);
  EXPECT_EQ(spec.sinkhorn().iterations(), 8);
  auto router = ResolveAndCreate(spec, dims);
  ASSERT_TRUE(router.ok());
  EXPECT_FALSE((*router)->IsCausal(true));
  EXPECT_FALSE((*router)->IsCausal(false));

  spec = Spec(2);
  spec.mutable_sinkhorn()->set_iterations(0);
  auto bad = ResolveAndCreate(spec, dims);
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.status().message(), HasSubstr("router.sinkhorn.iterations: must be >= 1, got 0"));
  bad = ResolveAndCreate(Spec(0), dims);
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.status().message(), HasSubstr("router.top_k"));
  spec = Spec(2);
  spec.mutable_hash();
  bad = ResolveAndCreate(spec, dims);
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.status().message(), HasSubstr("router.sinkhorn"));
}

}  // namespace
}  // namespace moelab
