#include "routers/router_util.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <utility>
#include <vector>

#include "core/router.h"
#include "proto/experiment.pb.h"
#include "routers/testing/router_test_util.h"

namespace moelab {
namespace {

using ::moelab::testing::ExpectTensorNear;
using ::moelab::testing::Mask;

// ------------------------------------------------------ DescribeAggregation

TEST(DescribeAggregationTest, IdentityKeepsEveryTokenToItself) {
  RoutingDecision d;
  DescribeAggregation(at::eye(3).unsqueeze(0).repeat({2, 1, 1}), &d);
  ASSERT_TRUE(d.aggregation_self_weight.defined());
  ASSERT_TRUE(d.aggregation_effective_neighbours.defined());
  EXPECT_EQ(d.aggregation_self_weight.sizes(), (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(d.aggregation_effective_neighbours.sizes(), (std::vector<int64_t>{2, 3}));
  ExpectTensorNear(d.aggregation_self_weight, std::vector<double>(6, 1.0));
  // One-hot rows: H = 0 (0 log 0 = 0, never NaN), exp(0) = 1.
  ExpectTensorNear(d.aggregation_effective_neighbours, std::vector<double>(6, 1.0));
  EXPECT_FALSE(d.aggregation_head.defined());
}

TEST(DescribeAggregationTest, UniformRowsAggregateOverEveryToken) {
  RoutingDecision d;
  DescribeAggregation(at::full({1, 4, 4}, 0.25), &d);
  ExpectTensorNear(d.aggregation_self_weight, std::vector<double>(4, 0.25));
  ExpectTensorNear(d.aggregation_effective_neighbours, std::vector<double>(4, 4.0), 1e-5);
}

// Rows uniform over the prefix (a causal average): token i keeps 1/(i+1)
// and aggregates over i+1 tokens.
TEST(DescribeAggregationTest, CausalUniformRowsCountThePrefix) {
  const at::Tensor rows = at::ones({5, 5}).tril();
  RoutingDecision d;
  DescribeAggregation((rows / rows.sum(-1, true)).unsqueeze(0), &d);
  ExpectTensorNear(d.aggregation_self_weight, {1, 1.0 / 2, 1.0 / 3, 1.0 / 4, 1.0 / 5});
  ExpectTensorNear(d.aggregation_effective_neighbours, {1, 2, 3, 4, 5}, 1e-5);
}

// W = [[3/4, 1/4], [1/2, 1/2]]: self-weights 3/4 and 1/2; H(W_0) =
// -(3/4 log 3/4 + 1/4 log 1/4) = 0.5623, exp = 1.7548; H(W_1) = log 2.
TEST(DescribeAggregationTest, TwoByTwoByHand) {
  const at::Tensor w = at::tensor({0.75, 0.25, 0.5, 0.5}, at::kDouble).reshape({1, 2, 2});
  RoutingDecision d;
  DescribeAggregation(w.requires_grad_(true), &d);
  const double h0 = -(0.75 * std::log(0.75) + 0.25 * std::log(0.25));
  ExpectTensorNear(d.aggregation_self_weight, {0.75, 0.5});
  ExpectTensorNear(d.aggregation_effective_neighbours, {std::exp(h0), 2.0});
  EXPECT_NEAR(std::exp(h0), 1.7548, 1e-4);
  // Detached float32, whatever came in.
  EXPECT_EQ(d.aggregation_self_weight.scalar_type(), at::kFloat);
  EXPECT_EQ(d.aggregation_effective_neighbours.scalar_type(), at::kFloat);
  EXPECT_FALSE(d.aggregation_self_weight.requires_grad());
  EXPECT_FALSE(d.aggregation_effective_neighbours.requires_grad());
}

// A caller that knows H(W_i) passes it: exp of it is taken as given (here
// log 3 and 0 against rows whose own entropies differ, to show it is not
// recomputed), detached float32; the self-weight still comes from W.
TEST(DescribeAggregationTest, KnownRowEntropyIsUsedAsGiven) {
  const at::Tensor w = at::tensor({0.75, 0.25, 0.5, 0.5}, at::kFloat).reshape({1, 2, 2});
  const at::Tensor entropy =
      at::tensor({std::log(3.0), 0.0}, at::kDouble).reshape({1, 2}).requires_grad_(true);
  RoutingDecision d;
  DescribeAggregation(w, &d, entropy);
  ExpectTensorNear(d.aggregation_self_weight, {0.75, 0.5});
  ExpectTensorNear(d.aggregation_effective_neighbours, {3.0, 1.0}, 1e-6);
  EXPECT_EQ(d.aggregation_effective_neighbours.scalar_type(), at::kFloat);
  EXPECT_FALSE(d.aggregation_effective_neighbours.requires_grad());
  EXPECT_THROW(DescribeAggregation(w, &d, at::zeros({2, 1})), c10::Error);
}

// ------------------------------------------------------------ LoadBalanceLoss

// Softmax rows sum to one, so both score conventions give the old loss.
TEST(LoadBalanceLossTest, SoftmaxScoresAreTheSameEitherWay) {
  at::manual_seed(1);
  const at::Tensor r = at::softmax(at::randn({12, 5}) * 2, -1);
  const at::Tensor selected = TopKMask(r, 2);
  // The old loss, written out: E * sum_e f_e P_e, f over selected pairs.
  const at::Tensor f = selected.to(at::kFloat).sum(0) / 24.0;
  const double old = 5 * (f * r.mean(0)).sum().item<double>();
  EXPECT_NEAR(LoadBalanceLoss(r, selected, RAW_GATE).item<double>(), old, 1e-6);
  EXPECT_NEAR(LoadBalanceLoss(r, selected, NORMALIZED_OVER_EXPERTS).item<double>(), old, 1e-6);
  EXPECT_NEAR(LoadBalanceLoss(r, selected).item<double>(), old, 1e-6);
}

// Sigmoid gate r = [[0.9, 0.3], [0.8, 0.1]], both tokens pick expert 0:
// f = [1, 0]. RAW: P_0 = 0.85, loss 2 * 0.85 = 1.7. NORMALIZED: rows become
// [3/4, 1/4] and [8/9, 1/9], P_0 = 59/72, loss 59/36.
TEST(LoadBalanceLossTest, SigmoidScoresByHand) {
  const at::Tensor r = at::tensor({0.9, 0.3, 0.8, 0.1}).to(at::kFloat).reshape({2, 2});
  const at::Tensor counted = Mask({1, 0, 1, 0}, {2, 2});
  EXPECT_NEAR(LoadBalanceLoss(r, counted, RAW_GATE).item<double>(), 1.7, 1e-6);
  EXPECT_NEAR(LoadBalanceLoss(r, counted, NORMALIZED_OVER_EXPERTS).item<double>(), 59.0 / 36, 1e-6);
  EXPECT_NEAR(LoadBalanceLoss(r, counted).item<double>(), 59.0 / 36, 1e-6);
}

// The loss as a function of a shift c added to every logit of a sigmoid
// gate, and its derivative in c.
std::pair<double, double> SigmoidShiftLossAndSlope(const at::Tensor& logits,
                                                   const at::Tensor& counted, double shift,
                                                   LoadBalanceScores scores) {
  const at::Tensor c = at::tensor({shift}, at::kFloat).requires_grad_(true);
  const at::Tensor loss = LoadBalanceLoss(at::sigmoid(logits + c), counted, scores);
  loss.backward();
  return {loss.item<double>(), c.grad().item<double>()};
}

// With a sigmoid gate, shifting every logit down drives RAW_GATE toward 0
// without moving the selection. On a balanced selection (f = 1/E)
// NORMALIZED_OVER_EXPERTS is E sum_e (1/E) P_e = sum_e P_e = 1 for any
// normalised P, whatever the shift: that half is an identity, not a test of
// the gate; the imbalanced case below is the one that can fail.
TEST(LoadBalanceLossTest, SigmoidShiftDownDrivesOnlyTheRawLossToZero) {
  at::manual_seed(2);
  const at::Tensor logits = at::randn({4, 4});
  // Each token picks a different expert: f = 1/E.
  const at::Tensor counted = at::eye(4).to(at::kBool);
  double previous_raw = 1e9;
  for (double shift : {0.0, -2.0, -5.0, -10.0}) {
    const auto [raw, raw_slope] = SigmoidShiftLossAndSlope(logits, counted, shift, RAW_GATE);
    const auto [normalized, normalized_slope] =
        SigmoidShiftLossAndSlope(logits, counted, shift, NORMALIZED_OVER_EXPERTS);
    EXPECT_NEAR(normalized, 1.0, 1e-5) << "shift " << shift;
    EXPECT_NEAR(normalized_slope, 0.0, 1e-5) << "shift " << shift;
    EXPECT_LT(raw, previous_raw) << "shift " << shift;
    EXPECT_GT(raw_slope, 0) << "shift " << shift;
    previous_raw = raw;
  }
  EXPECT_LT(previous_raw, 0.01);
}

// An imbalanced selection, by hand: logits x = [[2, 0], [1.5, -1]] shifted
// by c, both tokens choose expert 0 at every c, f = [1, 0], so the loss is
// 2 P_0 = the sum over the two tokens of their expert-0 score.
// NORMALIZED: s(2+c)/(s(2+c)+s(c)) + s(1.5+c)/(s(1.5+c)+s(-1+c)), s the
// sigmoid: at c = 0, 2/(3+e^-2) + (1+e)/(2+e+e^-1.5) = 0.6379 + 0.7525 =
// 1.3904; as c -> -inf, s(y) ~ e^y turns the scores into softmax(x) and the
// loss into s(2) + s(2.5) = 1.8049 (1.8049 at c = -20 already); as c ->
// +inf both sigmoids saturate, the scores turn uniform and the loss falls to
// sum_e f_e = 1 (1.00004 at c = +10). For E = 2 it falls monotonically in c
// (each row's ratio s(x0+c)/s(x1+c) shrinks toward 1): pushing every logit
// down cannot drive it below the softmax value, but pushing them up lowers
// it toward 1 with the routing still one-sided. It stays in
// [E min_e f_e, E max_e f_e] = [0, 2], as any normalised P keeps it.
// RAW: s(2+c) + s(1.5+c): 1.6984 at c = 0, 2.4e-8 at c = -20, 1.99998 at
// c = +10.
TEST(LoadBalanceLossTest, SigmoidShiftMovesTheNormalizedLossOfAnImbalancedSelection) {
  const auto s = [](double y) { return 1 / (1 + std::exp(-y)); };
  const at::Tensor logits = at::tensor({2.0, 0.0, 1.5, -1.0}).to(at::kFloat).reshape({2, 2});
  const at::Tensor counted = Mask({1, 0, 1, 0}, {2, 2});
  EXPECT_NEAR(2 / (3 + std::exp(-2.0)) + (1 + std::exp(1.0)) / (2 + std::exp(1.0) + std::exp(-1.5)),
              1.3903639, 1e-7);
  double previous_normalized = 1e9;
  for (double shift : {-20.0, -5.0, 0.0, 5.0, 10.0}) {
    const double normalized_by_hand = s(2 + shift) / (s(2 + shift) + s(shift)) +
                                      s(1.5 + shift) / (s(1.5 + shift) + s(-1 + shift));
    const double raw_by_hand = s(2 + shift) + s(1.5 + shift);
    const auto [normalized, normalized_slope] =
        SigmoidShiftLossAndSlope(logits, counted, shift, NORMALIZED_OVER_EXPERTS);
    const auto [raw, raw_slope] = SigmoidShiftLossAndSlope(logits, counted, shift, RAW_GATE);
    EXPECT_NEAR(normalized, normalized_by_hand, 1e-5) << "shift " << shift;
    EXPECT_NEAR(raw, raw_by_hand, 1e-5) << "shift " << shift;
    EXPECT_LT(normalized, previous_normalized) << "shift " << shift;
    // At c = -20 the slope is ~e^-18, below float32 resolution.
    if (shift > -20) {
      EXPECT_LT(normalized_slope, 0) << "shift " << shift;
    }
    EXPECT_GE(normalized, 1.0) << "shift " << shift;
    EXPECT_LE(normalized, 2.0) << "shift " << shift;
    if (shift == 0) {
      EXPECT_NEAR(normalized, 1.3903639, 1e-5);
    }
    previous_normalized = normalized;
  }
  EXPECT_NEAR(SigmoidShiftLossAndSlope(logits, counted, -20, NORMALIZED_OVER_EXPERTS).first,
              s(2) + s(2.5), 1e-5);
  EXPECT_NEAR(SigmoidShiftLossAndSlope(logits, counted, 10, NORMALIZED_OVER_EXPERTS).first, 1.0,
              1e-4);
  EXPECT_LT(SigmoidShiftLossAndSlope(logits, counted, -20, RAW_GATE).first, 1e-6);
}

// ------------------------------------------------------- AddStandardAuxLosses

// Four tokens, two experts, k = 1: r = [[.7, .3], [.6, .4], [.8, .2],
// [.4, .6]], so P = [.625, .375]. Tokens 0-2 chose expert 0, token 3 expert
// 1, and a capacity of 2 dropped token 2's choice.
// Choices: f = [3/4, 1/4], loss 2 (3/4 .625 + 1/4 .375) = 1.125.
// Kept pairs: f = [2/3, 1/3], loss 2 (2/3 .625 + 1/3 .375) = 13/12.
TEST(AddStandardAuxLossesTest, CountsChoicesOrKeptPairsAsTheSpecSays) {
  RoutingDecision d;
  d.gate_probs = at::tensor({.7, .3, .6, .4, .8, .2, .4, .6}).to(at::kFloat).reshape({1, 4, 2});
  d.logits = at::log(d.gate_probs);
  const at::Tensor choices = Mask({1, 0, 1, 0, 1, 0, 0, 1}, {1, 4, 2});
  d.selected = Mask({1, 0, 1, 0, 0, 0, 0, 1}, {1, 4, 2});
  RouterSpec spec;
  spec.set_load_balance_coef(2.0);

  RoutingDecision by_default = d;
  AddStandardAuxLosses(spec, &by_default, choices);
  ASSERT_EQ(by_default.aux_losses.size(), 1u);
  EXPECT_EQ(by_default.aux_losses[0].first, "load_balance");
  EXPECT_NEAR(by_default.aux_losses[0].second.item<double>(), 2 * 1.125, 1e-6);

  spec.set_load_balance_counting(CHOICES_BEFORE_CAPACITY);
  RoutingDecision choices_counted = d;
  AddStandardAuxLosses(spec, &choices_counted, choices);
  EXPECT_NEAR(choices_counted.aux_losses[0].second.item<double>(), 2 * 1.125, 1e-6);

  spec.set_load_balance_counting(PAIRS_AFTER_CAPACITY);
  RoutingDecision kept = d;
  AddStandardAuxLosses(spec, &kept, choices);
  EXPECT_NEAR(kept.aux_losses[0].second.item<double>(), 2 * 13.0 / 12, 1e-6);

  // Without a capacity stage (no choices given) `selected` is counted.
  spec.set_load_balance_counting(CHOICES_BEFORE_CAPACITY);
  RoutingDecision no_capacity = d;
  AddStandardAuxLosses(spec, &no_capacity);
  EXPECT_NEAR(no_capacity.aux_losses[0].second.item<double>(), 2 * 13.0 / 12, 1e-6);

  // z-loss only with its coefficient.
  spec.set_z_loss_coef(0.5);
  RoutingDecision both = d;
  AddStandardAuxLosses(spec, &both, choices);
  ASSERT_EQ(both.aux_losses.size(), 2u);
  EXPECT_EQ(both.aux_losses[1].first, "z_loss");
}

// Scores follow spec.load_balance_scores; UNSPECIFIED is NORMALIZED.
TEST(AddStandardAuxLossesTest, ScoresAsTheSpecSays) {
  RoutingDecision d;
  d.gate_probs = at::tensor({0.9, 0.3, 0.8, 0.1}).to(at::kFloat).reshape({1, 2, 2});
  d.logits = at::zeros({1, 2, 2});
  d.selected = Mask({1, 0, 1, 0}, {1, 2, 2});
  RouterSpec spec;
  spec.set_load_balance_coef(1.0);
  RoutingDecision normalized = d;
  AddStandardAuxLosses(spec, &normalized);
  EXPECT_NEAR(normalized.aux_losses[0].second.item<double>(), 59.0 / 36, 1e-6);
  spec.set_load_balance_scores(RAW_GATE);
  RoutingDecision raw = d;
  AddStandardAuxLosses(spec, &raw);
  EXPECT_NEAR(raw.aux_losses[0].second.item<double>(), 1.7, 1e-6);
  EXPECT_EQ(ResolvedLoadBalanceScores(RouterSpec()), NORMALIZED_OVER_EXPERTS);
  EXPECT_EQ(ResolvedLoadBalanceCounting(RouterSpec()), CHOICES_BEFORE_CAPACITY);
}

// ------------------------------------------- CheckRenormalizeLetsTheGateLearn

TEST(CheckRenormalizeTest, RefusesRenormalisingASingleExpert) {
  RouterSpec spec;
  spec.set_top_k(1);
  absl::Status status = CheckRenormalizeLetsTheGateLearn(spec, /*renormalize=*/true,
                                                         "router.token_choice.renormalize", "r");
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(status.message(),
            "router.token_choice.renormalize: with top_k = 1 every combine "
            "weight is r/r = 1, so the task loss gives the gate zero gradient "
            "(only the load-balance loss would train it); set renormalize: "
            "false (Switch-style) or top_k >= 2");
  EXPECT_TRUE(CheckRenormalizeLetsTheGateLearn(spec, false, "x", "r").ok());
  spec.set_top_k(2);
  EXPECT_TRUE(CheckRenormalizeLetsTheGateLearn(spec, true, "x", "r").ok());
}

}  // namespace
}  // namespace moelab
