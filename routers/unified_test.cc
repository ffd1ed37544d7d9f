#include "routers/unified.h"

#include <ATen/ATen.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
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

RouterSpec Spec(double k, SelectionScope scope = SCOPE_UNSPECIFIED,
                TokenScore token_score = TOKEN_SCORE_UNSPECIFIED) {
  RouterSpec spec;
  spec.set_name("unified");
  spec.set_top_k(k);
  spec.mutable_unified()->set_scope(scope);
  spec.mutable_unified()->set_token_score(token_score);
  return spec;
}

std::shared_ptr<Router> IdentityGateRouter(const RouterSpec& spec, int64_t experts) {
  auto router = ResolveAndCreate(spec, RouterDims{experts, experts, 2, true});
  EXPECT_TRUE(router.ok()) << router.status();
  SetParameter(**router, "gate_weight", at::eye(experts));
  return *router;
}

// Two sequences of three tokens over two experts; logits = log of these.
// With E = 2 the expert part sigmoid(l) * 2 / E is sigmoid(log a) = a/(1+a),
// so the default scores (alpha = beta = 0.5) are
//   seq 0: t0 [1/2, 1/2]    t1 [3/5, 51/70]  t2 [9/10, 3/10]
//   seq 1: t0 [2/3, 5/12]   t1 [3/8, 3/4]    t2 [5/12, 2/3].
at::Tensor HandHidden() {
  return at::log(at::tensor({1., 1., 4., 6., 9., 1., 2., 1., 1., 3., 1., 2.}).to(at::kFloat))
      .reshape({2, 3, 2});
}

TEST(UnifiedTest, PerSequenceByHand) {
  // c = round(3 * 1) = 3 pairs per sequence.
  auto router = IdentityGateRouter(Spec(1), 2);
  RoutingDecision d = router->Route(HandHidden(), Context(false));
  ExpectWellFormed(d, 2, 3, 2);
  // gate_probs is the token-choice part, softmax over experts.
  ExpectTensorNear(d.gate_probs, {.5, .5, .4, .6, .9, .1,  //
                                  2. / 3, 1. / 3, .25, .75, 1. / 3, 2. / 3});
  // seq 0: t2e0 .9, t1e1 51/70, t1e0 .6 (t0 gets no expert, t1 two);
  // seq 1: t1e1 .75, t0e0 2/3, t2e1 2/3.
  ExpectTensorNear(d.combine_weights, {0, 0, .6, 51. / 70, .9, 0,  //
                                       2. / 3, 0, 0, .75, 0, 2. / 3});
  EXPECT_FALSE(d.dropped.defined());
  EXPECT_FALSE(d.aggregated_probs.defined());
}

TEST(UnifiedTest, PerBatchByHand) {
  // c = round(2 * 3 * 0.5) = 3 pairs over the whole batch: .9, .75, 51/70.
  auto router = IdentityGateRouter(Spec(0.5, PER_BATCH), 2);
  RoutingDecision d = router->Route(HandHidden(), Context(false));
  ExpectTensorNear(d.combine_weights, {0, 0, 0, 51. / 70, .9, 0,  //
                                       0, 0, 0, .75, 0, 0});
}

TEST(UnifiedTest, PerPositionByHand) {
  // c = round(2 * 0.5) = 1 pair per position across the two sequences:
  // t0: seq 1 e0 (2/3); t1: seq 1 e1 (3/4); t2: seq 0 e0 (9/10).
  auto router = IdentityGateRouter(Spec(0.5, PER_POSITION), 2);
  RoutingDecision d = router->Route(HandHidden(), Context(false));
  ExpectTensorNear(d.combine_weights, {0, 0, 0, 0, .9, 0,  //
                                       2. / 3, 0, 0, .75, 0, 0});
  // k = 1.5: c = 3 per position.
  router = IdentityGateRouter(Spec(1.5, PER_POSITION), 2);
  d = router->Route(HandHidden(), Context(false));
  ExpectTensorNear(d.combine_weights, {.5, .5, .6, 51. / 70, .9, 0,  //
                                       2. / 3, 0, 0, .75, 5. / 12, 2. / 3});
}

