// The MoE layer and the language model with the real routers of routers/:
// capacity, variable experts per token, attention-aware routing end to end.

#include <ATen/ATen.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/generated/variable_factories.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/model.h"
#include "core/precision.h"
#include "core/router.h"
#include "core/tasks/language_modeling_name.h"
#include "gtest/gtest.h"
#include "models/moe_layer.h"
#include "models/testing/reference_moe.h"
#include "models/transformer_lm.h"

namespace moelab {
namespace {

double MaxAbsDiff(const at::Tensor& a, const at::Tensor& b) {
  return (a - b).abs().max().item<double>();
}

std::shared_ptr<Router> MakeRouter(RouterSpec spec, const RouterDims& dims) {
  auto entry = RouterRegistry().Find(spec.name());
  EXPECT_TRUE(entry.ok()) << entry.status();
  if ((*entry)->resolve) (*entry)->resolve(&spec, dims);
  absl::StatusOr<std::shared_ptr<Router>> router = CreateRouter(spec, dims);
  EXPECT_TRUE(router.ok()) << router.status();
  return *router;
}

RouterSpec TokenChoice(double capacity_factor) {
  RouterSpec spec;
  spec.set_name("token_choice");
  spec.set_top_k(2);
  spec.mutable_token_choice()->set_capacity_factor(capacity_factor);
  return spec;
}

const RouterDims kDims{.model_dim = 8, .num_experts = 4, .num_heads = 2, .causal_model = true};

RouterDims kDims32() {
  RouterDims dims = kDims;
  dims.model_dim = 32;
  return dims;
}

TEST(MoeWithRoutersTest, DroplessEqualsInfiniteCapacity) {
  torch::manual_seed(0);
  MoeLayer dropless(MoeLayerOptions(8, 4, 12), MakeRouter(TokenChoice(0), kDims));
  // C = ceil(cf * N * k / E) with cf = E / k is N: no expert can overflow.
  MoeLayer unbounded(MoeLayerOptions(8, 4, 12), MakeRouter(TokenChoice(2.0), kDims));
  {
    torch::NoGradGuard no_grad;
    auto from = dropless->named_parameters();
    for (auto& p : unbounded->named_parameters()) p.value().copy_(from[p.key()]);
  }
  const at::Tensor hidden = torch::randn({3, 10, 8});
  MoeLayerOutput a = dropless->forward(hidden, RoutingContext());
  MoeLayerOutput b = unbounded->forward(hidden, RoutingContext());
  EXPECT_TRUE(a.decision.selected.equal(b.decision.selected));
  EXPECT_EQ(a.decision.selected.sum().item<int64_t>(), 3 * 10 * 2);
  EXPECT_LT(MaxAbsDiff(a.output, b.output), 1e-6);
  if (b.decision.dropped.defined()) {
    EXPECT_FALSE(b.decision.dropped.any().item<bool>());
  }
}

TEST(MoeWithRoutersTest, TightCapacityComputesOnlyKeptPairs) {
  torch::manual_seed(1);
  MoeLayer layer(MoeLayerOptions(8, 4, 12), MakeRouter(TokenChoice(0.5), kDims));
  layer->to(at::kDouble);
  const at::Tensor hidden = torch::randn({2, 12, 8}, at::kDouble);
  MoeLayerOutput out = layer->forward(hidden, RoutingContext());
  // C = ceil(0.5 * 24 * 2 / 4) = 6 pairs per expert at most.
  EXPECT_TRUE((out.decision.selected.sum(at::IntArrayRef{0, 1}) <= 6).all().item<bool>());
  EXPECT_LT(out.decision.selected.sum().item<int64_t>(), 48);
  EXPECT_LT(MaxAbsDiff(out.output, ReferenceMoe(*layer, hidden, out.decision)), 1e-10);
}

// Routers that give tokens a variable number of experts.
class VariableExpertsTest : public ::testing::TestWithParam<std::string> {};

TEST_P(VariableExpertsTest, MatchesReferenceValuesAndGradients) {
  torch::manual_seed(2);
  RouterSpec spec;
  spec.set_name(GetParam());
  spec.set_top_k(2);
  MoeLayer layer(MoeLayerOptions(8, 4, 12), MakeRouter(spec, kDims));
  layer->to(at::kDouble);
  // Large inputs make the gate decisive, so budgets spread unevenly.
  at::Tensor hidden = (torch::randn({2, 9, 8}, at::kDouble) * 30).requires_grad_(true);
  MoeLayerOutput out = layer->forward(hidden, RoutingContext());
  const at::Tensor per_token = out.decision.selected.sum(-1);
  EXPECT_GT(per_token.max().item<int64_t>(), 2) << GetParam();
  EXPECT_LT(per_token.min().item<int64_t>(), 2) << GetParam();

  const at::Tensor reference = ReferenceMoe(*layer, hidden, out.decision);
  EXPECT_LT(MaxAbsDiff(out.output, reference), 1e-9);
  std::vector<at::Tensor> inputs = {hidden};
  for (const at::Tensor& p : layer->parameters()) inputs.push_back(p);
  const at::Tensor probe = torch::randn(hidden.sizes(), at::kDouble);
  auto grads = torch::autograd::grad({(out.output * probe).sum()}, inputs, {},
                                     /*retain_graph=*/true);
  auto grads_ref = torch::autograd::grad({(reference * probe).sum()}, inputs);
  for (size_t i = 0; i < inputs.size(); ++i) {
    EXPECT_LT(MaxAbsDiff(grads[i], grads_ref[i]), 1e-8) << "input " << i;
  }
}

INSTANTIATE_TEST_SUITE_P(Routers, VariableExpertsTest,
                         ::testing::Values("expert_choice", "unified"));

ExperimentSpec LmSpec(const std::string& router) {
  ExperimentSpec spec;
  spec.mutable_model()->set_name("moe_transformer_lm");
  TransformerLmOptions* o = spec.mutable_model()->mutable_transformer_lm();
  o->set_num_layers(2);
  o->set_model_dim(16);
  o->set_num_heads(2);
  o->set_dense_hidden(16);
  o->set_dropout(0.0f);
  spec.mutable_model()->mutable_moe()->set_num_experts(4);
  spec.mutable_model()->mutable_moe()->set_expert_hidden(16);
  spec.mutable_router()->set_name(router);
  spec.mutable_router()->set_top_k(2);
  spec.mutable_router()->set_load_balance_coef(0.01f);
  EXPECT_TRUE(ResolveTransformerLmSpec(spec.mutable_model()).ok());
  auto entry = RouterRegistry().Find(router);
  if ((*entry)->resolve) {
    (*entry)->resolve(spec.mutable_router(), TransformerLmRouterDims(spec.model()));
  }
  return spec;
}

// The LM with causal routers: trains (a backward pass reaches the routers)
// and earlier outputs ignore later tokens.
class CausalLmTest : public ::testing::TestWithParam<std::string> {};

TEST_P(CausalLmTest, TrainsAndStaysCausal) {
  torch::manual_seed(3);
  DatasetInfo info;
  info.task = kLanguageModelingTask;
  info.vocab_size = 30;
  info.sequence_length = 12;
  absl::StatusOr<std::shared_ptr<Model>> model = CreateModel(LmSpec(GetParam()), info);
  ASSERT_TRUE(model.ok()) << model.status();
  for (const auto& router : (*model)->Routers()) {
    ASSERT_TRUE(router->IsCausal(true)) << GetParam();
  }
  Batch batch;
  batch.inputs = torch::randint(30, {2, 12}, at::kLong);
  batch.targets = torch::randint(30, {2, 12}, at::kLong);
  ModelOutput out = (*model)->Forward(batch, {});
  (out.loss + out.aux_loss).backward();
  for (const auto& router : (*model)->Routers()) {
    for (const at::Tensor& p : router->parameters()) {
      ASSERT_TRUE(p.grad().defined()) << GetParam();
      EXPECT_GT(p.grad().abs().max().item<double>(), 0.0) << GetParam();
    }
  }
  (*model)->eval();
  const at::Tensor before = (*model)->Forward(batch, {}).logits;
  batch.inputs[0][8] = (batch.inputs[0][8] + 1) % 30;
  const at::Tensor after = (*model)->Forward(batch, {}).logits;
  EXPECT_LT(MaxAbsDiff(before[0].slice(0, 0, 8), after[0].slice(0, 0, 8)), 1e-5);
  EXPECT_GT(MaxAbsDiff(before[0][8], after[0][8]), 1e-5);
}

INSTANTIATE_TEST_SUITE_P(Routers, CausalLmTest,
                         ::testing::Values("token_choice", "attention_aware", "similarity_aware"));

// bf16 mixed precision (core/precision.h) in the layer: the router sees the
// same fp32 input and computes in fp32, so its decisions and combine weights
// are bit-identical; only the experts' products round their operands.
TEST(MoeWithRoutersTest, Bf16MatchesFp32WithIdenticalRouting) {
  torch::manual_seed(4);
  MoeLayer layer(MoeLayerOptions(32, 4, 64), MakeRouter(TokenChoice(1.25), kDims32()));
  const at::Tensor hidden = torch::randn({3, 10, 32});
  const at::Tensor upstream = torch::randn({3, 10, 32});
  struct Result {
    MoeLayerOutput out;
    at::Tensor grad_input;
    std::vector<at::Tensor> grads;
  };
  auto run = [&](Precision precision) {
    const PrecisionScope scope(precision);
    layer->zero_grad();
    at::Tensor x = hidden.clone().requires_grad_();
    Result r{layer->forward(x, RoutingContext()), {}, {}};
    (r.out.output * upstream).sum().backward();
    r.grad_input = x.grad();
    for (const at::Tensor& p : layer->parameters()) r.grads.push_back(p.grad().clone());
    return r;
  };
  const Result fp32 = run(FP32), bf16 = run(BF16);
  EXPECT_TRUE(fp32.out.decision.selected.equal(bf16.out.decision.selected));
  EXPECT_TRUE(fp32.out.decision.combine_weights.equal(bf16.out.decision.combine_weights));
  EXPECT_EQ(bf16.out.output.scalar_type(), at::kFloat);
  auto relative = [](const at::Tensor& got, const at::Tensor& want) {
    return (got - want).norm().item<double>() / want.norm().item<double>();
  };
  // Stated tolerances: 8-bit operand mantissas give relative errors of a few
  // 1e-3 on sums of 32-64 products; 1e-2 leaves room, and a product left in
  // fp32 by mistake would show as < 1e-5 (checked below).
  EXPECT_LT(relative(bf16.out.output, fp32.out.output), 1e-2);
  EXPECT_GT(relative(bf16.out.output, fp32.out.output), 1e-5);
  EXPECT_LT(relative(bf16.grad_input, fp32.grad_input), 1e-2);
  ASSERT_EQ(fp32.grads.size(), bf16.grads.size());
  for (size_t i = 0; i < fp32.grads.size(); ++i) {
    EXPECT_EQ(bf16.grads[i].scalar_type(), at::kFloat);
    EXPECT_LT(relative(bf16.grads[i], fp32.grads[i]), 2e-2) << "parameter " << i;
  }
}

}  // namespace
}  // namespace moelab
