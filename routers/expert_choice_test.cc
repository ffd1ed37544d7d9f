#include "routers/expert_choice.h"

#include <ATen/ATen.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <memory>
#include <vector>

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
  spec.set_name("expert_choice");
  spec.set_top_k(k);
  return spec;
}

std::shared_ptr<Router> IdentityGateRouter(const RouterSpec& spec, int64_t experts) {
  auto router = ResolveAndCreate(spec, RouterDims{experts, experts, 2, false});
  EXPECT_TRUE(router.ok()) << router.status();
  SetParameter(**router, "gate_weight", at::eye(experts));
  return *router;
}

// Logits = log r for these rows of r (each sums to one), so softmax gives r.
at::Tensor HandHidden() {
  return at::log(at::tensor({.5, .3, .2, .1, .2, .7, .6, .1, .3, .25, .15, .6}).to(at::kFloat))
      .reshape({1, 4, 3});
}

TEST(ExpertChoiceTest, DefaultCapacityByHand) {
  // c = min(4, ceil(1.0 * 4 * 1 / 3)) = 2 tokens per expert.
  auto router = IdentityGateRouter(Spec(1), 3);
  RoutingDecision d = router->Route(HandHidden(), Context(false));
  ExpectWellFormed(d, 1, 4, 3);
  ExpectTensorNear(d.gate_probs, {.5, .3, .2, .1, .2, .7, .6, .1, .3, .25, .15, .6});
  // Expert 0 takes t2 (.6) and t0 (.5); expert 1 t0 (.3) and t1 (.2);
  // expert 2 t1 (.7) and t3 (.6). t0 gets two experts, t2 and t3 one.
  ExpectTensorNear(d.combine_weights, {.5, .3, 0, 0, .2, .7, .6, 0, 0, 0, 0, .6});
  EXPECT_FALSE(d.dropped.defined());
}

TEST(ExpertChoiceTest, LargerCapacityByHand) {
  // c = ceil(2 * 4 * 1 / 3) = 3.
  RouterSpec spec = Spec(1);
  spec.mutable_expert_choice()->set_capacity_factor(2.0);
  auto router = IdentityGateRouter(spec, 3);
  RoutingDecision d = router->Route(HandHidden(), Context(false));
  ExpectTensorNear(d.combine_weights, {.5, .3, 0, 0, .2, .7, .6, 0, .3, .25, .15, .6});
}

TEST(ExpertChoiceTest, CapacityIsClampedToTheSequence) {
  EXPECT_EQ(ExpertChoiceCapacity(1.0, 4, 1, 3), 2);
  EXPECT_EQ(ExpertChoiceCapacity(1.0, 64, 2, 8), 16);
  EXPECT_EQ(ExpertChoiceCapacity(4.0, 4, 3, 3), 4);
  RouterSpec spec = Spec(3);
  spec.mutable_expert_choice()->set_capacity_factor(4.0);
  auto router = IdentityGateRouter(spec, 3);
  RoutingDecision d = router->Route(HandHidden(), Context(false));
  EXPECT_TRUE(d.selected.all().item<bool>());
}

TEST(ExpertChoiceTest, EachExpertTakesExactlyCTokensPerSequence) {
  torch::manual_seed(2);
  for (float factor : {0.5f, 1.0f, 2.0f}) {
    for (int k : {1, 2}) {
      RouterSpec spec = Spec(k);
      spec.mutable_expert_choice()->set_capacity_factor(factor);
      auto router = ResolveAndCreate(spec, RouterDims{8, 4, 2, false});
      ASSERT_TRUE(router.ok()) << router.status();
      RoutingDecision d = (*router)->Route(at::randn({3, 10, 8}), Context(true));
      ExpectWellFormed(d, 3, 10, 4);
      const int64_t c = ExpertChoiceCapacity(factor, 10, k, 4);
      EXPECT_TRUE((d.selected.sum(1) == c).all().item<bool>());
      // Every selected token scores the expert at least as high as every
      // unselected one of the same sequence.
      at::Tensor r = d.gate_probs.detach();
      at::Tensor lowest_taken = r.masked_fill(~d.selected, 2.0).amin(1);
      at::Tensor highest_left = r.masked_fill(d.selected, -1.0).amax(1);
      EXPECT_TRUE((lowest_taken >= highest_left).all().item<bool>());
      EXPECT_TRUE(at::allclose(d.combine_weights, r * d.selected.to(at::kFloat)));
      EXPECT_TRUE(at::allclose(r.sum(-1), at::ones({3, 10})));
    }
  }
}