TEST(UnifiedTest, SoftmaxOverTokensByHand) {
  // Token part = softmax over the sequence's tokens per expert:
  //   seq 0: e0 [1, 4, 9] / 14, e1 [1, 6, 1] / 8;
  //   seq 1: e0 [2, 1, 1] / 4,  e1 [1, 3, 2] / 6.
  // Scores: seq 0 t0 [(1/2 + 1/14)/2, (1/2 + 1/8)/2] = [2/7, 5/16],
  //   t1 [(2/5 + 2/7)/2, (3/5 + 3/4)/2] = [12/35, 27/40],
  //   t2 [(9/10 + 9/14)/2, (1/10 + 1/8)/2] = [27/35, 9/80];
  //   seq 1 t0 [7/12, 1/4], t1 [1/4, 5/8], t2 [7/24, 1/2].
  auto router = IdentityGateRouter(Spec(1, PER_SEQUENCE, SOFTMAX_OVER_TOKENS), 2);
  RoutingDecision d = router->Route(HandHidden(), Context(false));
  ExpectTensorNear(d.combine_weights, {0, 0, 12. / 35, 27. / 40, 27. / 35, 0,  //
                                       7. / 12, 0, 0, 5. / 8, 0, .5});
}

TEST(UnifiedTest, SoftmaxOverTokensFollowsTheScope) {
  // PER_POSITION normalises over the batch at each position:
  //   t0: e0 [1, 2] / 3, e1 [1, 1] / 2 -> seq 0 t0 [(1/2 + 1/3)/2, 1/2] ...
  auto router = IdentityGateRouter(Spec(0.5, PER_POSITION, SOFTMAX_OVER_TOKENS), 2);
  RoutingDecision d = router->Route(HandHidden(), Context(false));
  // Scores: t0: seq0 [5/12, 1/2], seq1 [2/3, 5/12];
  //         t1: seq0 [3/5, 19/30], seq1 [9/40, 13/24];
  //         t2: seq0 [9/10, 13/60], seq1 [13/60, 2/3].
  ExpectTensorNear(d.combine_weights, {0, 0, 0, 19. / 30, .9, 0,  //
                                       2. / 3, 0, 0, 0, 0, 0});
  // PER_BATCH normalises over all six tokens: e0 [1,4,9,2,1,1] / 18,
  // e1 [1,6,1,1,3,2] / 14. With k = 0.5, c = 3: seq 0 t2e0
  // (9/10 + 9/18)/2 = 0.7, seq 0 t1e1 (3/5 + 6/14)/2 = 18/35, seq 1 t1e1
  // (3/4 + 3/14)/2 = 27/56.
  router = IdentityGateRouter(Spec(0.5, PER_BATCH, SOFTMAX_OVER_TOKENS), 2);
  d = router->Route(HandHidden(), Context(false));
  ExpectTensorNear(d.combine_weights, {0, 0, 0, 18. / 35, .7, 0,  //
                                       0, 0, 0, 27. / 56, 0, 0});
}

TEST(UnifiedTest, SigmoidPartIsScaledByTwoOverE) {
  // One token over four experts, logits log [1, 2, 3, 4]:
  // softmax [.1, .2, .3, .4], sigmoid * 2/4 = [1/4, 1/3, 3/8, 2/5].
  RouterSpec spec = Spec(2);
  spec.mutable_unified()->set_alpha(0.25f);  // beta resolves to 0.75
  auto router = IdentityGateRouter(spec, 4);
  at::Tensor hidden = at::log(at::tensor({1., 2., 3., 4.}).to(at::kFloat)).reshape({1, 1, 4});
  RoutingDecision d = router->Route(hidden, Context(false));
  // Scores .25 * softmax + .75 * sigmoid part: [.2125, .3, .35625, .4];
  // c = round(1 * 2) = 2.
  ExpectTensorNear(d.combine_weights, {0, 0, .35625, .4});
}

TEST(UnifiedTest, BudgetRounding) {
  EXPECT_EQ(UnifiedBudget(PER_SEQUENCE, 4, 5, 8, 0.5), 3);  // lround(2.5)
  EXPECT_EQ(UnifiedBudget(PER_SEQUENCE, 4, 64, 8, 1.5), 96);
  EXPECT_EQ(UnifiedBudget(PER_BATCH, 4, 5, 8, 0.5), 10);
  EXPECT_EQ(UnifiedBudget(PER_POSITION, 3, 5, 8, 0.5), 2);  // lround(1.5)
  EXPECT_EQ(UnifiedBudget(PER_POSITION, 1, 5, 8, 0.1), 1);  // clamped up
  EXPECT_EQ(UnifiedBudget(PER_SEQUENCE, 1, 2, 2, 2.0), 4);
}

