// The causality audit: every registered router declares whether its decision
// for token i depends only on tokens 0..i (Router::IsCausal); this test
// perturbs the future and checks each declaration. Linked with every plugin,
// so a new router is audited without editing this file.

#include <ATen/ATen.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "core/router.h"

namespace moelab {
namespace {

constexpr int64_t kBatch = 2, kTokens = 16, kDim = 16, kExperts = 8, kHeads = 2;
constexpr int64_t kPrefix = 8;  // positions 0..7 must not see 8..15

struct Inputs {
  at::Tensor hidden, token_ids, attention_probs, attention_values;
};

// Causal attention probabilities: row i is a distribution over j <= i.
at::Tensor CausalAttention(const at::Tensor& scores) {
  at::Tensor mask = at::ones({kTokens, kTokens}, at::kBool).triu(1);
  return at::softmax(scores.masked_fill(mask, -INFINITY), -1);
}

Inputs MakeInputs(uint64_t seed) {
  at::Generator gen = at::detail::createCPUGenerator(seed);
  Inputs in;
  in.hidden = at::randn({kBatch, kTokens, kDim}, gen);
  in.token_ids = at::randint(1000, {kBatch, kTokens}, gen);
  in.attention_probs = CausalAttention(at::randn({kBatch, kHeads, kTokens, kTokens}, gen));
  in.attention_values = at::randn({kBatch, kHeads, kTokens, kDim}, gen);
  return in;
}

// The same inputs with every future position (>= kPrefix) redrawn; rows of
// causal attention before kPrefix only read j < kPrefix, so they stay.
Inputs PerturbFuture(const Inputs& in, uint64_t seed) {
  Inputs out = MakeInputs(seed);
  auto keep_prefix = [](const at::Tensor& original, at::Tensor& fresh, int64_t dim) {
    fresh.narrow(dim, 0, kPrefix).copy_(original.narrow(dim, 0, kPrefix));
  };
  keep_prefix(in.hidden, out.hidden, 1);
  keep_prefix(in.token_ids, out.token_ids, 1);
  keep_prefix(in.attention_probs, out.attention_probs, 2);
  keep_prefix(in.attention_values, out.attention_values, 2);
  return out;
}

RoutingDecision Route(Router& router, const Inputs& in) {
  RoutingContext context;
  context.token_ids = in.token_ids;
  context.training = true;  // training-only behaviour (jitter, balancing) included
  context.causal = true;
  context.attention_probs = in.attention_probs;
  context.attention_values = in.attention_values;
  // Routers that draw random numbers draw the same ones for both inputs.
  at::manual_seed(7);
  torch::NoGradGuard no_grad;
  return router.Route(in.hidden, context);
}

double PrefixDifference(const RoutingDecision& a, const RoutingDecision& b) {
  at::Tensor wa = a.combine_weights.narrow(1, 0, kPrefix).to(at::kDouble);
  at::Tensor wb = b.combine_weights.narrow(1, 0, kPrefix).to(at::kDouble);
  at::Tensor sa = a.selected.narrow(1, 0, kPrefix), sb = b.selected.narrow(1, 0, kPrefix);
  return (wa - wb).abs().max().item<double>() + sa.ne(sb).any().item<bool>();
}

class CausalityTest : public ::testing::TestWithParam<std::string> {};

TEST_P(CausalityTest, DeclarationMatchesBehaviour) {
  const std::string name = GetParam();
  const RouterRegistration* entry = *RouterRegistry().Find(name);
  RouterSpec spec;
  spec.set_name(name);
  spec.set_top_k(2);
  const RouterDims dims{kDim, kExperts, kHeads, /*causal_model=*/true};
  if (entry->resolve) entry->resolve(&spec, dims);
  at::manual_seed(1);
  absl::StatusOr<std::shared_ptr<Router>> router = CreateRouter(spec, dims);
  ASSERT_TRUE(router.ok()) << router.status();
  // Gate weights large enough that routing is decisive, not noise.
  for (auto& p : (*router)->named_parameters()) {
    torch::NoGradGuard no_grad;
    if (p.value().dim() == 2) p.value().normal_(0, 1);
  }
  const bool causal = (*router)->IsCausal(/*causal_model=*/true);
  double largest_change = 0;
  for (uint64_t trial = 0; trial < 5; ++trial) {
    Inputs clean = MakeInputs(100 + trial);
    Inputs perturbed = PerturbFuture(clean, 200 + trial);
    largest_change = std::max(largest_change,
                              PrefixDifference(Route(**router, clean), Route(**router, perturbed)));
  }
  if (causal) {
    EXPECT_LE(largest_change, 1e-6)
        << name << " declares itself causal, but changing tokens after position " << kPrefix
        << " changed its decisions before it";
  } else {
    EXPECT_GT(largest_change, 1e-6)
        << name << " declares itself non-causal, yet the future never changed its "
        << "decisions; declare it causal";
  }
}

std::vector<std::string> RoutersToAudit() {
  std::vector<std::string> names;
  for (const std::string& name : RouterRegistry().Names()) {
    if (name.rfind("testing_", 0) != 0) names.push_back(name);
  }
  return names;
}

INSTANTIATE_TEST_SUITE_P(EveryRouter, CausalityTest, ::testing::ValuesIn(RoutersToAudit()),
                         [](const auto& info) { return info.param; });

TEST(CausalityAuditTest, AuditsTheRoutersOfBothPapers) {
  EXPECT_THAT(RoutersToAudit(),
              ::testing::IsSupersetOf({"token_choice", "expert_choice", "similarity_aware",
                                       "attention_aware", "unified"}));
}

}  // namespace
}  // namespace moelab
