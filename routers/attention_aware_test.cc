#include "routers/attention_aware.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/nn/module.h>

#include <cmath>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "core/router.h"
#include "google/protobuf/text_format.h"
#include "proto/experiment.pb.h"
#include "routers/router_util.h"
#include "routers/testing/router_test_util.h"

namespace moelab {
namespace {

using ::moelab::testing::ExpectSameDecisionWithPEqualR;

using ::testing::ElementsAre;
using ::testing::HasSubstr;

RouterSpec Spec(double top_k, HeadSelection selection = LOWEST_ENTROPY) {
  RouterSpec spec;
  spec.set_name("attention_aware");
  spec.set_top_k(top_k);
  spec.mutable_attention_aware()->set_head_selection(selection);
  return spec;
}

std::shared_ptr<AttentionAwareRouter> Create(const RouterSpec& spec, const RouterDims& dims) {
  absl::StatusOr<std::shared_ptr<Router>> router = CreateRouter(spec, dims);
  EXPECT_TRUE(router.ok()) << router.status();
  return router.ok() ? std::dynamic_pointer_cast<AttentionAwareRouter>(*router) : nullptr;
}

void SetParameter(torch::nn::Module& module, const std::string& name, const at::Tensor& value) {
  at::NoGradGuard no_grad;
  torch::Tensor* parameter = module.named_parameters().find(name);
  ASSERT_NE(parameter, nullptr) << name;
  parameter->copy_(value);
}

at::Tensor Tensor2d(std::vector<std::vector<float>> rows) {
  const int64_t cols = rows[0].size();
  at::Tensor t = at::empty({static_cast<int64_t>(rows.size()), cols});
  for (size_t i = 0; i < rows.size(); ++i) {
    for (int64_t j = 0; j < cols; ++j) t[i][j] = rows[i][j];
  }
  return t;
}

double Entropy(std::vector<double> p) {
  double h = 0;
  for (double x : p) {
    if (x > 0) h -= x * std::log(x);
  }
  return h;
}

double Entropy(const at::Tensor& distribution) {
  std::vector<double> p;
  for (int64_t i = 0; i < distribution.numel(); ++i) {
    p.push_back(distribution[i].item<double>());
  }
  return Entropy(p);
}

// [B, H, T, T] random attention, rows summing to one; causal rows have exact
// zeros above the diagonal.
at::Tensor RandomAttention(int64_t batch, int64_t heads, int64_t tokens, bool causal,
                           double sharpness = 2.0) {
  at::Tensor scores = at::randn({batch, heads, tokens, tokens}) * sharpness;
  if (causal) {
    at::Tensor above = at::ones({tokens, tokens}, at::kBool).triu(1);
    scores = scores.masked_fill(above, -std::numeric_limits<float>::infinity());
  }
  return at::softmax(scores, -1);
}

// The hand example. Tokens u0 = e1, u1 = e0; both heads' values V[0] = e1,
// V[1] = e0, so ||u_i - V[j]||^2 is 0 for i = j and 2 otherwise: likelihood
// ratio e^-1 with sigma = 1 (||u_i|| = 1, so RELATIVE and ABSOLUTE agree). Gate reads coordinate e
// for expert e: r0 = [b, a], r1 = [a, b] with a = e / (1 + e), b = 1 - a. Head 0, A = [[.5, .5],
// [.5, .5]]: rows [a, b] and [b, a]. Head 1, A = [[1, 0], [.6, .4]]: rows [1, 0] (entropy 0) and
//   [.6/e, .4] / (.6/e + .4) ~ [0.356, 0.644] (entropy 0.651 > H([a, b]) = 0.582).
struct HandExample {
  at::Tensor hidden = Tensor2d({{0, 1}, {1, 0}}).unsqueeze(0);
  RoutingContext context;
  double a = std::exp(1.0) / (1 + std::exp(1.0));
  double b = 1 - a;
  double c0 = 0.6 / std::exp(1.0) / (0.6 / std::exp(1.0) + 0.4);  // head 1, row 1
  double c1 = 1 - c0;

