#include "routers/similarity_aware.h"

#include <ATen/ATen.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/nn/module.h>

#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
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

RouterSpec Spec(double top_k) {
  RouterSpec spec;
  spec.set_name("similarity_aware");
  spec.set_top_k(top_k);
  return spec;
}

std::shared_ptr<Router> Create(const RouterSpec& spec, const RouterDims& dims) {
  absl::StatusOr<std::shared_ptr<Router>> router = CreateRouter(spec, dims);
  EXPECT_TRUE(router.ok()) << router.status();
  return router.ok() ? *router : nullptr;
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

double Entropy(const at::Tensor& distribution) {
  double h = 0;
  for (int64_t i = 0; i < distribution.numel(); ++i) {
    const double p = distribution[i].item<double>();
    if (p > 0) h -= p * std::log(p);
  }
  return h;
}

// Two tokens u0 = e0, u1 = e1 and a gate that reads coordinate e of u for
// expert e: r0 = softmax([1, 0]) = [a, b], r1 = [b, a] with a = e / (1 + e).
// The paper's literal S = softmax(U U^T / 1) = [[a, b], [b, a]], so
// p0 = a r0 + b r1 = [a^2 + b^2, 2ab] and p1 = [2ab, a^2 + b^2].
TEST(SimilarityAwareTest, TwoTokensByHand) {
  RouterSpec spec = Spec(1);
  spec.mutable_similarity_aware()->set_scale(RAW_DOT_PRODUCT);
  spec.mutable_similarity_aware()->set_causal(false);
  auto router = Create(spec, {.model_dim = 2, .num_experts = 2});
  SetParameter(*router, "gate_weight", Tensor2d({{1, 0}, {0, 1}}));
  const at::Tensor hidden = Tensor2d({{1, 0}, {0, 1}}).unsqueeze(0);

  RoutingDecision d = router->Route(hidden, {});
  const double a = std::exp(1.0) / (1 + std::exp(1.0)), b = 1 - a;
  const double same = a * a + b * b, mixed = 2 * a * b;
  ASSERT_TRUE(d.aggregated_probs.defined());
  EXPECT_TRUE(at::allclose(d.aggregated_probs[0],
                           Tensor2d({{float(same), float(mixed)}, {float(mixed), float(same)}}), 0,
                           1e-6));
  EXPECT_TRUE(at::allclose(d.gate_probs[0], Tensor2d({{float(a), float(b)}, {float(b), float(a)}}),
                           0, 1e-6));
  EXPECT_TRUE(at::allclose(d.logits[0], Tensor2d({{1, 0}, {0, 1}})));
  EXPECT_TRUE(at::equal(d.selected[0], Tensor2d({{1, 0}, {0, 1}}).to(at::kBool)));
  EXPECT_TRUE(
      at::allclose(d.combine_weights[0], Tensor2d({{float(same), 0}, {0, float(same)}}), 0, 1e-6));
  EXPECT_FALSE(d.dropped.defined());
}

// Three tokens u0 = e0, u1 = e1, u2 = e0 + e1, three experts, the third with
// a zero gate row; raw dot products, causal, tau = 2, k = 2, renormalised.
// logits: [1,0,0], [0,1,0], [1,1,0]. Causal S / 2:
//   row 0: [1]
//   row 1: softmax([0, 1/2])          = [c, d]    c = 1/(1+e^.5)
//   row 2: softmax([1/2, 1/2, 1])     = [f, f, g] f = 1/(2+e^.5)
TEST(SimilarityAwareTest, ThreeCausalTokensByHand) {
  RouterSpec spec = Spec(2);
  spec.mutable_similarity_aware()->set_scale(RAW_DOT_PRODUCT);
  spec.mutable_similarity_aware()->set_causal(true);
  spec.mutable_similarity_aware()->set_temperature(2);
  spec.mutable_similarity_aware()->set_renormalize(true);
  auto router = Create(spec, {.model_dim = 2, .num_experts = 3});
  SetParameter(*router, "gate_weight", Tensor2d({{1, 0}, {0, 1}, {0, 0}}));
  const at::Tensor hidden = Tensor2d({{1, 0}, {0, 1}, {1, 1}}).unsqueeze(0);

  const double e = std::exp(1.0), h = std::exp(0.5);
  const std::vector<double> r0 = {e / (e + 2), 1 / (e + 2), 1 / (e + 2)};
  const std::vector<double> r1 = {1 / (e + 2), e / (e + 2), 1 / (e + 2)};
  const std::vector<double> r2 = {e / (2 * e + 1), e / (2 * e + 1), 1 / (2 * e + 1)};
  const double c = 1 / (1 + h), dd = h / (1 + h);
  const double f = 1 / (2 + h), g = h / (2 + h);
  std::vector<std::vector<float>> p(3, std::vector<float>(3));
  for (int x = 0; x < 3; ++x) {
    p[0][x] = r0[x];
    p[1][x] = c * r0[x] + dd * r1[x];
    p[2][x] = f * r0[x] + f * r1[x] + g * r2[x];
  }
  RoutingDecision d = router->Route(hidden, {});
  EXPECT_TRUE(at::allclose(d.aggregated_probs[0], Tensor2d(p), 0, 1e-6)) << d.aggregated_probs;
  // Token 0 takes experts 0 and one of the tied 1, 2 (at::topk's choice);
  // token 1: p1 ~ [0.349, 0.439, 0.212] -> experts 0, 1; token 2: p2 ~
  // [0.407, 0.407, 0.186] -> experts 0, 1.
  EXPECT_TRUE(d.selected[0][0][0].item<bool>());
  EXPECT_EQ(d.selected[0][0].sum().item<int64_t>(), 2);
  EXPECT_TRUE(at::equal(d.selected[0].slice(0, 1), Tensor2d({{1, 1, 0}, {1, 1, 0}}).to(at::kBool)));
  const float w10 = p[1][0] / (p[1][0] + p[1][1]);
  const float w20 = p[2][0] / (p[2][0] + p[2][1]);
  EXPECT_TRUE(at::allclose(d.combine_weights[0].slice(0, 1),
                           Tensor2d({{w10, 1 - w10, 0}, {w20, 1 - w20, 0}}), 0, 1e-6));
  EXPECT_NEAR(d.combine_weights[0][0].sum().item<float>(), 1.0, 1e-6);

  // S itself: rows as above, zero above the diagonal.
  at::Tensor s = dynamic_cast<SimilarityAwareRouter&>(*router).Similarity(hidden, at::Tensor());
  EXPECT_TRUE(at::allclose(
      s[0], Tensor2d({{1, 0, 0}, {float(c), float(dd), 0}, {float(f), float(f), float(g)}}), 0,
      1e-6));
}

// The sigmoid gate gives r = sigmoid(logits); p is still S r.
TEST(SimilarityAwareTest, SigmoidGateByHand) {
  RouterSpec spec = Spec(1);
  spec.mutable_similarity_aware()->set_causal(false);
  spec.mutable_similarity_aware()->set_gate(SIGMOID);
  auto router = Create(spec, {.model_dim = 2, .num_experts = 2});
  SetParameter(*router, "gate_weight", Tensor2d({{2, 0}, {0, 0}}));
  // u0 = u1 = e0: S = [[1/2, 1/2], [1/2, 1/2]], r = [sigmoid(2), 1/2].
  const at::Tensor hidden = Tensor2d({{1, 0}, {1, 0}}).unsqueeze(0);
  RoutingDecision d = router->Route(hidden, {});
  const float s2 = 1 / (1 + std::exp(-2.0));
  EXPECT_TRUE(at::allclose(d.aggregated_probs[0], Tensor2d({{s2, 0.5}, {s2, 0.5}}), 0, 1e-6));
  EXPECT_TRUE(at::allclose(d.combine_weights[0], Tensor2d({{s2, 0}, {s2, 0}}), 0, 1e-6));
}

// Paper, tau -> 0 with W_s = I: S -> I when each token is most similar to
// itself (unit vectors: u_i . u_i = 1 > u_i . u_j), so the decision is the
// token-choice one: top-k of r, combine = r at the selected experts.
TEST(SimilarityAwareTest, ZeroTemperatureIsTokenChoice) {
  at::manual_seed(1);
  RouterSpec spec = Spec(2);
  spec.mutable_similarity_aware()->set_temperature(1e-4);
  spec.mutable_similarity_aware()->set_causal(false);
  auto router = Create(spec, {.model_dim = 16, .num_experts = 6});
  SetParameter(*router, "gate_weight", at::randn({6, 16}));
  at::Tensor hidden = at::randn({3, 10, 16});
  hidden = hidden / hidden.norm(2, -1, true);

  RoutingDecision d = router->Route(hidden, {});
  const at::Tensor r =
      at::softmax(at::matmul(hidden, router->named_parameters()["gate_weight"].t()), -1);
  const at::Tensor expected_selected =
      at::zeros({3, 10, 6}, at::kBool).scatter_(-1, std::get<1>(at::topk(r, 2)), true);
  EXPECT_TRUE(at::allclose(d.gate_probs, r, 0, 1e-6));
  EXPECT_TRUE(at::allclose(d.aggregated_probs, r, 0, 1e-6));
  EXPECT_TRUE(at::equal(d.selected, expected_selected));
  EXPECT_TRUE(at::allclose(d.combine_weights, r * expected_selected, 0, 1e-6));
}

// Proposition 1: H(p_i) <= sum_j S_ij H(r_j) + H(S_i), for every token of
// many random inputs, temperatures, projections and masks.
TEST(SimilarityAwareTest, EntropyBoundOfProposition1) {
  at::manual_seed(2);
  int checked = 0;
  for (int trial = 0; trial < 40; ++trial) {
    const int64_t dim = 2 + trial % 5, experts = 2 + trial % 4, tokens = 1 + trial % 7;
    RouterSpec spec = Spec(1);
    SimilarityAwareOptions* o = spec.mutable_similarity_aware();
    o->set_temperature(std::pow(10.0, at::rand({1}).item<double>() * 3 - 2));
    o->set_causal(trial % 2 == 0);
    o->set_projection(trial % 3 == 0 ? FULL : IDENTITY);
    auto router = Create(spec, {.model_dim = dim, .num_experts = experts});
    SetParameter(*router, "gate_weight", at::randn({experts, dim}) * 2);
    if (o->projection() == FULL) {
      SetParameter(*router, "similarity_weight", at::randn({dim, dim}));
    }
    const at::Tensor hidden = at::randn({2, tokens, dim}) * 1.5;
    RoutingContext context;
    if (trial % 4 == 1) context.padding_mask = at::rand({2, tokens}) > 0.3;
    RoutingDecision d = router->Route(hidden, context);
    const at::Tensor s =
        dynamic_cast<SimilarityAwareRouter&>(*router).Similarity(hidden, context.padding_mask);
    for (int64_t b = 0; b < 2; ++b) {
      for (int64_t i = 0; i < tokens; ++i) {
        double bound = Entropy(s[b][i]);
        for (int64_t j = 0; j < tokens; ++j) {
          bound += s[b][i][j].item<double>() * Entropy(d.gate_probs[b][j]);
        }
        EXPECT_LE(Entropy(d.aggregated_probs[b][i]), bound + 1e-5)
            << "trial " << trial << " b " << b << " i " << i;
        ++checked;
      }
    }
  }
  EXPECT_GT(checked, 200);
}

// Causal S: tokens after position i cannot change p or the choice at i.
TEST(SimilarityAwareTest, CausalIgnoresLaterTokens) {
  at::manual_seed(3);
  for (bool causal : {true, false}) {
    RouterSpec spec = Spec(2);
    spec.mutable_similarity_aware()->set_causal(causal);
    auto router = Create(spec, {.model_dim = 8, .num_experts = 4});
    EXPECT_EQ(router->IsCausal(!causal), causal);
    SetParameter(*router, "gate_weight", at::randn({4, 8}));
    const at::Tensor hidden = at::randn({2, 7, 8});
    at::Tensor changed = hidden.clone();
    changed.slice(1, 4).copy_(at::randn({2, 3, 8}) * 3);
    RoutingDecision a = router->Route(hidden, {});
    RoutingDecision b = router->Route(changed, {});
    const double prefix_change =
        (a.aggregated_probs.slice(1, 0, 4) - b.aggregated_probs.slice(1, 0, 4))
            .abs()
            .max()
            .item<double>();
    if (causal) {
      EXPECT_LT(prefix_change, 1e-6);
      EXPECT_TRUE(at::equal(a.selected.slice(1, 0, 4), b.selected.slice(1, 0, 4)));
      EXPECT_LT((a.combine_weights.slice(1, 0, 4) - b.combine_weights.slice(1, 0, 4))
                    .abs()
                    .max()
                    .item<double>(),
                1e-6);
    } else {
      EXPECT_GT(prefix_change, 1e-3);
    }
  }
}

TEST(SimilarityAwareTest, CausalDefaultFollowsTheModel) {
  RouterSpec spec = Spec(1);
  auto causal = Create(spec, {.model_dim = 4, .num_experts = 2, .causal_model = true});
  auto bidirectional = Create(spec, {.model_dim = 4, .num_experts = 2});
  EXPECT_TRUE(causal->IsCausal(true));
  EXPECT_FALSE(bidirectional->IsCausal(false));
}

// Padded keys get zero similarity, so padded tokens cannot move p elsewhere.
TEST(SimilarityAwareTest, PaddedTokensAreNotAggregated) {
  at::manual_seed(4);
  RouterSpec spec = Spec(2);
  spec.mutable_similarity_aware()->set_causal(false);
  auto router = Create(spec, {.model_dim = 8, .num_experts = 4});
  SetParameter(*router, "gate_weight", at::randn({4, 8}));
  const at::Tensor hidden = at::randn({2, 5, 8});
  RoutingContext context;
  context.padding_mask = at::ones({2, 5}, at::kBool);
  context.padding_mask[0].slice(0, 3).fill_(false);  // sequence 0: 3 real tokens
  at::Tensor changed = hidden.clone();
  changed[0].slice(0, 3).copy_(at::randn({2, 8}) * 5);

  const at::Tensor s =
      dynamic_cast<SimilarityAwareRouter&>(*router).Similarity(hidden, context.padding_mask);
  EXPECT_EQ(s[0].slice(1, 3).abs().max().item<float>(), 0.0f);
  EXPECT_TRUE(at::allclose(s.sum(-1), at::ones({2, 5}), 0, 1e-6));
  RoutingDecision a = router->Route(hidden, context);
  RoutingDecision b = router->Route(changed, context);
  EXPECT_TRUE(at::allclose(a.aggregated_probs[0].slice(0, 0, 3),
                           b.aggregated_probs[0].slice(0, 0, 3), 0, 1e-6));
  EXPECT_TRUE(at::allclose(a.aggregated_probs[1], b.aggregated_probs[1]));

  // A padded first token under a causal S has no admissible key: it keeps
  // itself (p = r), never NaN.
  spec.mutable_similarity_aware()->set_causal(true);
  auto causal = Create(spec, {.model_dim = 8, .num_experts = 4});
  RoutingContext left_padded;
  left_padded.padding_mask = at::ones({1, 5}, at::kBool);
  left_padded.padding_mask[0][0] = false;
  RoutingDecision c = causal->Route(hidden.slice(0, 0, 1), left_padded);
  EXPECT_FALSE(at::isnan(c.aggregated_probs).any().item<bool>());
  EXPECT_TRUE(at::allclose(c.aggregated_probs[0][0], c.gate_probs[0][0]));
}

// W_s = c I is the identity projection at temperature tau / c, and a
// full-rank A B^T = I is W_s = I (on the default unit-length rows).
TEST(SimilarityAwareTest, ProjectionsAgreeWithIdentity) {
  at::manual_seed(5);
  const RouterDims dims{.model_dim = 4, .num_experts = 3};
  const at::Tensor gate = at::randn({3, 4});
  const at::Tensor hidden = at::randn({2, 6, 4});
  RouterSpec identity_spec = Spec(2);
  identity_spec.mutable_similarity_aware()->set_temperature(0.5);
  auto identity = Create(identity_spec, dims);
  SetParameter(*identity, "gate_weight", gate);
  const at::Tensor expected = identity->Route(hidden, {}).aggregated_probs;

  RouterSpec full_spec = Spec(2);
  full_spec.mutable_similarity_aware()->set_projection(FULL);
  full_spec.mutable_similarity_aware()->set_temperature(1);
  auto full = Create(full_spec, dims);
  SetParameter(*full, "gate_weight", gate);
  SetParameter(*full, "similarity_weight", at::eye(4) * 2);
  EXPECT_TRUE(at::allclose(full->Route(hidden, {}).aggregated_probs, expected, 0, 1e-6));

  RouterSpec low_rank_spec = Spec(2);
  low_rank_spec.mutable_similarity_aware()->set_projection(LOW_RANK);
  low_rank_spec.mutable_similarity_aware()->set_projection_rank(4);
  low_rank_spec.mutable_similarity_aware()->set_temperature(0.5);
  auto low_rank = Create(low_rank_spec, dims);
  SetParameter(*low_rank, "gate_weight", gate);
  SetParameter(*low_rank, "similarity_a", at::eye(4));
  SetParameter(*low_rank, "similarity_b", at::eye(4));
  EXPECT_TRUE(at::allclose(low_rank->Route(hidden, {}).aggregated_probs, expected, 0, 1e-6));
}

TEST(SimilarityAwareTest, ParametersAndTheirInitialValues) {
  const RouterDims dims{.model_dim = 6, .num_experts = 3};
  RouterSpec spec = Spec(2);
  EXPECT_THAT(Create(spec, dims)->named_parameters().keys(), ElementsAre("gate_weight"));
  spec.mutable_similarity_aware()->set_projection(FULL);
  auto full = Create(spec, dims);
  EXPECT_THAT(full->named_parameters().keys(), ElementsAre("gate_weight", "similarity_weight"));
  EXPECT_TRUE(at::equal(full->named_parameters()["similarity_weight"], at::eye(6)));
  const double gate_std = full->named_parameters()["gate_weight"].std().item<double>();
  EXPECT_GT(gate_std, 0.005);
  EXPECT_LT(gate_std, 0.05);

  spec.mutable_similarity_aware()->set_projection(LOW_RANK);
  spec.mutable_similarity_aware()->set_projection_rank(2);
  auto low_rank = Create(spec, dims);
  EXPECT_THAT(low_rank->named_parameters().keys(),
              ElementsAre("gate_weight", "similarity_a", "similarity_b"));
  const at::Tensor a = low_rank->named_parameters()["similarity_a"];
  EXPECT_EQ(a.sizes(), (std::vector<int64_t>{6, 2}));
  // Orthonormal columns: A^T A = I, and B starts equal to A.
  EXPECT_TRUE(at::allclose(at::matmul(a.t(), a), at::eye(2), 0, 1e-5));
  EXPECT_TRUE(at::equal(a, low_rank->named_parameters()["similarity_b"]));
}

TEST(SimilarityAwareTest, GradientsReachEveryParameter) {
  at::manual_seed(6);
  for (SimilarityProjection projection : {IDENTITY, FULL, LOW_RANK}) {
    RouterSpec spec = Spec(2);
    spec.mutable_similarity_aware()->set_projection(projection);
    if (projection == LOW_RANK) spec.mutable_similarity_aware()->set_projection_rank(3);
    spec.set_load_balance_coef(0.01);
    spec.set_z_loss_coef(0.001);
    auto router = Create(spec, {.model_dim = 5, .num_experts = 4, .causal_model = true});
    SetParameter(*router, "gate_weight", at::randn({4, 5}));
    const at::Tensor hidden = at::randn({2, 6, 5}).requires_grad_(true);
    RoutingDecision d = router->Route(hidden, {});
    ASSERT_EQ(d.aux_losses.size(), 2u);
    EXPECT_EQ(d.aux_losses[0].first, "load_balance");
    EXPECT_NEAR(d.aux_losses[0].second.item<double>(),
                0.01 * LoadBalanceLoss(d.gate_probs, d.selected).item<double>(), 1e-7);
    EXPECT_EQ(d.aux_losses[1].first, "z_loss");
    (d.combine_weights * at::randn({2, 6, 4})).sum().backward();
    for (const auto& parameter : router->named_parameters()) {
      ASSERT_TRUE(parameter.value().grad().defined()) << parameter.key();
      EXPECT_GT(parameter.value().grad().abs().sum().item<double>(), 0) << parameter.key();
      EXPECT_TRUE(at::isfinite(parameter.value().grad()).all().item<bool>());
    }
    EXPECT_GT(hidden.grad().abs().sum().item<double>(), 0);
  }
}

TEST(SimilarityAwareTest, CombineWeightsAreZeroOutsideTheSelection) {
  at::manual_seed(7);
  RouterSpec spec = Spec(3);
  auto router = Create(spec, {.model_dim = 8, .num_experts = 5});
  SetParameter(*router, "gate_weight", at::randn({5, 8}));
  RoutingDecision d = router->Route(at::randn({4, 9, 8}), {});
  EXPECT_TRUE(at::isfinite(d.combine_weights).all().item<bool>());
  EXPECT_GE(d.combine_weights.min().item<float>(), 0);
  EXPECT_EQ(d.combine_weights.masked_select(d.selected.logical_not()).abs().sum().item<float>(), 0);
  EXPECT_TRUE(at::equal(d.selected.sum(-1), at::full({4, 9}, 3, at::kLong)));
  EXPECT_TRUE(at::allclose(d.aggregated_probs.sum(-1), at::ones({4, 9}), 0, 1e-5));
}

// Cosine scale: û0 = e0 (u0 = 2 e0), û1 = (e0 + e1) / sqrt(2), cos = c =
// 1/sqrt(2). At tau = 0.5 both rows are softmax over {2, 2c} with their own
// entry first: S = [[q, 1 - q], [1 - q, q]], q = 1 / (1 + e^(2c - 2)).
// Raw dot products: U U^T = [[4, 2], [2, 2]], so S_raw / 0.5 rows are
// softmax([8, 4]) and softmax([4, 4]).
TEST(SimilarityAwareTest, CosineScaleByHand) {
  const at::Tensor hidden = Tensor2d({{2, 0}, {1, 1}}).unsqueeze(0);
  const double c = 1 / std::sqrt(2.0);
  const float q = 1 / (1 + std::exp(2 * c - 2));
  const float raw0 = 1 / (1 + std::exp(-4.0));
  for (SimilarityScale scale : {COSINE_SIMILARITY, RAW_DOT_PRODUCT}) {
    RouterSpec spec = Spec(1);
    spec.mutable_similarity_aware()->set_scale(scale);
    spec.mutable_similarity_aware()->set_temperature(0.5);
    spec.mutable_similarity_aware()->set_causal(false);
    auto router = Create(spec, {.model_dim = 2, .num_experts = 2});
    const at::Tensor s =
        dynamic_cast<SimilarityAwareRouter&>(*router).Similarity(hidden, at::Tensor());
    const at::Tensor expected = scale == COSINE_SIMILARITY
                                    ? Tensor2d({{q, 1 - q}, {1 - q, q}})
                                    : Tensor2d({{raw0, 1 - raw0}, {0.5, 0.5}});
    EXPECT_TRUE(at::allclose(s[0], expected, 0, 1e-6)) << scale << "\n" << s;
  }
}

// Cosine S does not change when tokens are rescaled (each by its own
// factor); raw S does. A zero token stays finite.
TEST(SimilarityAwareTest, CosineIgnoresTheScaleOfEachToken) {
  at::manual_seed(8);
  const at::Tensor hidden = at::randn({2, 6, 8});
  const at::Tensor scaled = hidden * (at::rand({2, 6, 1}) * 10 + 0.1);
  for (SimilarityScale scale : {COSINE_SIMILARITY, RAW_DOT_PRODUCT}) {
    RouterSpec spec = Spec(2);
    spec.mutable_similarity_aware()->set_scale(scale);
    auto router = Create(spec, {.model_dim = 8, .num_experts = 4});
    auto& similarity = dynamic_cast<SimilarityAwareRouter&>(*router);
    const bool same = at::allclose(similarity.Similarity(hidden, at::Tensor()),
                                   similarity.Similarity(scaled, at::Tensor()), 0, 1e-5);
    EXPECT_EQ(same, scale == COSINE_SIMILARITY) << scale;
  }
  RouterSpec spec = Spec(2);
  auto router = Create(spec, {.model_dim = 8, .num_experts = 4});
  at::Tensor with_zero = hidden.clone();
  with_zero[0][2].zero_();
  EXPECT_TRUE(at::isfinite(router->Route(with_zero, {}).aggregated_probs).all().item<bool>());
}

// The decision describes S: W_ii and exp(H(S_i)), detached float32; no head.
// In evaluation (context.training false, as `{}` and every other test here
// route) only.
TEST(SimilarityAwareTest, DescribesTheAggregation) {
  at::manual_seed(9);
  RouterSpec spec = Spec(2);
  spec.mutable_similarity_aware()->set_causal(true);
  auto router = Create(spec, {.model_dim = 8, .num_experts = 4});
  const at::Tensor hidden = at::randn({2, 5, 8}).requires_grad_(true);
  RoutingDecision d = router->Route(hidden, {});
  const at::Tensor s =
      dynamic_cast<SimilarityAwareRouter&>(*router).Similarity(hidden, at::Tensor()).detach();
  ASSERT_TRUE(d.aggregation_self_weight.defined());
  ASSERT_TRUE(d.aggregation_effective_neighbours.defined());
  EXPECT_FALSE(d.aggregation_head.defined());
  EXPECT_FALSE(d.aggregation_self_weight.requires_grad());
  EXPECT_EQ(d.aggregation_self_weight.scalar_type(), at::kFloat);
  EXPECT_TRUE(at::allclose(d.aggregation_self_weight, s.diagonal(0, 1, 2), 0, 1e-6));
  for (int64_t b = 0; b < 2; ++b) {
    for (int64_t i = 0; i < 5; ++i) {
      EXPECT_NEAR(d.aggregation_effective_neighbours[b][i].item<double>(),
                  std::exp(Entropy(s[b][i])), 1e-5);
    }
  }
  // Token 0 of a causal S sees only itself.
  EXPECT_TRUE(at::allclose(d.aggregation_self_weight.select(1, 0), at::ones({2})));

  // Only evaluation reads the diagnostics: training skips them and routes
  // the same.
  RoutingContext training;
  training.training = true;
  RoutingDecision t = router->Route(hidden, training);
  EXPECT_FALSE(t.aggregation_self_weight.defined());
  EXPECT_FALSE(t.aggregation_effective_neighbours.defined());
  EXPECT_FALSE(t.aggregation_head.defined());
  EXPECT_TRUE(at::equal(t.selected, d.selected));
  EXPECT_TRUE(at::allclose(t.combine_weights, d.combine_weights, 0, 0));
}

// A very large tau makes S uniform over the visible tokens: every token's
// neighbours are T (or i + 1 when causal), its self-weight 1 / that.
TEST(SimilarityAwareTest, LargeTemperatureAggregatesOverEveryVisibleToken) {
  at::manual_seed(10);
  const at::Tensor hidden = at::randn({1, 6, 8});
  for (bool causal : {false, true}) {
    for (SimilarityScale scale : {COSINE_SIMILARITY, RAW_DOT_PRODUCT}) {
      RouterSpec spec = Spec(2);
      spec.mutable_similarity_aware()->set_scale(scale);
      spec.mutable_similarity_aware()->set_temperature(1e7);
      spec.mutable_similarity_aware()->set_causal(causal);
      auto router = Create(spec, {.model_dim = 8, .num_experts = 4});
      RoutingDecision d = router->Route(hidden, {});
      for (int64_t i = 0; i < 6; ++i) {
        const double visible = causal ? i + 1 : 6;
        EXPECT_NEAR(d.aggregation_effective_neighbours[0][i].item<double>(), visible, 1e-4)
            << "causal " << causal << " i " << i;
        EXPECT_NEAR(d.aggregation_self_weight[0][i].item<double>(), 1 / visible, 1e-5);
      }
    }
  }
}

// Layer-normed D = 128 states in 4 clusters (same-cluster cosine about 0.6):
// the paper's literal setting (raw dot products, tau = 1) keeps every
// token to itself (u_i.u_i ~ 128 exceeds u_i.u_j ~ 77 by ~50 nats), so
// p = r; the default cosine scale aggregates over the cluster.
TEST(SimilarityAwareTest, LiteralSettingIsTheIdentityOnLayerNormedStates) {
  at::manual_seed(11);
  const int64_t dim = 128, tokens = 32;
  const at::Tensor centers = at::randn({4, dim});
  const at::Tensor cluster = at::arange(tokens) % 4;
  at::Tensor hidden = centers.index_select(0, cluster).unsqueeze(0).repeat({2, 1, 1}) +
                      0.8 * at::randn({2, tokens, dim});
  hidden = at::layer_norm(hidden, {dim});
  const RouterDims dims{.model_dim = dim, .num_experts = 8};

  RouterSpec literal = Spec(2);
  literal.mutable_similarity_aware()->set_scale(RAW_DOT_PRODUCT);
  literal.mutable_similarity_aware()->set_temperature(1);
  const at::Tensor gate = at::randn({8, dim}) * 0.1;
  auto literal_router = Create(literal, dims);
  SetParameter(*literal_router, "gate_weight", gate);
  RoutingDecision raw = literal_router->Route(hidden, {});
  EXPECT_GT(raw.aggregation_self_weight.min().item<double>(), 0.99);
  EXPECT_LT(raw.aggregation_effective_neighbours.max().item<double>(), 1.01);
  EXPECT_TRUE(at::allclose(raw.aggregated_probs, raw.gate_probs, 0, 1e-5));

  auto cosine_router = Create(Spec(2), dims);
  SetParameter(*cosine_router, "gate_weight", gate);
  RoutingDecision cosine = cosine_router->Route(hidden, {});
  EXPECT_LT(cosine.aggregation_self_weight.mean().item<double>(), 0.95);
  EXPECT_GT(cosine.aggregation_effective_neighbours.mean().item<double>(), 1.5);
  EXPECT_GT((cosine.aggregated_probs - cosine.gate_probs).abs().max().item<double>(), 1e-3);
}

TEST(SimilarityAwareRegistrationTest, ResolveWritesEveryDefault) {
  const RouterRegistration* entry = *RouterRegistry().Find("similarity_aware");
  ASSERT_TRUE(entry->resolve);
  RouterSpec spec = Spec(2);
  entry->resolve(&spec, {.model_dim = 4, .num_experts = 2, .causal_model = true});
  ASSERT_TRUE(spec.has_similarity_aware());
  const SimilarityAwareOptions& o = spec.similarity_aware();
  EXPECT_EQ(o.scale(), COSINE_SIMILARITY);
  EXPECT_TRUE(o.has_temperature());
  EXPECT_EQ(o.temperature(), kDefaultCosineTemperature);
  EXPECT_EQ(o.temperature(), 0.1f);
  EXPECT_EQ(o.projection(), IDENTITY);
  EXPECT_EQ(o.gate(), SOFTMAX);
  ASSERT_TRUE(o.has_causal());
  EXPECT_TRUE(o.causal());

  // Explicit values stay; causal=false in a causal model stays false.
  RouterSpec set = Spec(2);
  set.mutable_similarity_aware()->set_temperature(0.25);
  set.mutable_similarity_aware()->set_causal(false);
  set.mutable_similarity_aware()->set_gate(SIGMOID);
  entry->resolve(&set, {.model_dim = 4, .num_experts = 2, .causal_model = true});
  EXPECT_EQ(set.similarity_aware().temperature(), 0.25f);
  EXPECT_FALSE(set.similarity_aware().causal());
  EXPECT_EQ(set.similarity_aware().gate(), SIGMOID);
  EXPECT_EQ(set.similarity_aware().scale(), COSINE_SIMILARITY);

  // The paper's raw dot products default to its tau = 1.
  RouterSpec raw = Spec(2);
  raw.mutable_similarity_aware()->set_scale(RAW_DOT_PRODUCT);
  entry->resolve(&raw, {.model_dim = 4, .num_experts = 2});
  EXPECT_EQ(raw.similarity_aware().scale(), RAW_DOT_PRODUCT);
  EXPECT_EQ(raw.similarity_aware().temperature(), 1.0f);

  // Another router's options are left for validate to report.
  RouterSpec wrong = Spec(2);
  wrong.mutable_unified();
  ResolveRouterSpec(*entry, &wrong, {.model_dim = 4, .num_experts = 2});
  EXPECT_TRUE(wrong.has_unified());
  EXPECT_THAT(ValidateRouterSpec(*entry, wrong, {.model_dim = 4, .num_experts = 2}).message(),
              HasSubstr("router.unified: these options belong to another router"));
}

TEST(SimilarityAwareRegistrationTest, ValidateNamesTheField) {
  const RouterDims dims{.model_dim = 4, .num_experts = 3};
  auto error = [&](const RouterSpec& spec) {
    return std::string(CreateRouter(spec, dims).status().message());
  };
  RouterSpec spec = Spec(2);
  spec.mutable_similarity_aware()->set_temperature(-1);
  EXPECT_EQ(error(spec), "router.similarity_aware.temperature: must be > 0, got -1");
  spec.mutable_similarity_aware()->set_temperature(0);
  EXPECT_EQ(error(spec), "router.similarity_aware.temperature: must be > 0, got 0");
  spec.mutable_similarity_aware()->set_temperature(std::nanf(""));
  EXPECT_THAT(error(spec), HasSubstr("router.similarity_aware.temperature"));

  spec = Spec(2);
  spec.mutable_similarity_aware()->set_projection(LOW_RANK);
  EXPECT_THAT(error(spec), HasSubstr("router.similarity_aware.projection_rank: must be in [1, 4]"));
  spec.mutable_similarity_aware()->set_projection_rank(5);
  EXPECT_THAT(error(spec), HasSubstr("got 5"));
  spec.mutable_similarity_aware()->set_projection_rank(2);
  EXPECT_TRUE(CreateRouter(spec, dims).ok());
  spec.mutable_similarity_aware()->set_projection(FULL);
  EXPECT_EQ(error(spec),
            "router.similarity_aware.projection_rank: must be 0 unless projection "
            "is LOW_RANK, got 2");

  spec = Spec(4);
  EXPECT_THAT(error(spec), HasSubstr("router.top_k"));
  spec = Spec(1.5);
  EXPECT_THAT(error(spec), HasSubstr("router.top_k"));

  spec = Spec(2);
  spec.mutable_attention_aware();
  EXPECT_THAT(error(spec), HasSubstr("takes router.similarity_aware"));

  spec = Spec(2);
  spec.mutable_similarity_aware()->set_scale(static_cast<SimilarityScale>(9));
  EXPECT_EQ(error(spec),
            "router.similarity_aware.scale: must be COSINE_SIMILARITY or "
            "RAW_DOT_PRODUCT, got 9");
}

// With k = 1, renormalising p makes every combine weight p/p = 1: the gate
// would learn nothing from the task.
TEST(SimilarityAwareRegistrationTest, RenormalizeNeedsTwoExperts) {
  const RouterDims dims{.model_dim = 4, .num_experts = 3};
  RouterSpec spec = Spec(1);
  spec.mutable_similarity_aware()->set_renormalize(true);
  const absl::Status status = CreateRouter(spec, dims).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(status.message(),
            "router.similarity_aware.renormalize: with top_k = 1 every combine "
            "weight is p/p = 1, so the task loss gives the gate zero gradient "
            "(only the load-balance loss would train it); set renormalize: "
            "false (Switch-style) or top_k >= 2");
  spec.mutable_similarity_aware()->set_renormalize(false);
  EXPECT_TRUE(CreateRouter(spec, dims).ok());
  spec = Spec(2);
  spec.mutable_similarity_aware()->set_renormalize(true);
  EXPECT_TRUE(CreateRouter(spec, dims).ok());
}

// The aggregation ablation (ablate_aggregation: W = I) against token_choice,
// an independent implementation of "top-k of r": with the same gate weight,
// renormalisation, gate function and auxiliary-loss coefficients, the whole
// decision must be token choice's, bit for bit, with p = r. The same inputs
// without the ablation (tau 1, non-causal: S is not the identity there) must
// move p away from r, so the comparison can fail.
struct AblationCase {
  bool renormalize = false;
  GateFunction gate = SOFTMAX;
  bool training = false;
};

RouterSpec AblationSpec(const AblationCase& c, bool ablate) {
  RouterSpec spec = Spec(2);
  spec.set_load_balance_coef(0.01);
  spec.set_z_loss_coef(0.001);
  SimilarityAwareOptions* o = spec.mutable_similarity_aware();
  o->set_temperature(1);
  o->set_causal(false);
  o->set_renormalize(c.renormalize);
  o->set_gate(c.gate);
  o->set_ablate_aggregation(ablate);
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

TEST(SimilarityAwareAblationTest, AblatedAggregationIsTokenChoice) {
  at::manual_seed(20);
  const RouterDims dims{.model_dim = 8, .num_experts = 5, .causal_model = true};
  const at::Tensor gate = at::randn({5, 8});
  const at::Tensor hidden = at::randn({3, 9, 8});
  int cases = 0;
  for (bool renormalize : {false, true}) {
    for (GateFunction gate_function : {SOFTMAX, SIGMOID}) {
      for (bool training : {false, true}) {
        const AblationCase c{renormalize, gate_function, training};
        SCOPED_TRACE(::testing::Message() << "renormalize " << renormalize << " gate "
                                          << gate_function << " training " << training);
        RoutingContext context;
        context.training = training;
        context.causal = true;
        auto token_choice = Create(TokenChoiceSpec(c), dims);
        SetParameter(*token_choice, "gate_weight", gate);
        const RoutingDecision expected = token_choice->Route(hidden, context);

        auto ablated = Create(AblationSpec(c, /*ablate=*/true), dims);
        SetParameter(*ablated, "gate_weight", gate);
        const RoutingDecision d = ablated->Route(hidden, context);
        ExpectSameDecisionWithPEqualR(d, expected);
        EXPECT_FALSE(d.dropped.defined());
        EXPECT_FALSE(expected.dropped.defined());
        EXPECT_EQ(d.aux_losses.size(), 2u);

        // The same router without the ablation aggregates: p moves away
        // from r and the decision is no longer token choice's.
        auto full = Create(AblationSpec(c, /*ablate=*/false), dims);
        SetParameter(*full, "gate_weight", gate);
        const RoutingDecision aggregated = full->Route(hidden, context);
        EXPECT_TRUE(at::equal(aggregated.gate_probs, d.gate_probs));
        EXPECT_GT((aggregated.aggregated_probs - aggregated.gate_probs).abs().max().item<double>(),
                  1e-2);
        EXPECT_FALSE(at::equal(aggregated.combine_weights, expected.combine_weights));
        ++cases;
      }
    }
  }
  EXPECT_EQ(cases, 8);
}

// The diagnostics describe the W actually used, I: every token keeps all of
// its own gate (self-weight 1) and aggregates over one token (exp(H) = 1),
// in evaluation only, like the full router's. Its S here is not the
// identity (checked above), so these are not S's numbers.
TEST(SimilarityAwareAblationTest, DiagnosticsDescribeTheIdentity) {
  at::manual_seed(21);
  auto router = Create(AblationSpec({}, /*ablate=*/true), {.model_dim = 8, .num_experts = 4});
  const at::Tensor hidden = at::randn({2, 6, 8}).requires_grad_(true);
  const RoutingDecision d = router->Route(hidden, {});
  ASSERT_TRUE(d.aggregation_self_weight.defined());
  ASSERT_TRUE(d.aggregation_effective_neighbours.defined());
  EXPECT_FALSE(d.aggregation_head.defined());
  EXPECT_TRUE(at::equal(d.aggregation_self_weight, at::ones({2, 6})));
  EXPECT_TRUE(at::equal(d.aggregation_effective_neighbours, at::ones({2, 6})));
  EXPECT_EQ(d.aggregation_self_weight.scalar_type(), at::kFloat);
  EXPECT_FALSE(d.aggregation_self_weight.requires_grad());
  EXPECT_FALSE(d.aggregation_effective_neighbours.requires_grad());
  // DescribeAggregation of an explicit identity agrees.
  RoutingDecision identity;
  DescribeAggregation(at::eye(6).expand({2, 6, 6}), &identity);
  EXPECT_TRUE(at::equal(identity.aggregation_self_weight, d.aggregation_self_weight));
  EXPECT_TRUE(
      at::equal(identity.aggregation_effective_neighbours, d.aggregation_effective_neighbours));

  RoutingContext training;
  training.training = true;
  const RoutingDecision t = router->Route(hidden, training);
  EXPECT_FALSE(t.aggregation_self_weight.defined());
  EXPECT_FALSE(t.aggregation_effective_neighbours.defined());
}

// Combine weights come from p = r, so the task loss alone (no auxiliary
// losses) trains the gate, with token choice's gradient, renormalised or
// not. W_s of a learnable projection is unused under the ablation and gets
// none.
TEST(SimilarityAwareAblationTest, TheTaskLossStillTrainsTheGate) {
  at::manual_seed(22);
  const RouterDims dims{.model_dim = 6, .num_experts = 4};
  const at::Tensor gate = at::randn({4, 6});
  const at::Tensor hidden = at::randn({2, 7, 6});
  const at::Tensor task = at::randn({2, 7, 4});  // stands in for dL/dw
  for (bool renormalize : {false, true}) {
    AblationCase c;
    c.renormalize = renormalize;
    RouterSpec spec = AblationSpec(c, /*ablate=*/true);
    spec.clear_load_balance_coef();
    spec.clear_z_loss_coef();
    spec.mutable_similarity_aware()->set_projection(FULL);
    auto ablated = Create(spec, dims);
    SetParameter(*ablated, "gate_weight", gate);
    const at::Tensor input = hidden.clone().requires_grad_(true);
    RoutingDecision d = ablated->Route(input, {});
    EXPECT_TRUE(d.aux_losses.empty());
    (d.combine_weights * task).sum().backward();
    const at::Tensor gate_grad = ablated->named_parameters()["gate_weight"].grad();
    ASSERT_TRUE(gate_grad.defined()) << "renormalize " << renormalize;
    EXPECT_GT(gate_grad.abs().sum().item<double>(), 0) << "renormalize " << renormalize;
    EXPECT_TRUE(at::isfinite(gate_grad).all().item<bool>());
    EXPECT_GT(input.grad().abs().sum().item<double>(), 0);
    EXPECT_FALSE(ablated->named_parameters()["similarity_weight"].grad().defined());

    RouterSpec reference = TokenChoiceSpec(c);
    reference.clear_load_balance_coef();
    reference.clear_z_loss_coef();
    auto token_choice = Create(reference, dims);
    SetParameter(*token_choice, "gate_weight", gate);
    (token_choice->Route(hidden, {}).combine_weights * task).sum().backward();
    EXPECT_TRUE(
        at::allclose(gate_grad, token_choice->named_parameters()["gate_weight"].grad(), 1e-6, 1e-7))
        << "renormalize " << renormalize;
  }
}

// p = r reads only token i: the ablation is causal even with a non-causal S
// option, in causal and bidirectional models alike.
TEST(SimilarityAwareAblationTest, CausalWhateverTheMaskOfS) {
  at::manual_seed(23);
  auto router = Create(AblationSpec({}, /*ablate=*/true), {.model_dim = 8, .num_experts = 4});
  EXPECT_TRUE(router->IsCausal(true));
  EXPECT_TRUE(router->IsCausal(false));
  SetParameter(*router, "gate_weight", at::randn({4, 8}));
  const at::Tensor hidden = at::randn({2, 7, 8});
  at::Tensor changed = hidden.clone();
  changed.slice(1, 4).copy_(at::randn({2, 3, 8}) * 3);
  const RoutingDecision a = router->Route(hidden, {});
  const RoutingDecision b = router->Route(changed, {});
  EXPECT_TRUE(at::equal(a.selected.slice(1, 0, 4), b.selected.slice(1, 0, 4)));
  EXPECT_TRUE(at::equal(a.combine_weights.slice(1, 0, 4), b.combine_weights.slice(1, 0, 4)));
}

// A plain bool: resolve keeps it (and the printed, saved spec shows it),
// validation accepts it with every other option, and the parameters are
// those of the full router, so an ablation row draws the same
// initialisation as the row it is paired with.
TEST(SimilarityAwareAblationTest, ResolvedPrintedAndAccepted) {
  const RouterRegistration* entry = *RouterRegistry().Find("similarity_aware");
  const RouterDims dims{.model_dim = 4, .num_experts = 3, .causal_model = true};
  RouterSpec spec = Spec(2);
  spec.mutable_similarity_aware()->set_ablate_aggregation(true);
  entry->resolve(&spec, dims);
  EXPECT_TRUE(spec.similarity_aware().ablate_aggregation());
  EXPECT_TRUE(spec.similarity_aware().causal());
  EXPECT_EQ(spec.similarity_aware().temperature(), kDefaultCosineTemperature);
  std::string text;
  ASSERT_TRUE(google::protobuf::TextFormat::PrintToString(spec, &text));
  EXPECT_THAT(text, HasSubstr("ablate_aggregation: true"));

  for (SimilarityProjection projection : {IDENTITY, FULL, LOW_RANK}) {
    for (bool ablate : {false, true}) {
      RouterSpec s = Spec(2);
      s.mutable_similarity_aware()->set_projection(projection);
      if (projection == LOW_RANK) s.mutable_similarity_aware()->set_projection_rank(2);
      s.mutable_similarity_aware()->set_scale(RAW_DOT_PRODUCT);
      s.mutable_similarity_aware()->set_ablate_aggregation(ablate);
      EXPECT_TRUE(entry->validate(s, dims).ok()) << projection << " " << ablate;
    }
    RouterSpec full = Spec(2), ablated = Spec(2);
    for (RouterSpec* s : {&full, &ablated}) {
      s->mutable_similarity_aware()->set_projection(projection);
      if (projection == LOW_RANK) s->mutable_similarity_aware()->set_projection_rank(2);
    }
    ablated.mutable_similarity_aware()->set_ablate_aggregation(true);
    at::manual_seed(24);
    auto a = Create(full, dims);
    at::manual_seed(24);
    auto b = Create(ablated, dims);
    EXPECT_EQ(a->named_parameters().keys(), b->named_parameters().keys()) << projection;
    for (const auto& parameter : a->named_parameters()) {
      EXPECT_TRUE(at::equal(parameter.value(), b->named_parameters()[parameter.key()]))
          << projection << " " << parameter.key();
    }
  }
  // The k = 1 renormalisation check still applies: the one weight would be
  // r/r = 1.
  RouterSpec single = Spec(1);
  single.mutable_similarity_aware()->set_renormalize(true);
  single.mutable_similarity_aware()->set_ablate_aggregation(true);
  EXPECT_THAT(entry->validate(single, dims).message(),
              HasSubstr("router.similarity_aware.renormalize"));
}

}  // namespace
}  // namespace moelab
