#include "routers/token_choice.h"

#include <ATen/ATen.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <tuple>
#include <vector>

#include "routers/testing/router_test_util.h"

namespace moelab {
namespace {

using ::moelab::testing::Context;
using ::moelab::testing::ExpectTensorNear;
using ::moelab::testing::ExpectWellFormed;
using ::moelab::testing::Mask;
using ::moelab::testing::Parameter;
using ::moelab::testing::ResolveAndCreate;
using ::moelab::testing::SetParameter;
using ::testing::HasSubstr;

RouterSpec Spec(double k) {
  RouterSpec spec;
  spec.set_name("token_choice");
  spec.set_top_k(k);
  return spec;
}

// With gate_weight = I (D = E) the logits are the hidden states, so logs of
// small integers give hand-checkable softmax values.
std::shared_ptr<Router> IdentityGateRouter(const RouterSpec& spec, int64_t experts) {
  auto router = ResolveAndCreate(spec, RouterDims{experts, experts, 2, true});
  EXPECT_TRUE(router.ok()) << router.status();
  SetParameter(**router, "gate_weight", at::eye(experts));
  return *router;
}

// Three tokens over three experts. r rows: [1,2,5]/8, [6,3,1]/10, [1,4,3]/8.
at::Tensor HandLogits() {
  return at::log(at::tensor({1.0, 2.0, 5.0, 6.0, 3.0, 1.0, 1.0, 4.0, 3.0}).to(at::kFloat))
      .reshape({1, 3, 3});
}

TEST(TokenChoiceTest, TopTwoByHand) {
  auto router = IdentityGateRouter(Spec(2), 3);
  RoutingDecision d = router->Route(HandLogits(), Context(false));
  ExpectWellFormed(d, 1, 3, 3);
  ExpectTensorNear(d.gate_probs, {.125, .25, .625, .6, .3, .1, .125, .5, .375});
  ExpectTensorNear(d.combine_weights, {0, .25, .625, .6, .3, 0, 0, .5, .375});
  EXPECT_FALSE(d.dropped.defined());
  EXPECT_TRUE(d.aggregated_probs.defined() == false);
}

TEST(TokenChoiceTest, RenormalisedByHand) {
  RouterSpec spec = Spec(2);
  spec.mutable_token_choice()->set_renormalize(true);
  auto router = IdentityGateRouter(spec, 3);
  RoutingDecision d = router->Route(HandLogits(), Context(false));
  ExpectTensorNear(d.combine_weights,
                   {0, 2.0 / 7, 5.0 / 7, 6.0 / 9, 3.0 / 9, 0, 0, 4.0 / 7, 3.0 / 7});
}

TEST(TokenChoiceTest, SigmoidGateByHand) {
  RouterSpec spec = Spec(1);
  spec.mutable_token_choice()->set_gate(SIGMOID);
  auto router = IdentityGateRouter(spec, 3);
  // sigmoid(log a) = a / (1 + a).
  RoutingDecision d = router->Route(HandLogits(), Context(false));
  ExpectTensorNear(d.gate_probs, {.5, 2.0 / 3, 5.0 / 6, 6.0 / 7, .75, .5, .5, .8, .75});
  ExpectTensorNear(d.combine_weights, {0, 0, 5.0 / 6, 6.0 / 7, 0, 0, 0, .8, 0});
}

// C = ceil(1.0 * 3 * 2 / 3) = 2. Expert 1 is chosen by all three tokens:
// t0 (2nd choice, r .25), t1 (2nd choice, .3), t2 (1st choice, .5).
TEST(TokenChoiceTest, DropByScoreByHand) {
  RouterSpec spec = Spec(2);
  spec.mutable_token_choice()->set_capacity_factor(1.0);
  auto router = IdentityGateRouter(spec, 3);
  RoutingDecision d = router->Route(HandLogits(), Context(false));
  ExpectWellFormed(d, 1, 3, 3);
  // Expert 1 keeps t2 (.5) and t1 (.3); t0 loses it.
  ExpectTensorNear(d.combine_weights, {0, 0, .625, .6, .3, 0, 0, .5, .375});
  ASSERT_TRUE(d.dropped.defined());
  EXPECT_TRUE(at::equal(d.dropped, Mask({1, 0, 0}, {1, 3})));
  EXPECT_FALSE(router->IsCausal(true));
}

TEST(TokenChoiceTest, DropByPositionByHand) {
  RouterSpec spec = Spec(2);
  spec.mutable_token_choice()->set_capacity_factor(1.0);
  spec.mutable_token_choice()->set_drop_policy(DROP_BY_POSITION);
  spec.mutable_token_choice()->set_renormalize(true);
  auto router = IdentityGateRouter(spec, 3);
  RoutingDecision d = router->Route(HandLogits(), Context(false));
  // Expert 1's queue: t2 (a first choice), then t0, then t1: t1 loses it.
  // Weights were renormalised before dropping and are not renormalised again.
  ExpectTensorNear(d.combine_weights, {0, 2.0 / 7, 5.0 / 7, 6.0 / 9, 0, 0, 0, 4.0 / 7, 3.0 / 7});
  EXPECT_TRUE(at::equal(d.dropped, Mask({0, 1, 0}, {1, 3})));
}

// The load-balance loss of DropByScoreByHand (coefficient 1):
// P = mean r = [17, 21, 22] / 60. Choices before capacity: expert counts
// [1, 3, 2] of 6, f = [1, 3, 2] / 6 -> 3 * 124 / 360 = 31/30 (the overloaded
// expert 1 counts all three tokens that chose it). Pairs kept after
// capacity: [1, 2, 2] of 5 -> 3 * 103 / 300 = 103/100.
TEST(TokenChoiceTest, LoadBalanceCountsChoicesBeforeCapacityByHand) {
  for (LoadBalanceCounting counting :
       {LOAD_BALANCE_COUNTING_UNSPECIFIED, CHOICES_BEFORE_CAPACITY, PAIRS_AFTER_CAPACITY}) {
    RouterSpec spec = Spec(2);
    spec.mutable_token_choice()->set_capacity_factor(1.0);
    spec.set_load_balance_coef(1.0);
    spec.set_load_balance_counting(counting);
    auto router = IdentityGateRouter(spec, 3);
    RoutingDecision d = router->Route(HandLogits(), Context(false));
    ASSERT_EQ(d.aux_losses.size(), 1u);
    EXPECT_NEAR(d.aux_losses[0].second.item<double>(),
                counting == PAIRS_AFTER_CAPACITY ? 103.0 / 100 : 31.0 / 30, 1e-6)
        << counting;
  }
}

// Dropless with a softmax gate, the new conventions give the old loss
// (kept pairs, raw gate).
TEST(TokenChoiceTest, LoadBalanceIsTheOldOneWhenDroplessWithSoftmax) {
  torch::manual_seed(4);
  const at::Tensor hidden = at::randn({2, 7, 8});
  const at::Tensor gate = at::randn({4, 8});
  std::vector<double> losses;
  for (bool old : {false, true}) {
    RouterSpec spec = Spec(2);
    spec.set_load_balance_coef(1.0);
    if (old) {
      spec.set_load_balance_counting(PAIRS_AFTER_CAPACITY);
      spec.set_load_balance_scores(RAW_GATE);
    }
    auto router = ResolveAndCreate(spec, RouterDims{8, 4, 2, true});
    ASSERT_TRUE(router.ok()) << router.status();
    SetParameter(**router, "gate_weight", gate);
    losses.push_back((*router)->Route(hidden, Context(false)).aux_losses[0].second.item<double>());
  }
  EXPECT_NEAR(losses[0], losses[1], 1e-6);
  EXPECT_GT(losses[0], 1.0);  // a random gate is not perfectly balanced
}

// Sigmoid gate, k = 1: r rows [1/2, 2/3, 5/6], [6/7, 3/4, 1/2],
// [1/2, 4/5, 3/4]; the tokens choose experts 2, 0, 1: f = 1/3 each.
// NORMALIZED_OVER_EXPERTS: each row of P sums to one, so with f balanced the
// loss is exactly 1 for any scores (an identity, not a test of the gate).
// RAW_GATE: E * sum_e f_e P_e = mean row sum = (2 + 59/28 + 41/20) / 3.
// Pushing every logit down by 5 keeps the choices: the raw loss falls, the
// normalised one stays 1.
// Imbalanced, two experts: logits [[2, 0], [1.5, -1]] + c, both tokens
// choose expert 0 at every c (f = [1, 0]), loss = the sum of the tokens'
// expert-0 scores, s the sigmoid. NORMALIZED: s(2+c)/(s(2+c)+s(c)) +
// s(1.5+c)/(s(1.5+c)+s(-1+c)) = 2/(3+e^-2) + (1+e)/(2+e+e^-1.5) = 1.3904 at
// c = 0, 1.8049 (the softmax gate's s(2) + s(2.5)) at c = -20, 1.00004 at
// c = +10: down cannot drive it toward 0, up lowers it toward 1 with the
// routing still one-sided. RAW: s(2+c) + s(1.5+c) = 1.6984, 2.4e-8, 1.99998.
TEST(TokenChoiceTest, LoadBalanceScoresOfASigmoidGateByHand) {
  for (double shift : {0.0, 5.0}) {
    for (LoadBalanceScores scores : {NORMALIZED_OVER_EXPERTS, RAW_GATE}) {
      RouterSpec spec = Spec(1);
      spec.mutable_token_choice()->set_gate(SIGMOID);
      spec.set_load_balance_coef(1.0);
      spec.set_load_balance_scores(scores);
      auto router = IdentityGateRouter(spec, 3);
      RoutingDecision d = router->Route(HandLogits() - shift, Context(false));
      EXPECT_TRUE(at::equal(d.selected, Mask({0, 0, 1, 1, 0, 0, 0, 1, 0}, {1, 3, 3})));
      const double loss = d.aux_losses[0].second.item<double>();
      if (scores == NORMALIZED_OVER_EXPERTS) {
        EXPECT_NEAR(loss, 1.0, 1e-6) << "shift " << shift;
      } else if (shift == 0) {
        EXPECT_NEAR(loss, (2 + 59.0 / 28 + 41.0 / 20) / 3, 1e-6);
      } else {
        EXPECT_LT(loss, 0.1);
      }
    }
  }

  const auto s = [](double y) { return 1 / (1 + std::exp(-y)); };
  const at::Tensor imbalanced = at::tensor({2.0, 0.0, 1.5, -1.0}).to(at::kFloat).reshape({1, 2, 2});
  for (double shift : {0.0, -20.0, 10.0}) {
    for (LoadBalanceScores scores : {NORMALIZED_OVER_EXPERTS, RAW_GATE}) {
      RouterSpec spec = Spec(1);
      spec.mutable_token_choice()->set_gate(SIGMOID);
      spec.set_load_balance_coef(1.0);
      spec.set_load_balance_scores(scores);
      auto router = IdentityGateRouter(spec, 2);
      RoutingDecision d = router->Route(imbalanced + shift, Context(false));
      EXPECT_TRUE(at::equal(d.selected, Mask({1, 0, 1, 0}, {1, 2, 2}))) << "shift " << shift;
      const double loss = d.aux_losses[0].second.item<double>();
      const double by_hand = scores == NORMALIZED_OVER_EXPERTS
                                 ? s(2 + shift) / (s(2 + shift) + s(shift)) +
                                       s(1.5 + shift) / (s(1.5 + shift) + s(-1 + shift))
                                 : s(2 + shift) + s(1.5 + shift);
      EXPECT_NEAR(loss, by_hand, 1e-5) << "shift " << shift << " scores " << scores;
      if (scores == NORMALIZED_OVER_EXPERTS) {
        const double expected = shift == 0  ? 1.3903639
                                : shift < 0 ? s(2) + s(2.5)  // 1.8049
                                            : 1.0000381;
        EXPECT_NEAR(loss, expected, 1e-5) << "shift " << shift;
      } else if (shift < 0) {
        EXPECT_LT(loss, 1e-6);
      }
    }
  }
}

// With k = 1, renormalising makes every combine weight r/r = 1: the gate
// would get no gradient from the task loss.
TEST(TokenChoiceTest, RenormalizeNeedsTwoExperts) {
  RouterSpec spec = Spec(1);
  spec.mutable_token_choice()->set_renormalize(true);
  auto router = ResolveAndCreate(spec, RouterDims{8, 4, 2, true});
  ASSERT_FALSE(router.ok());
  EXPECT_EQ(router.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(router.status().message(),
            "router.token_choice.renormalize: with top_k = 1 every combine "
            "weight is r/r = 1, so the task loss gives the gate zero gradient "
            "(only the load-balance loss would train it); set renormalize: "
            "false (Switch-style) or top_k >= 2");
  spec.mutable_token_choice()->set_renormalize(false);
  EXPECT_TRUE(ResolveAndCreate(spec, RouterDims{8, 4, 2, true}).ok());
  spec = Spec(2);
  spec.mutable_token_choice()->set_renormalize(true);
  EXPECT_TRUE(ResolveAndCreate(spec, RouterDims{8, 4, 2, true}).ok());
}

TEST(TokenChoiceTest, CapacityFormula) {
  EXPECT_EQ(TokenChoiceCapacity(1.0, 3, 2, 3), 2);
  EXPECT_EQ(TokenChoiceCapacity(1.0, 4, 1, 3), 2);  // ceil(4/3)
  EXPECT_EQ(TokenChoiceCapacity(1.25, 64, 2, 8), 20);
  EXPECT_EQ(TokenChoiceCapacity(0.5, 10, 1, 4), 2);  // ceil(1.25)
}

TEST(TokenChoiceTest, ExactlyKExpertsPerTokenWithoutCapacity) {
  torch::manual_seed(1);
  for (int k = 1; k <= 4; ++k) {
    auto router = ResolveAndCreate(Spec(k), RouterDims{16, 6, 2, true});
    ASSERT_TRUE(router.ok()) << router.status();
    RoutingDecision d = (*router)->Route(at::randn({3, 7, 16}), Context(false));
    ExpectWellFormed(d, 3, 7, 6);
    EXPECT_TRUE((d.selected.sum(-1) == k).all().item<bool>());
    // Softmax gate, no renormalisation: the weights are r at the top-k.
    at::Tensor top = std::get<0>(at::topk(d.gate_probs, k, -1)).sum(-1);
    EXPECT_TRUE(at::allclose(d.combine_weights.sum(-1), top));
    EXPECT_TRUE((*router)->IsCausal(true));
    EXPECT_TRUE((*router)->IsCausal(false));
  }
}

// The capacity rule written as a plain loop over pairs, to compare against.
at::Tensor LoopCapacityReference(const at::Tensor& r, int64_t k, int64_t capacity,
                                 DropPolicy policy) {
  const int64_t n = r.size(0), e = r.size(1);
  at::Tensor order = std::get<1>(at::topk(r, k, -1));
  struct Pair {
    int64_t token, expert, rank;
    float score;
  };
  std::vector<Pair> pairs;
  for (int64_t t = 0; t < n; ++t) {
    for (int64_t j = 0; j < k; ++j) {
      const int64_t x = order[t][j].item<int64_t>();
      pairs.push_back({t, x, j, r[t][x].item<float>()});
    }
  }
  if (policy == DROP_BY_SCORE) {
    std::stable_sort(pairs.begin(), pairs.end(),
                     [](const Pair& a, const Pair& b) { return a.score > b.score; });
  } else {
    std::stable_sort(pairs.begin(), pairs.end(), [](const Pair& a, const Pair& b) {
      return a.rank != b.rank ? a.rank < b.rank : a.token < b.token;
    });
  }
  at::Tensor kept = at::zeros({n, e}, at::kBool);
  std::vector<int64_t> load(e, 0);
  for (const Pair& p : pairs) {
    if (load[p.expert] < capacity) {
      ++load[p.expert];
      kept[p.token][p.expert] = true;
    }
  }
  return kept;
}

TEST(TokenChoiceTest, CapacityMatchesLoopReferenceInBothPolicies) {
  for (DropPolicy policy : {DROP_BY_SCORE, DROP_BY_POSITION}) {
    for (float factor : {0.5f, 1.0f, 1.25f}) {
      for (int k : {1, 2}) {
        torch::manual_seed(7 + k);
        RouterSpec spec = Spec(k);
        spec.mutable_token_choice()->set_capacity_factor(factor);
        spec.mutable_token_choice()->set_drop_policy(policy);
        auto router = ResolveAndCreate(spec, RouterDims{8, 4, 2, true});
        ASSERT_TRUE(router.ok()) << router.status();
        // A skewed gate so that some experts overflow.
        SetParameter(
            **router, "gate_weight",
            at::randn({4, 8}) + at::tensor({2.0, 1.0, 0.0, -1.0}).to(at::kFloat).unsqueeze(1));
        RoutingDecision d = (*router)->Route(at::randn({2, 9, 8}), Context(false));
        ExpectWellFormed(d, 2, 9, 4);
        const int64_t capacity = TokenChoiceCapacity(factor, 18, k, 4);
        at::Tensor r = d.gate_probs.detach().reshape({18, 4});
        at::Tensor expected = LoopCapacityReference(r, k, capacity, policy);
        SCOPED_TRACE(::testing::Message()
                     << "policy " << policy << " factor " << factor << " k " << k);
        EXPECT_TRUE(at::equal(d.selected.reshape({18, 4}), expected));
        EXPECT_TRUE((d.selected.reshape({18, 4}).sum(0) <= capacity).all().item<bool>());
        at::Tensor chosen =
            at::zeros({18, 4}, at::kBool).scatter_(1, std::get<1>(at::topk(r, k, -1)), true);
        EXPECT_TRUE(at::equal(d.dropped.reshape({18}), (chosen & ~expected).any(-1)));
        // Kept pairs keep r, unrenormalised.
        EXPECT_TRUE(at::allclose(d.combine_weights.reshape({18, 4}), r * expected.to(at::kFloat)));
      }
    }
  }
}

TEST(TokenChoiceTest, SomethingIsDroppedUnderTightCapacity) {
  torch::manual_seed(3);
  RouterSpec spec = Spec(2);
  spec.mutable_token_choice()->set_capacity_factor(0.5);
  auto router = ResolveAndCreate(spec, RouterDims{8, 4, 2, true});
  ASSERT_TRUE(router.ok());
  RoutingDecision d = (*router)->Route(at::randn({2, 16, 8}), Context(false));
  // C = ceil(0.5 * 32 * 2 / 4) = 8 pairs per expert, 32 of 64 pairs fit.
  EXPECT_LE(d.selected.sum().item<int64_t>(), 32);
  EXPECT_TRUE(d.dropped.any().item<bool>());
}

TEST(TokenChoiceTest, GradientReachesGateWeight) {
  torch::manual_seed(5);
  for (bool renormalize : {false, true}) {
    RouterSpec spec = Spec(2);
    spec.mutable_token_choice()->set_renormalize(renormalize);
    spec.mutable_token_choice()->set_capacity_factor(1.0);
    spec.set_load_balance_coef(0.01f);
    spec.set_z_loss_coef(0.001f);
    auto router = ResolveAndCreate(spec, RouterDims{8, 4, 2, true});
    ASSERT_TRUE(router.ok());
    RoutingDecision d = (*router)->Route(at::randn({2, 5, 8}), Context(true));
    ASSERT_EQ(d.aux_losses.size(), 2u);
    at::Tensor loss = (d.combine_weights * at::arange(4).to(at::kFloat)).sum();
    for (const auto& [name, value] : d.aux_losses) loss = loss + value;
    loss.backward();
    at::Tensor grad = Parameter(**router, "gate_weight").grad();
    ASSERT_TRUE(grad.defined());
    EXPECT_TRUE(at::isfinite(grad).all().item<bool>());
    EXPECT_GT(grad.abs().sum().item<float>(), 0);
  }
}

TEST(TokenChoiceTest, JitterOnlyInTraining) {
  torch::manual_seed(11);
  RouterSpec spec = Spec(1);
  spec.mutable_token_choice()->set_jitter_eps(0.1f);
  auto router = ResolveAndCreate(spec, RouterDims{8, 4, 2, true});
  ASSERT_TRUE(router.ok());
  at::Tensor hidden = at::randn({1, 6, 8});
  at::Tensor plain = (*router)->Route(hidden, Context(false)).logits;
  EXPECT_TRUE(at::equal(plain, (*router)->Route(hidden, Context(false)).logits));
  at::Tensor jittered = (*router)->Route(hidden, Context(true)).logits;
  EXPECT_FALSE(at::allclose(plain, jittered));
  // Multiplicative noise within 10% moves each logit by at most
  // 0.1 * sum_d |x_d w_d|.
  at::Tensor bound = 0.1 * at::matmul(hidden.abs(), Parameter(**router, "gate_weight").abs().t());
  EXPECT_TRUE(((jittered - plain).abs() <= bound + 1e-6).all().item<bool>());
}

TEST(TokenChoiceTest, ResolveFillsDefaults) {
  const RouterRegistration* entry = *RouterRegistry().Find("token_choice");
  RouterSpec spec = Spec(2);
  entry->resolve(&spec, RouterDims{8, 4, 2, true});
  ASSERT_TRUE(spec.has_token_choice());
  EXPECT_EQ(spec.token_choice().gate(), SOFTMAX);
  EXPECT_EQ(spec.token_choice().drop_policy(), DROP_BY_SCORE);
  EXPECT_FALSE(entry->fractional_top_k);
  EXPECT_FALSE(entry->description.empty());
  // Another router's options are left for validate to report.
  RouterSpec foreign = Spec(2);
  foreign.mutable_unified();
  ResolveRouterSpec(*entry, &foreign, RouterDims{8, 4, 2, true});
  EXPECT_TRUE(foreign.has_unified());
}

TEST(TokenChoiceTest, RejectsBadOptions) {
  const RouterDims dims{8, 4, 2, true};
  auto error = [&](RouterSpec spec) {
    auto router = ResolveAndCreate(spec, dims);
    EXPECT_FALSE(router.ok());
    return std::string(router.status().message());
  };
  RouterSpec spec = Spec(2);
  spec.mutable_token_choice()->set_capacity_factor(-1);
  EXPECT_THAT(error(spec), HasSubstr("router.token_choice.capacity_factor"));
  spec = Spec(2);
  spec.mutable_token_choice()->set_jitter_eps(1.5);
  EXPECT_THAT(error(spec), HasSubstr("router.token_choice.jitter_eps"));
  spec = Spec(2);
  spec.mutable_token_choice()->set_gate(static_cast<GateFunction>(7));
  EXPECT_THAT(error(spec), HasSubstr("router.token_choice.gate"));
  spec = Spec(1.5);
  EXPECT_THAT(error(spec), HasSubstr("router.top_k"));
  spec = Spec(5);
  EXPECT_THAT(error(spec), HasSubstr("router.top_k"));
  spec = Spec(2);
  spec.mutable_expert_choice();
  EXPECT_THAT(error(spec), HasSubstr("router.token_choice"));
}

}  // namespace
}  // namespace moelab