  HandExample() {
    at::Tensor probs =
        at::stack({Tensor2d({{0.5, 0.5}, {0.5, 0.5}}), Tensor2d({{1, 0}, {0.6, 0.4}})});
    context.attention_probs = probs.unsqueeze(0);  // [1, 2, 2, 2]
    at::Tensor values = Tensor2d({{0, 1}, {1, 0}});
    context.attention_values = at::stack({values, values}).unsqueeze(0);
  }
  std::vector<double> r0() const { return {b, a}; }
  std::vector<double> r1() const { return {a, b}; }
};

std::shared_ptr<AttentionAwareRouter> HandRouter(const RouterSpec& spec) {
  auto router = Create(spec, {.model_dim = 2, .num_experts = 2, .num_heads = 2});
  SetParameter(*router, "gate_weight", Tensor2d({{1, 0}, {0, 1}}));
  return router;
}

TEST(AttentionAwareTest, PosteriorByHand) {
  HandExample x;
  auto router = HandRouter(Spec(1));
  const at::Tensor posterior = router->Posterior(x.hidden, x.context);
  const at::Tensor expected =
      at::stack({Tensor2d({{float(x.a), float(x.b)}, {float(x.b), float(x.a)}}),
                 Tensor2d({{1, 0}, {float(x.c0), float(x.c1)}})});
  EXPECT_TRUE(at::allclose(posterior[0], expected, 0, 1e-6)) << posterior;
}

// Per-token lowest entropy: token 0 uses head 1 (p0 = r0), token 1 head 0
// (p1 = b r0 + a r1 = [a^2 + b^2, 2ab]).
TEST(AttentionAwareTest, LowestEntropyPerTokenByHand) {
  HandExample x;
  auto router = HandRouter(Spec(1));
  RoutingDecision d = router->Route(x.hidden, x.context);
  const float same = x.a * x.a + x.b * x.b, mixed = 2 * x.a * x.b;
  EXPECT_TRUE(at::allclose(d.aggregated_probs[0],
                           Tensor2d({{float(x.b), float(x.a)}, {same, mixed}}), 0, 1e-6))
      << d.aggregated_probs;
  EXPECT_TRUE(at::allclose(
      d.gate_probs[0], Tensor2d({{float(x.b), float(x.a)}, {float(x.a), float(x.b)}}), 0, 1e-6));
  EXPECT_TRUE(at::equal(d.selected[0], Tensor2d({{0, 1}, {1, 0}}).to(at::kBool)));
  EXPECT_TRUE(at::allclose(d.combine_weights[0], Tensor2d({{0, float(x.a)}, {same, 0}}), 0, 1e-6));
  EXPECT_TRUE(router->IsCausal(true));
  EXPECT_FALSE(router->IsCausal(false));
  EXPECT_TRUE(router->NeedsAttention());
  // Token 0 aggregates with head 1's row [1, 0], token 1 with head 0's
  // [b, a].
  ASSERT_TRUE(d.aggregation_head.defined());
  EXPECT_EQ(d.aggregation_head.scalar_type(), at::kLong);
  EXPECT_TRUE(at::equal(d.aggregation_head, at::tensor({1, 0}, at::kLong).view({1, 2})));
  EXPECT_TRUE(at::allclose(d.aggregation_self_weight, Tensor2d({{1, float(x.a)}}), 0, 1e-6));
  EXPECT_TRUE(at::allclose(d.aggregation_effective_neighbours,
                           Tensor2d({{1, float(std::exp(Entropy({x.a, x.b})))}}), 0, 1e-5));
}

// One head per sequence: mean entropies are H([a, b]) = 0.582 for head 0 and
// 0.651 / 2 for head 1, so head 1 for both tokens.
TEST(AttentionAwareTest, LowestMeanEntropyByHand) {
  HandExample x;
  auto router = HandRouter(Spec(1, LOWEST_MEAN_ENTROPY));
  RoutingDecision d = router->Route(x.hidden, x.context);
  std::vector<float> p1(2);
  for (int e = 0; e < 2; ++e) p1[e] = x.c0 * x.r0()[e] + x.c1 * x.r1()[e];
  EXPECT_TRUE(
      at::allclose(d.aggregated_probs[0], Tensor2d({{float(x.b), float(x.a)}, p1}), 0, 1e-6));
  EXPECT_FALSE(router->IsCausal(true));
  // The sequence's head, broadcast to its tokens; rows [1, 0] and [c0, c1].
  EXPECT_TRUE(at::equal(d.aggregation_head, at::tensor({1, 1}, at::kLong).view({1, 2})));
  EXPECT_TRUE(at::allclose(d.aggregation_self_weight, Tensor2d({{1, float(x.c1)}}), 0, 1e-6));
  EXPECT_TRUE(at::allclose(d.aggregation_effective_neighbours,
                           Tensor2d({{1, float(std::exp(Entropy({x.c0, x.c1})))}}), 0, 1e-5));
}

// All heads, weighted by softmax over heads of minus the row entropy.
TEST(AttentionAwareTest, AllHeadsWeightedByHand) {
  HandExample x;
  auto router = HandRouter(Spec(1, ALL_HEADS_WEIGHTED));
  RoutingDecision d = router->Route(x.hidden, x.context);
  const double h_ab = Entropy({x.a, x.b}), h_c = Entropy({x.c0, x.c1});
  // Token 0: head 0 row [a, b] (entropy h_ab), head 1 row [1, 0] (entropy 0).
  const double w00 = std::exp(-h_ab) / (std::exp(-h_ab) + 1), w01 = 1 - w00;
  // Token 1: head 0 row [b, a] (h_ab), head 1 row [c0, c1] (h_c).
  const double w10 = std::exp(-h_ab) / (std::exp(-h_ab) + std::exp(-h_c));
  const double w11 = 1 - w10;
  std::vector<float> p0(2), p1(2);
  for (int e = 0; e < 2; ++e) {
    p0[e] = w00 * (x.a * x.r0()[e] + x.b * x.r1()[e]) + w01 * x.r0()[e];
    p1[e] = w10 * (x.b * x.r0()[e] + x.a * x.r1()[e]) + w11 * (x.c0 * x.r0()[e] + x.c1 * x.r1()[e]);
  }
  EXPECT_TRUE(at::allclose(d.aggregated_probs[0], Tensor2d({p0, p1}), 0, 1e-6))
      << d.aggregated_probs;
  EXPECT_TRUE(router->IsCausal(true));
  // The mixed rows W_0 = w00 [a, b] + w01 [1, 0], W_1 = w10 [b, a] +
  // w11 [c0, c1]; the largest-weight heads are 1 (entropy 0) and 0
  // (h_ab < h_c).
  const std::vector<double> row0 = {w00 * x.a + w01, w00 * x.b};
  const std::vector<double> row1 = {w10 * x.b + w11 * x.c0, w10 * x.a + w11 * x.c1};
  EXPECT_TRUE(at::equal(d.aggregation_head, at::tensor({1, 0}, at::kLong).view({1, 2})));
  EXPECT_TRUE(at::allclose(d.aggregation_self_weight, Tensor2d({{float(row0[0]), float(row1[1])}}),
                           0, 1e-6));
  EXPECT_TRUE(at::allclose(
      d.aggregation_effective_neighbours,
      Tensor2d({{float(std::exp(Entropy(row0))), float(std::exp(Entropy(row1)))}}), 0, 1e-5));
}

// The chosen head's row entropy, reused for exp(H(W_i)), agrees with the
// entropy of W recomputed; padded rows and causal zeros included. Training
// (context.training true) routes the same and leaves every diagnostic
// undefined: only evaluation reads them. The tests above route with the
// default context, training false.
TEST(AttentionAwareTest, DiagnosticsOnlyOutsideTraining) {
  at::manual_seed(19);
  const at::Tensor hidden = at::randn({2, 6, 4});
  RoutingContext context;
  context.attention_probs = RandomAttention(2, 3, 6, /*causal=*/true);
  context.attention_values = at::randn({2, 3, 6, 4});
  context.padding_mask = at::ones({2, 6}, at::kBool);
  context.padding_mask[1].slice(0, 4).fill_(false);
  for (HeadSelection selection : {LOWEST_ENTROPY, LOWEST_MEAN_ENTROPY, ALL_HEADS_WEIGHTED}) {
    auto router = Create(Spec(2, selection), {.model_dim = 4, .num_experts = 3, .num_heads = 3});
    RoutingDecision d = router->Route(hidden, context);
    ASSERT_TRUE(d.aggregation_self_weight.defined()) << selection;
    ASSERT_TRUE(d.aggregation_effective_neighbours.defined()) << selection;
    ASSERT_TRUE(d.aggregation_head.defined()) << selection;
    const AttentionAwareRouter::Aggregation aggregation = router->Aggregate(hidden, context);
    EXPECT_EQ(aggregation.row_entropy.defined(), selection != ALL_HEADS_WEIGHTED) << selection;
    RoutingDecision recomputed;
    DescribeAggregation(aggregation.weights, &recomputed);
    EXPECT_TRUE(at::allclose(d.aggregation_effective_neighbours,
                             recomputed.aggregation_effective_neighbours, 1e-5, 1e-5))
        << selection << "\n"
        << d.aggregation_effective_neighbours << "\n"
        << recomputed.aggregation_effective_neighbours;
    EXPECT_TRUE(at::equal(d.aggregation_self_weight, recomputed.aggregation_self_weight));
    EXPECT_EQ(d.aggregation_effective_neighbours.scalar_type(), at::kFloat);
    EXPECT_FALSE(d.aggregation_effective_neighbours.requires_grad());

    RoutingContext training = context;
    training.training = true;
    RoutingDecision t = router->Route(hidden, training);
    EXPECT_FALSE(t.aggregation_self_weight.defined()) << selection;
    EXPECT_FALSE(t.aggregation_effective_neighbours.defined()) << selection;
    EXPECT_FALSE(t.aggregation_head.defined()) << selection;
    EXPECT_TRUE(at::equal(t.selected, d.selected)) << selection;
    EXPECT_TRUE(at::allclose(t.combine_weights, d.combine_weights, 0, 0));
  }
}

// RELATIVE divides the squared distance by ||u_i||^2. One head, uniform
// attention, u0 = (0, 2), V = [(0, 2), (2, 0)]: ||u0 - V[1]||^2 = 8, so the
// likelihood ratio of j = 1 to j = 0 is e^(-8/2) = e^-4 (ABSOLUTE, sigma 1)
// and e^(-8/(2*4)) = e^-1 (RELATIVE). Token 1 = (1, 0): distances 5 and 1,
// ratio e^(-2) either way (||u1|| = 1).
TEST(AttentionAwareTest, RelativeLikelihoodByHand) {
  const at::Tensor hidden = Tensor2d({{0, 2}, {1, 0}}).unsqueeze(0);
  RoutingContext context;
  context.attention_probs = at::full({1, 1, 2, 2}, 0.5);
  context.attention_values = Tensor2d({{0, 2}, {2, 0}}).view({1, 1, 2, 2});
  const float token1 = 1 / (1 + std::exp(2.0));  // weight on j = 0
  for (LikelihoodScale scale : {RELATIVE, ABSOLUTE}) {
    RouterSpec spec = Spec(1);
    spec.mutable_attention_aware()->set_likelihood_scale(scale);
    auto router = Create(spec, {.model_dim = 2, .num_experts = 2, .num_heads = 1});
    const float ratio = std::exp(scale == RELATIVE ? -1.0 : -4.0);
    const at::Tensor posterior = router->Posterior(hidden, context);
    EXPECT_TRUE(at::allclose(
        posterior[0][0], Tensor2d({{1 / (1 + ratio), ratio / (1 + ratio)}, {token1, 1 - token1}}),
        0, 1e-6))
        << scale << "\n"
        << posterior;
  }
}

// RELATIVE: scaling the token and the values together leaves the posterior
// as it is; ABSOLUTE sharpens it. A zero token stays finite.
TEST(AttentionAwareTest, RelativeIgnoresTheHiddenScale) {
  at::manual_seed(17);
  const at::Tensor hidden = at::randn({2, 5, 6});
  RoutingContext context;
  context.attention_probs = RandomAttention(2, 2, 5, /*causal=*/true);
  context.attention_values = at::randn({2, 2, 5, 6});
  RoutingContext scaled = context;
  scaled.attention_values = context.attention_values * 7;
  for (LikelihoodScale scale : {RELATIVE, ABSOLUTE}) {
    RouterSpec spec = Spec(2);
    spec.mutable_attention_aware()->set_likelihood_scale(scale);
    auto router = Create(spec, {.model_dim = 6, .num_experts = 3, .num_heads = 2});
    const bool same = at::allclose(router->Posterior(hidden, context),
                                   router->Posterior(hidden * 7, scaled), 0, 1e-5);
    EXPECT_EQ(same, scale == RELATIVE) << scale;
  }
  auto router = Create(Spec(2), {.model_dim = 6, .num_experts = 3, .num_heads = 2});
  at::Tensor with_zero = hidden.clone();
  with_zero[1][3].zero_();
  EXPECT_TRUE(at::isfinite(router->Posterior(with_zero, context)).all().item<bool>());
}

// Hidden states at a trained model's scale (D = 128, ||u|| ~ 11) and values
// that half-explain them: the paper's literal setting (ABSOLUTE, sigma 1)
// puts every posterior row on a single j, so only the attention head's
// choice of that j matters; RELATIVE keeps several tokens in play.
TEST(AttentionAwareTest, LiteralSettingIsOneHotAtTrainedScale) {
  at::manual_seed(18);
  const int64_t batch = 2, heads = 4, tokens = 16, dim = 128;
  const at::Tensor hidden = at::randn({batch, tokens, dim});
  RoutingContext context;
  context.attention_probs = RandomAttention(batch, heads, tokens, /*causal=*/false, 1.5);
  context.attention_values = 0.5 * hidden.unsqueeze(1) + at::randn({batch, heads, tokens, dim});
  const RouterDims dims{.model_dim = dim, .num_experts = 8, .num_heads = heads};

  RouterSpec literal = Spec(2);
  literal.mutable_attention_aware()->set_likelihood_scale(ABSOLUTE);
  literal.mutable_attention_aware()->set_sigma(1);
  auto absolute = Create(literal, dims);
  EXPECT_GT(std::get<0>(absolute->Posterior(hidden, context).max(-1)).mean().item<double>(), 0.99);
  RoutingDecision a = absolute->Route(hidden, context);
  EXPECT_LT(a.aggregation_effective_neighbours.mean().item<double>(), 1.05);

  auto relative = Create(Spec(2), dims);
  EXPECT_LT(std::get<0>(relative->Posterior(hidden, context).max(-1)).mean().item<double>(), 0.6);
  RoutingDecision r = relative->Route(hidden, context);
  EXPECT_GT(r.aggregation_effective_neighbours.mean().item<double>(), 2.0);
  EXPECT_LT(r.aggregation_self_weight.mean().item<double>(), 0.5);
}

// With every V_h[j] equal the likelihood is flat in j, so the posterior is A
// itself and p_i = sum_j A_h*[i, j] r_j, h* the head whose row A_h[i, :] has
// the lowest entropy. Causal attention has exact zeros: no NaN.
TEST(AttentionAwareTest, FlatLikelihoodReducesToAttention) {
  at::manual_seed(11);
  const int64_t batch = 2, heads = 3, tokens = 6, dim = 4, experts = 5;
  for (bool causal : {true, false}) {
    auto router = Create(Spec(2), {.model_dim = dim, .num_experts = experts, .num_heads = heads});
    SetParameter(*router, "gate_weight", at::randn({experts, dim}));
    const at::Tensor hidden = at::randn({batch, tokens, dim});
    RoutingContext context;
    context.attention_probs = RandomAttention(batch, heads, tokens, causal);
    context.attention_values =
        at::randn({batch, heads, 1, dim}).expand({batch, heads, tokens, dim}) * 3;

    const at::Tensor posterior = router->Posterior(hidden, context);
    EXPECT_TRUE(at::allclose(posterior, context.attention_probs, 0, 1e-6));
    RoutingDecision d = router->Route(hidden, context);
    ASSERT_FALSE(at::isnan(d.aggregated_probs).any().item<bool>());
    for (int64_t b = 0; b < batch; ++b) {
      for (int64_t i = 0; i < tokens; ++i) {
        int64_t best = 0;
        double best_entropy = 1e9;
        for (int64_t h = 0; h < heads; ++h) {
          const double entropy = Entropy(context.attention_probs[b][h][i]);
          if (entropy < best_entropy) best_entropy = entropy, best = h;
        }
        const at::Tensor expected =
            at::matmul(context.attention_probs[b][best][i], d.gate_probs[b]);
        EXPECT_TRUE(at::allclose(d.aggregated_probs[b][i], expected, 0, 1e-6))
            << "causal " << causal << " b " << b << " i " << i;
      }
    }
  }
}

TEST(AttentionAwareTest, PosteriorRowsSumToOneEvenForFarApartTokens) {
  at::manual_seed(12);
  for (double scale : {1.0, 1e3}) {
    RouterSpec spec = Spec(2);
    spec.mutable_attention_aware()->set_sigma(scale > 1 ? 0.1 : 1.0);
    auto router = Create(spec, {.model_dim = 8, .num_experts = 4, .num_heads = 2});
    const at::Tensor hidden = at::randn({2, 7, 8}) * scale;
    RoutingContext context;
    context.attention_probs = RandomAttention(2, 2, 7, /*causal=*/true);
    context.attention_values = at::randn({2, 2, 7, 8}) * scale;
    const at::Tensor posterior = router->Posterior(hidden, context);
    EXPECT_TRUE(at::isfinite(posterior).all().item<bool>());
    EXPECT_TRUE(at::allclose(posterior.sum(-1), at::ones({2, 2, 7}), 0, 1e-5));
    // A = 0 (above the diagonal) stays 0.
    EXPECT_EQ(posterior.masked_select(context.attention_probs == 0).abs().sum().item<float>(), 0);
    RoutingDecision d = router->Route(hidden, context);
    EXPECT_TRUE(at::isfinite(d.combine_weights).all().item<bool>());
    EXPECT_TRUE(at::allclose(d.aggregated_probs.sum(-1), at::ones({2, 7}), 0, 1e-5));
  }
}

TEST(AttentionAwareTest, GradientsAreFiniteAndReachTheGate) {
  at::manual_seed(13);
  for (HeadSelection selection : {LOWEST_ENTROPY, LOWEST_MEAN_ENTROPY, ALL_HEADS_WEIGHTED}) {
    RouterSpec spec = Spec(2, selection);
    spec.mutable_attention_aware()->set_renormalize(true);
    spec.set_load_balance_coef(0.01);
    auto router = Create(spec, {.model_dim = 6, .num_experts = 4, .num_heads = 3});
    const at::Tensor hidden = at::randn({2, 5, 6}).requires_grad_(true);
    const at::Tensor scores = at::randn({2, 3, 5, 5}).requires_grad_(true);
    const at::Tensor values = at::randn({2, 3, 5, 6}).requires_grad_(true);
    RoutingContext context;
    context.attention_probs =
        at::softmax(scores.masked_fill(at::ones({5, 5}, at::kBool).triu(1),
                                       -std::numeric_limits<float>::infinity()),
                    -1);
    context.attention_values = values;
    RoutingDecision d = router->Route(hidden, context);
    ASSERT_EQ(d.aux_losses.size(), 1u);
    ((d.combine_weights * at::randn({2, 5, 4})).sum() + d.aux_losses[0].second).backward();
    const at::Tensor gate_grad = router->named_parameters()["gate_weight"].grad();
    ASSERT_TRUE(gate_grad.defined());
    EXPECT_GT(gate_grad.abs().sum().item<double>(), 0) << selection;
    for (const at::Tensor& t : {gate_grad, hidden.grad(), scores.grad(), values.grad()}) {
      ASSERT_TRUE(t.defined());
      EXPECT_TRUE(at::isfinite(t).all().item<bool>()) << selection;
    }
    EXPECT_GT(values.grad().abs().sum().item<double>(), 0);
  }
}

// Padded keys are never aggregated, whatever mass A gives them.
TEST(AttentionAwareTest, PaddedTokensAreNotAggregated) {
  at::manual_seed(14);
  auto router = Create(Spec(2), {.model_dim = 4, .num_experts = 3, .num_heads = 2});
  SetParameter(*router, "gate_weight", at::randn({3, 4}));
  const at::Tensor hidden = at::randn({2, 5, 4});
  RoutingContext context;
  context.attention_probs = RandomAttention(2, 2, 5, /*causal=*/false);
  context.attention_values = at::randn({2, 2, 5, 4});
  context.padding_mask = at::ones({2, 5}, at::kBool);
  context.padding_mask[0].slice(0, 3).fill_(false);

  const at::Tensor posterior = router->Posterior(hidden, context);
  EXPECT_EQ(posterior[0].slice(2, 3).abs().max().item<float>(), 0.0f);
  EXPECT_TRUE(at::allclose(posterior.sum(-1), at::ones({2, 2, 5}), 0, 1e-5));

  // New padded tokens (hidden, values, attention to them) change nothing for
  // the real tokens.
  at::Tensor changed_hidden = hidden.clone();
  changed_hidden[0].slice(0, 3).normal_(0, 5);
  RoutingContext changed = context;
  changed.attention_values = context.attention_values.clone();
  changed.attention_values[0].slice(1, 3).normal_(0, 5);
  changed.attention_probs = context.attention_probs.clone();
  changed.attention_probs[0].slice(2, 3).mul_(7);
  RoutingDecision a = router->Route(hidden, context);
  RoutingDecision b = router->Route(changed_hidden, changed);
  EXPECT_TRUE(at::allclose(a.aggregated_probs[0].slice(0, 0, 3),
                           b.aggregated_probs[0].slice(0, 0, 3), 0, 1e-6));
  EXPECT_TRUE(at::equal(a.selected[0].slice(0, 0, 3), b.selected[0].slice(0, 0, 3)));

  // A query whose every key is padded keeps itself: no NaN.
  RoutingContext all_padded = context;
  all_padded.padding_mask = at::zeros({2, 5}, at::kBool);
  RoutingDecision c = router->Route(hidden, all_padded);
  EXPECT_TRUE(at::allclose(c.aggregated_probs, c.gate_probs));
}

// With causal attention, per-token head choice reads only tokens <= i; one
// head per sequence reads them all. Values are flat in j (posterior = A).
// Rows 4..7 of one head are one-hot (entropy 0) and of the other uniform over
// the prefix (entropy >= log 5 each, more than all rows 0..3 together can
// have), so swapping them flips the per-sequence head choice.
TEST(AttentionAwareTest, CausalUnlessOneHeadPerSequence) {
  at::manual_seed(15);
  const int64_t tokens = 8;
  const at::Tensor prefix = RandomAttention(3, 2, tokens, /*causal=*/true, 3.0);
  const at::Tensor one_hot = at::eye(tokens).slice(0, 4);  // rows 4..7
  const at::Tensor uniform =
      at::ones({tokens, tokens}).tril().slice(0, 4) / at::arange(5, 9, at::kFloat).unsqueeze(1);
  auto attention = [&](int64_t sharp_head) {
    at::Tensor a = prefix.clone();
    a.select(1, sharp_head).slice(1, 4).copy_(one_hot);
    a.select(1, 1 - sharp_head).slice(1, 4).copy_(uniform);
    return a;
  };
  for (HeadSelection selection : {LOWEST_ENTROPY, ALL_HEADS_WEIGHTED, LOWEST_MEAN_ENTROPY}) {
    auto router = Create(Spec(2, selection), {.model_dim = 4, .num_experts = 4, .num_heads = 2});
    SetParameter(*router, "gate_weight", at::randn({4, 4}) * 2);
    const at::Tensor hidden = at::randn({3, tokens, 4});
    RoutingContext context;
    context.attention_probs = attention(0);
    context.attention_values = at::randn({3, 2, 1, 4}).expand({3, 2, tokens, 4});
    // Later tokens change: their hidden states and attention rows.
    at::Tensor changed_hidden = hidden.clone();
    changed_hidden.slice(1, 4).normal_(0, 3);
    RoutingContext changed = context;
    changed.attention_probs = attention(1);
    RoutingDecision a = router->Route(hidden, context);
    RoutingDecision b = router->Route(changed_hidden, changed);
    const double prefix_change =
        (a.aggregated_probs.slice(1, 0, 4) - b.aggregated_probs.slice(1, 0, 4))
            .abs()
            .max()
            .item<double>();
    if (router->IsCausal(true)) {
      EXPECT_LT(prefix_change, 1e-6) << selection;
      EXPECT_TRUE(at::equal(a.selected.slice(1, 0, 4), b.selected.slice(1, 0, 4)));
    } else {
      EXPECT_EQ(selection, LOWEST_MEAN_ENTROPY);
      EXPECT_GT(prefix_change, 1e-3);
    }
  }
}

TEST(AttentionAwareTest, CombineWeightsAreZeroOutsideTheSelection) {
  at::manual_seed(16);
  RouterSpec spec = Spec(2);
  spec.mutable_attention_aware()->set_gate(SIGMOID);
  auto router = Create(spec, {.model_dim = 8, .num_experts = 6, .num_heads = 2});
  SetParameter(*router, "gate_weight", at::randn({6, 8}));
  RoutingContext context;
  context.attention_probs = RandomAttention(3, 2, 9, /*causal=*/true);
  context.attention_values = at::randn({3, 2, 9, 8});
  RoutingDecision d = router->Route(at::randn({3, 9, 8}), context);
  EXPECT_TRUE(at::allclose(d.gate_probs, at::sigmoid(d.logits)));
  EXPECT_TRUE(at::isfinite(d.combine_weights).all().item<bool>());
  EXPECT_GE(d.combine_weights.min().item<float>(), 0);
  EXPECT_EQ(d.combine_weights.masked_select(d.selected.logical_not()).abs().sum().item<float>(), 0);
  EXPECT_TRUE(at::equal(d.selected.sum(-1), at::full({3, 9}, 2, at::kLong)));
  // p is a convex mix of r, so it stays within r's range per expert.
  EXPECT_LE(d.aggregated_probs.max().item<float>(), d.gate_probs.max().item<float>() + 1e-6);
}

TEST(AttentionAwareTest, MissingAttentionIsAProgrammerError) {
  auto router = Create(Spec(1), {.model_dim = 2, .num_experts = 2, .num_heads = 1});
  EXPECT_THROW(router->Route(at::randn({1, 3, 2}), {}), c10::Error);
}

TEST(AttentionAwareRegistrationTest, ResolveAndValidate) {
  const RouterRegistration* entry = *RouterRegistry().Find("attention_aware");
  RouterSpec spec;
  spec.set_name("attention_aware");
  spec.set_top_k(2);
  entry->resolve(&spec, {.model_dim = 4, .num_experts = 3, .num_heads = 2});
  ASSERT_TRUE(spec.has_attention_aware());
  EXPECT_TRUE(spec.attention_aware().has_sigma());
  EXPECT_EQ(spec.attention_aware().sigma(), 1.0f);
  EXPECT_EQ(spec.attention_aware().likelihood_scale(), RELATIVE);
  EXPECT_EQ(spec.attention_aware().head_selection(), LOWEST_ENTROPY);
  EXPECT_EQ(spec.attention_aware().gate(), SOFTMAX);

  const RouterDims dims{.model_dim = 4, .num_experts = 3, .num_heads = 2};
  auto error = [&](const RouterSpec& s) {
    return std::string(CreateRouter(s, dims).status().message());
  };
  spec.mutable_attention_aware()->set_sigma(-1);
  EXPECT_EQ(error(spec), "router.attention_aware.sigma: must be > 0, got -1");
  spec.mutable_attention_aware()->set_sigma(0);
  EXPECT_EQ(error(spec), "router.attention_aware.sigma: must be > 0, got 0");
  spec.mutable_attention_aware()->set_sigma(0.5);
  auto router = CreateRouter(spec, dims);
  ASSERT_TRUE(router.ok()) << router.status();
  EXPECT_THAT((*router)->named_parameters().keys(), ElementsAre("gate_weight"));
  EXPECT_EQ((*router)->named_parameters()["gate_weight"].sizes(), (std::vector<int64_t>{3, 4}));

  spec.set_top_k(4);
  EXPECT_THAT(error(spec), HasSubstr("router.top_k"));
  RouterSpec wrong = Spec(1);
  wrong.mutable_similarity_aware();
  EXPECT_THAT(error(wrong), HasSubstr("takes router.attention_aware"));

  RouterSpec bad_scale = Spec(2);
  bad_scale.mutable_attention_aware()->set_likelihood_scale(static_cast<LikelihoodScale>(7));
  EXPECT_EQ(error(bad_scale),
            "router.attention_aware.likelihood_scale: must be RELATIVE or "
            "ABSOLUTE, got 7");

  // With k = 1, renormalising p makes every combine weight p/p = 1.
  RouterSpec single = Spec(1);
  single.mutable_attention_aware()->set_renormalize(true);
  EXPECT_EQ(error(single),
            "router.attention_aware.renormalize: with top_k = 1 every combine "
            "weight is p/p = 1, so the task loss gives the gate zero gradient "
            "(only the load-balance loss would train it); set renormalize: "
            "false (Switch-style) or top_k >= 2");
  single.set_top_k(2);
  EXPECT_TRUE(CreateRouter(single, dims).ok());
  single.set_top_k(1);
  single.mutable_attention_aware()->set_renormalize(false);
  EXPECT_TRUE(CreateRouter(single, dims).ok());
}

// The aggregation ablation (ablate_aggregation: the posterior replaced by
// I) against token_choice, an independent implementation of "top-k of r":
// with the same gate weight, renormalisation, gate function and
// auxiliary-loss coefficients, the whole decision must be token choice's,
// bit for bit, with p = r, for every head selection. The same inputs without
// the ablation must move p away from r, so the comparison can fail.
struct AblationCase {
  bool renormalize = false;
  GateFunction gate = SOFTMAX;
  HeadSelection selection = LOWEST_ENTROPY;
};

RouterSpec AblationSpec(const AblationCase& c, bool ablate) {
  RouterSpec spec = Spec(2, c.selection);
  spec.set_load_balance_coef(0.01);
  spec.set_z_loss_coef(0.001);
  spec.mutable_attention_aware()->set_renormalize(c.renormalize);
  spec.mutable_attention_aware()->set_gate(c.gate);
  spec.mutable_attention_aware()->set_ablate_aggregation(ablate);
  return spec;
}

RouterSpec TokenChoiceSpec(const AblationCase& c) {
  RouterSpec spec;
  spec.set_name("token_choice");
  spec.set_top_k(2);
  spec.set_load_balance_coef(0.01);
  spec.set_z_loss_coef(0.001);
  spec.mutable_token_choice()->set_renormalize(c.renormalize);
  spec.mutable_token_choice()->set_gate(c.gate);
  return spec;
}

std::shared_ptr<Router> CreateAny(const RouterSpec& spec, const RouterDims& dims) {
  absl::StatusOr<std::shared_ptr<Router>> router = CreateRouter(spec, dims);
  EXPECT_TRUE(router.ok()) << router.status();
  return router.ok() ? *router : nullptr;
}

TEST(AttentionAwareAblationTest, AblatedAggregationIsTokenChoice) {
  at::manual_seed(30);
  const RouterDims dims{.model_dim = 6, .num_experts = 5, .num_heads = 3, .causal_model = true};
  const at::Tensor gate = at::randn({5, 6});
  const at::Tensor hidden = at::randn({2, 8, 6});
  RoutingContext base;
  base.causal = true;
  base.attention_probs = RandomAttention(2, 3, 8, /*causal=*/true);
  base.attention_values = at::randn({2, 3, 8, 6});
  int cases = 0;
  for (HeadSelection selection : {LOWEST_ENTROPY, LOWEST_MEAN_ENTROPY, ALL_HEADS_WEIGHTED}) {
    for (bool renormalize : {false, true}) {
      for (GateFunction gate_function : {SOFTMAX, SIGMOID}) {
        for (bool training : {false, true}) {
          const AblationCase c{renormalize, gate_function, selection};
          SCOPED_TRACE(::testing::Message()
                       << "selection " << selection << " renormalize " << renormalize << " gate "
                       << gate_function << " training " << training);
          RoutingContext context = base;
          context.training = training;
          auto token_choice = CreateAny(TokenChoiceSpec(c), dims);
          SetParameter(*token_choice, "gate_weight", gate);
          const RoutingDecision expected = token_choice->Route(hidden, context);

          auto ablated = Create(AblationSpec(c, /*ablate=*/true), dims);
          SetParameter(*ablated, "gate_weight", gate);
          const RoutingDecision d = ablated->Route(hidden, context);
          ExpectSameDecisionWithPEqualR(d, expected);
          EXPECT_FALSE(d.dropped.defined());
          EXPECT_EQ(d.aux_losses.size(), 2u);

          // The same router without the ablation aggregates: p moves away
          // from r and the decision is no longer token choice's.
          auto full = Create(AblationSpec(c, /*ablate=*/false), dims);
          SetParameter(*full, "gate_weight", gate);
          const RoutingDecision aggregated = full->Route(hidden, context);
          EXPECT_TRUE(at::equal(aggregated.gate_probs, d.gate_probs));
          EXPECT_GT(
              (aggregated.aggregated_probs - aggregated.gate_probs).abs().max().item<double>(),
              1e-2);
          EXPECT_FALSE(at::equal(aggregated.combine_weights, expected.combine_weights));
          ++cases;
        }
      }
    }
  }
  EXPECT_EQ(cases, 24);
}

// The diagnostics describe the W actually used, I (self-weight 1, one
// effective neighbour), while the head is still chosen as the full router
// chooses it, so the head change between epochs of an ablation row compares
// with the full router's. Evaluation only, like the full router's.
TEST(AttentionAwareAblationTest, DiagnosticsDescribeTheIdentityAndTheHead) {
  at::manual_seed(31);
  const at::Tensor hidden = at::randn({2, 7, 4}).requires_grad_(true);
  RoutingContext context;
  context.attention_probs = RandomAttention(2, 3, 7, /*causal=*/true);
  context.attention_values = at::randn({2, 3, 7, 4});
  context.padding_mask = at::ones({2, 7}, at::kBool);
  context.padding_mask[1].slice(0, 5).fill_(false);
  const RouterDims dims{.model_dim = 4, .num_experts = 3, .num_heads = 3};
  for (HeadSelection selection : {LOWEST_ENTROPY, LOWEST_MEAN_ENTROPY, ALL_HEADS_WEIGHTED}) {
    AblationCase c;
    c.selection = selection;
    auto ablated = Create(AblationSpec(c, /*ablate=*/true), dims);
    auto full = Create(AblationSpec(c, /*ablate=*/false), dims);
    const RoutingDecision d = ablated->Route(hidden, context);
    const RoutingDecision reference = full->Route(hidden, context);
    ASSERT_TRUE(d.aggregation_self_weight.defined()) << selection;
    ASSERT_TRUE(d.aggregation_effective_neighbours.defined()) << selection;
    ASSERT_TRUE(d.aggregation_head.defined()) << selection;
    EXPECT_TRUE(at::equal(d.aggregation_self_weight, at::ones({2, 7}))) << selection;
    EXPECT_TRUE(at::equal(d.aggregation_effective_neighbours, at::ones({2, 7}))) << selection;
    EXPECT_FALSE(d.aggregation_self_weight.requires_grad());
    EXPECT_EQ(d.aggregation_effective_neighbours.scalar_type(), at::kFloat);
    EXPECT_TRUE(at::equal(d.aggregation_head, reference.aggregation_head)) << selection;
    EXPECT_LT(reference.aggregation_self_weight.min().item<double>(), 0.99) << selection;
    // DescribeAggregation of an explicit identity agrees.
    RoutingDecision identity;
    DescribeAggregation(at::eye(7).expand({2, 7, 7}), &identity);
    EXPECT_TRUE(at::equal(identity.aggregation_self_weight, d.aggregation_self_weight));
    EXPECT_TRUE(
        at::equal(identity.aggregation_effective_neighbours, d.aggregation_effective_neighbours));

    RoutingContext training = context;
    training.training = true;
    const RoutingDecision t = ablated->Route(hidden, training);
    EXPECT_FALSE(t.aggregation_self_weight.defined()) << selection;
    EXPECT_FALSE(t.aggregation_effective_neighbours.defined()) << selection;
    EXPECT_FALSE(t.aggregation_head.defined()) << selection;
    EXPECT_TRUE(at::equal(t.selected, d.selected));
    EXPECT_TRUE(at::equal(t.combine_weights, d.combine_weights));
  }
}

// Combine weights come from p = r, so the task loss alone (no auxiliary
// losses) trains the gate, with token choice's gradient, renormalised or
// not. W = I is a constant: no gradient reaches the attention through the
// router.
TEST(AttentionAwareAblationTest, TheTaskLossStillTrainsTheGate) {
  at::manual_seed(32);
  const RouterDims dims{.model_dim = 6, .num_experts = 4, .num_heads = 3};
  const at::Tensor gate = at::randn({4, 6});
  const at::Tensor hidden = at::randn({2, 5, 6});
  const at::Tensor task = at::randn({2, 5, 4});  // stands in for dL/dw
  for (bool training : {true, false}) {
    for (bool renormalize : {false, true}) {
      AblationCase c;
      c.renormalize = renormalize;
      RouterSpec spec = AblationSpec(c, /*ablate=*/true);
      spec.clear_load_balance_coef();
      spec.clear_z_loss_coef();
      auto ablated = Create(spec, dims);
      SetParameter(*ablated, "gate_weight", gate);
      const at::Tensor input = hidden.clone().requires_grad_(true);
      const at::Tensor values = at::randn({2, 3, 5, 6}).requires_grad_(true);
      RoutingContext context;
      context.training = training;
      context.attention_probs = RandomAttention(2, 3, 5, /*causal=*/true);
      context.attention_values = values;
      RoutingDecision d = ablated->Route(input, context);
      EXPECT_TRUE(d.aux_losses.empty());
      (d.combine_weights * task).sum().backward();
      const at::Tensor gate_grad = ablated->named_parameters()["gate_weight"].grad();
      ASSERT_TRUE(gate_grad.defined()) << "renormalize " << renormalize;
      EXPECT_GT(gate_grad.abs().sum().item<double>(), 0) << "renormalize " << renormalize;
      EXPECT_TRUE(at::isfinite(gate_grad).all().item<bool>());
      EXPECT_GT(input.grad().abs().sum().item<double>(), 0);
      EXPECT_FALSE(values.grad().defined());

      RouterSpec reference = TokenChoiceSpec(c);
      reference.clear_load_balance_coef();
      reference.clear_z_loss_coef();
      auto token_choice = CreateAny(reference, dims);
      SetParameter(*token_choice, "gate_weight", gate);
      (token_choice->Route(hidden, context).combine_weights * task).sum().backward();
      EXPECT_TRUE(at::allclose(gate_grad, token_choice->named_parameters()["gate_weight"].grad(),
                               1e-6, 1e-7))
          << "renormalize " << renormalize;
    }
  }
}

// p = r reads only token i: the ablation is causal even with one head per
// sequence, whose head reads every token. The attention of
// CausalUnlessOneHeadPerSequence: changing tokens 4..7 flips the sequence's
// head (reported, and non-causal as before) but no decision before them.
TEST(AttentionAwareAblationTest, CausalEvenWithOneHeadPerSequence) {
  at::manual_seed(33);
  const int64_t tokens = 8;
  const at::Tensor prefix = RandomAttention(3, 2, tokens, /*causal=*/true, 3.0);
  const at::Tensor one_hot = at::eye(tokens).slice(0, 4);
  const at::Tensor uniform =
      at::ones({tokens, tokens}).tril().slice(0, 4) / at::arange(5, 9, at::kFloat).unsqueeze(1);
  auto attention = [&](int64_t sharp_head) {
    at::Tensor a = prefix.clone();
    a.select(1, sharp_head).slice(1, 4).copy_(one_hot);
    a.select(1, 1 - sharp_head).slice(1, 4).copy_(uniform);
    return a;
  };
  AblationCase c;
  c.selection = LOWEST_MEAN_ENTROPY;
  auto router =
      Create(AblationSpec(c, /*ablate=*/true), {.model_dim = 4, .num_experts = 4, .num_heads = 2});
  EXPECT_TRUE(router->IsCausal(true));
  EXPECT_TRUE(router->IsCausal(false));
  SetParameter(*router, "gate_weight", at::randn({4, 4}) * 2);
  const at::Tensor hidden = at::randn({3, tokens, 4});
  RoutingContext context;
  context.attention_probs = attention(0);
  context.attention_values = at::randn({3, 2, 1, 4}).expand({3, 2, tokens, 4});
  at::Tensor changed_hidden = hidden.clone();
  changed_hidden.slice(1, 4).normal_(0, 3);
  RoutingContext changed = context;
  changed.attention_probs = attention(1);
  const RoutingDecision a = router->Route(hidden, context);
  const RoutingDecision b = router->Route(changed_hidden, changed);
  EXPECT_TRUE(at::equal(a.selected.slice(1, 0, 4), b.selected.slice(1, 0, 4)));
  EXPECT_TRUE(at::equal(a.combine_weights.slice(1, 0, 4), b.combine_weights.slice(1, 0, 4)));
  EXPECT_FALSE(at::equal(a.aggregation_head.slice(1, 0, 4), b.aggregation_head.slice(1, 0, 4)));
}

// The attention is still read: a model that forgets it is caught in
// training too, where the ablation computes no posterior.
TEST(AttentionAwareAblationTest, MissingAttentionIsStillAProgrammerError) {
  AblationCase c;
  auto router =
      Create(AblationSpec(c, /*ablate=*/true), {.model_dim = 2, .num_experts = 2, .num_heads = 1});
  EXPECT_TRUE(router->NeedsAttention());
  for (bool training : {false, true}) {
    RoutingContext context;
    context.training = training;
    EXPECT_THROW(router->Route(at::randn({1, 3, 2}), context), c10::Error) << training;
  }
}

// A plain bool: resolve keeps it (and the printed, saved spec shows it),
// validation accepts it with every head selection and likelihood scale.
TEST(AttentionAwareAblationTest, ResolvedPrintedAndAccepted) {
  const RouterRegistration* entry = *RouterRegistry().Find("attention_aware");
  const RouterDims dims{.model_dim = 4, .num_experts = 3, .num_heads = 2};
  RouterSpec spec;
  spec.set_name("attention_aware");
  spec.set_top_k(2);
  spec.mutable_attention_aware()->set_ablate_aggregation(true);
  entry->resolve(&spec, dims);
  EXPECT_TRUE(spec.attention_aware().ablate_aggregation());
  EXPECT_EQ(spec.attention_aware().head_selection(), LOWEST_ENTROPY);
  std::string text;
  ASSERT_TRUE(google::protobuf::TextFormat::PrintToString(spec, &text));
  EXPECT_THAT(text, HasSubstr("ablate_aggregation: true"));
  for (HeadSelection selection : {LOWEST_ENTROPY, LOWEST_MEAN_ENTROPY, ALL_HEADS_WEIGHTED}) {
    for (LikelihoodScale scale : {RELATIVE, ABSOLUTE}) {
      RouterSpec s = Spec(2, selection);
      s.mutable_attention_aware()->set_likelihood_scale(scale);
      s.mutable_attention_aware()->set_ablate_aggregation(true);
      EXPECT_TRUE(entry->validate(s, dims).ok()) << selection << " " << scale;
    }
  }
  // The k = 1 renormalisation check still applies: the one weight would be
  // r/r = 1.
  RouterSpec single = Spec(1);
  single.mutable_attention_aware()->set_renormalize(true);
  single.mutable_attention_aware()->set_ablate_aggregation(true);
  EXPECT_THAT(entry->validate(single, dims).message(),
              HasSubstr("router.attention_aware.renormalize"));
}

}  // namespace
}  // namespace moelab