TEST(ExpertChoiceTest, SequencesAreIndependent) {
  torch::manual_seed(4);
  auto router = ResolveAndCreate(Spec(2), RouterDims{8, 4, 2, false});
  ASSERT_TRUE(router.ok());
  at::Tensor hidden = at::randn({2, 6, 8});
  RoutingDecision both = (*router)->Route(hidden, Context(false));
  RoutingDecision second = (*router)->Route(hidden.slice(0, 1, 2), Context(false));
  EXPECT_TRUE(at::equal(both.selected.slice(0, 1, 2), second.selected));
}

TEST(ExpertChoiceTest, GradientReachesGateWeight) {
  torch::manual_seed(6);
  RouterSpec spec = Spec(2);
  spec.set_load_balance_coef(0.01f);
  auto router = ResolveAndCreate(spec, RouterDims{8, 4, 2, false});
  ASSERT_TRUE(router.ok());
  RoutingDecision d = (*router)->Route(at::randn({2, 5, 8}), Context(true));
  ASSERT_EQ(d.aux_losses.size(), 1u);
  at::Tensor loss =
      (d.combine_weights * at::arange(4).to(at::kFloat)).sum() + d.aux_losses[0].second;
  loss.backward();
  at::Tensor grad = Parameter(**router, "gate_weight").grad();
  ASSERT_TRUE(grad.defined());
  EXPECT_TRUE(at::isfinite(grad).all().item<bool>());
  EXPECT_GT(grad.abs().sum().item<float>(), 0);
}

TEST(ExpertChoiceTest, NotCausal) {
  auto router = ResolveAndCreate(Spec(1), RouterDims{8, 4, 2, true});
  ASSERT_TRUE(router.ok());
  EXPECT_FALSE((*router)->IsCausal(true));
  EXPECT_FALSE((*router)->IsCausal(false));
}

TEST(ExpertChoiceTest, ResolveFillsDefaults) {
  const RouterRegistration* entry = *RouterRegistry().Find("expert_choice");
  RouterSpec spec = Spec(2);
  entry->resolve(&spec, RouterDims{8, 4, 2, true});
  ASSERT_TRUE(spec.has_expert_choice());
  EXPECT_TRUE(spec.expert_choice().has_capacity_factor());
  EXPECT_FLOAT_EQ(spec.expert_choice().capacity_factor(), 1.0f);
  EXPECT_FALSE(entry->fractional_top_k);
  spec.mutable_expert_choice()->set_capacity_factor(2.0f);
  entry->resolve(&spec, RouterDims{8, 4, 2, true});
  EXPECT_FLOAT_EQ(spec.expert_choice().capacity_factor(), 2.0f);
}

TEST(ExpertChoiceTest, RejectsBadOptions) {
  const RouterDims dims{8, 4, 2, true};
  RouterSpec spec = Spec(2);
  spec.mutable_expert_choice()->set_capacity_factor(0);
  auto router = ResolveAndCreate(spec, dims);
  ASSERT_FALSE(router.ok());
  EXPECT_THAT(router.status().message(),
              HasSubstr("router.expert_choice.capacity_factor: must be > 0"));
  spec = Spec(2);
  spec.mutable_token_choice();
  router = ResolveAndCreate(spec, dims);
  ASSERT_FALSE(router.ok());
  EXPECT_THAT(router.status().message(), HasSubstr("router.expert_choice"));
  router = ResolveAndCreate(Spec(0.5), dims);
  ASSERT_FALSE(router.ok());
  EXPECT_THAT(router.status().message(), HasSubstr("router.top_k"));
}

}  // namespace
}  // namespace moelab