TEST(UnifiedTest, TotalPairsEqualTheBudgetInEachScope) {
  torch::manual_seed(8);
  const int64_t batch = 3, tokens = 5, experts = 4;
  for (SelectionScope scope : {PER_SEQUENCE, PER_BATCH, PER_POSITION}) {
    for (TokenScore token_score : {SIGMOID_SCALED, SOFTMAX_OVER_TOKENS}) {
      for (double k : {0.5, 1.0, 1.5, 2.0, 3.7}) {
        auto router =
            ResolveAndCreate(Spec(k, scope, token_score), RouterDims{8, experts, 2, true});
        ASSERT_TRUE(router.ok()) << router.status();
        RoutingDecision d = (*router)->Route(at::randn({batch, tokens, 8}), Context(true));
        ExpectWellFormed(d, batch, tokens, experts);
        const int64_t c = UnifiedBudget(scope, batch, tokens, experts, k);
        SCOPED_TRACE(::testing::Message() << "scope " << scope << " k " << k);
        if (scope == PER_SEQUENCE) {
          EXPECT_TRUE((d.selected.sum(at::IntArrayRef{1, 2}) == c).all().item<bool>());
        } else if (scope == PER_BATCH) {
          EXPECT_EQ(d.selected.sum().item<int64_t>(), c);
        } else {
          EXPECT_TRUE((d.selected.sum(at::IntArrayRef{0, 2}) == c).all().item<bool>());
        }
        EXPECT_TRUE(at::allclose(d.gate_probs.sum(-1), at::ones({batch, tokens})));
      }
    }
  }
}

// USMoE Proposition 3.1: among all binary selections with at most c pairs,
// the global top-c of the score matrix has the largest total score. Checked
// by enumerating every selection of small random matrices.
TEST(UnifiedTest, GlobalTopCAttainsTheBruteForceOptimum) {
  torch::manual_seed(12);
  for (auto [tokens, experts] : {std::pair<int64_t, int64_t>{3, 3}, {2, 4}}) {
    const int64_t entries = tokens * experts;
    for (int trial = 0; trial < 6; ++trial) {
      for (int64_t c = 1; c <= entries; ++c) {
        const double k = static_cast<double>(c) / tokens;
        if (k > experts) continue;
        RouterSpec spec = Spec(k);
        spec.mutable_unified()->set_alpha(trial % 2 == 0 ? 0.5f : 0.3f);
        spec.mutable_unified()->set_beta(trial % 2 == 0 ? 0.5f : 0.7f);
        auto router = ResolveAndCreate(spec, RouterDims{6, experts, 2, true});
        ASSERT_TRUE(router.ok()) << router.status();
        RoutingDecision d = (*router)->Route(3 * at::randn({1, tokens, 6}), Context(false));
        // The score, recomputed from the logits by the paper's formula.
        const double alpha = spec.unified().alpha(), beta = spec.unified().beta();
        at::Tensor logits = d.logits.detach().to(at::kDouble).reshape({-1, experts});
        at::Tensor score =
            (alpha * at::softmax(logits, -1) + beta * at::sigmoid(logits) * (2.0 / experts))
                .reshape({-1});
        std::vector<double> s(score.data_ptr<double>(), score.data_ptr<double>() + entries);
        double best = -1;
        for (int64_t subset = 0; subset < (int64_t{1} << entries); ++subset) {
          if (__builtin_popcountll(subset) > c) continue;
          double total = 0;
          for (int64_t i = 0; i < entries; ++i) {
            if (subset >> i & 1) total += s[i];
          }
          best = std::max(best, total);
        }
        EXPECT_EQ(d.selected.sum().item<int64_t>(), c);
        EXPECT_NEAR(d.combine_weights.sum().item<double>(), best, 1e-5)
            << tokens << "x" << experts << " c=" << c;
      }
    }
  }
}

TEST(UnifiedTest, GradientReachesGateWeight) {
  torch::manual_seed(9);
  for (TokenScore token_score : {SIGMOID_SCALED, SOFTMAX_OVER_TOKENS}) {
    RouterSpec spec = Spec(1.5, PER_SEQUENCE, token_score);
    spec.set_z_loss_coef(0.001f);
    auto router = ResolveAndCreate(spec, RouterDims{8, 4, 2, true});
    ASSERT_TRUE(router.ok());
    RoutingDecision d = (*router)->Route(at::randn({2, 5, 8}), Context(true));
    at::Tensor loss =
        (d.combine_weights * at::arange(4).to(at::kFloat)).sum() + d.aux_losses.at(0).second;
    loss.backward();
    at::Tensor grad = Parameter(**router, "gate_weight").grad();
    ASSERT_TRUE(grad.defined());
    EXPECT_TRUE(at::isfinite(grad).all().item<bool>());
    EXPECT_GT(grad.abs().sum().item<float>(), 0);
  }
}

TEST(UnifiedTest, OnlyPerPositionIsCausal) {
  for (SelectionScope scope : {PER_SEQUENCE, PER_BATCH, PER_POSITION}) {
    auto router = ResolveAndCreate(Spec(2, scope), RouterDims{8, 4, 2, true});
    ASSERT_TRUE(router.ok());
    EXPECT_EQ((*router)->IsCausal(true), scope == PER_POSITION);
    EXPECT_EQ((*router)->IsCausal(false), scope == PER_POSITION);
  }
  // A per-position decision at t ignores what comes later.
  torch::manual_seed(10);
  auto router = ResolveAndCreate(Spec(1.5, PER_POSITION), RouterDims{8, 4, 2, true});
  ASSERT_TRUE(router.ok());
  at::Tensor hidden = at::randn({3, 6, 8});
  at::Tensor changed = hidden.clone();
  changed.slice(1, 4).normal_();
  at::Tensor a = (*router)->Route(hidden, Context(false)).selected.slice(1, 0, 4);
  at::Tensor b = (*router)->Route(changed, Context(false)).selected.slice(1, 0, 4);
  EXPECT_TRUE(at::equal(a, b));
}

TEST(UnifiedTest, ResolveFillsDefaults) {
  const RouterRegistration* entry = *RouterRegistry().Find("unified");
  EXPECT_TRUE(entry->fractional_top_k);
  RouterSpec spec;
  spec.set_name("unified");
  spec.set_top_k(2);
  entry->resolve(&spec, RouterDims{8, 4, 2, true});
  ASSERT_TRUE(spec.has_unified());
  EXPECT_FLOAT_EQ(spec.unified().alpha(), 0.5f);
  EXPECT_FLOAT_EQ(spec.unified().beta(), 0.5f);
  EXPECT_EQ(spec.unified().token_score(), SIGMOID_SCALED);
  EXPECT_EQ(spec.unified().scope(), PER_SEQUENCE);
  spec.clear_unified();
  spec.mutable_unified()->set_beta(0.7f);
  entry->resolve(&spec, RouterDims{8, 4, 2, true});
  EXPECT_NEAR(spec.unified().alpha(), 0.3f, 1e-7);
}

TEST(UnifiedTest, RejectsBadOptions) {
  const RouterDims dims{8, 4, 2, true};
  auto error = [&](RouterSpec spec) {
    auto router = ResolveAndCreate(spec, dims);
    EXPECT_FALSE(router.ok());
    return std::string(router.status().message());
  };
  RouterSpec spec = Spec(2);
  spec.mutable_unified()->set_alpha(0.7f);
  spec.mutable_unified()->set_beta(0.2f);
  EXPECT_THAT(error(spec),
              HasSubstr("router.unified.alpha: alpha + beta must equal 1, got 0.7 + 0.2"));
  spec.mutable_unified()->set_alpha(1.5f);
  spec.mutable_unified()->set_beta(-0.5f);
  EXPECT_THAT(error(spec), HasSubstr("router.unified.alpha: must be in [0, 1]"));
  EXPECT_THAT(error(Spec(4.5)), HasSubstr("router.top_k"));
  EXPECT_THAT(error(Spec(-1)), HasSubstr("router.top_k"));
  spec = Spec(2);
  spec.mutable_unified()->set_scope(static_cast<SelectionScope>(9));
  EXPECT_THAT(error(spec), HasSubstr("router.unified.scope"));
  spec = Spec(2);
  spec.mutable_hash();
  EXPECT_THAT(error(spec), HasSubstr("router.unified"));
  // Fractional k is accepted.
  EXPECT_TRUE(ResolveAndCreate(Spec(1.5), dims).ok());
}

}  // namespace
}  // namespace moelab
