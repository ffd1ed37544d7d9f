// bf16 mixed precision (runtime.precision: BF16, core/precision.h) against
// fp32 on the whole model, for every registered router: what changes (the
// products' rounding) stays within bf16's tolerance, and what must not change
// does not: routing decisions where the gate has a clear margin, the fp32
// master weights, gradients and optimizer state, and checkpoints, which load
// and resume under either precision. Linked with every plugin, so a new
// router is covered without editing this file.

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/optim/adamw.h>

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "core/checkpoint.h"
#include "core/dataset.h"
#include "core/model.h"
#include "core/precision.h"
#include "core/router.h"
#include "core/train_step.h"
#include "experiments/testing/tiny_lm.h"
#include "proto/experiment.pb.h"

namespace moelab {
namespace {

ExperimentSpec TinyLmSpec(const std::string& router_name) {
  ExperimentSpec spec = TinyMoeLmSpec(router_name, /*top_k=*/2);
  spec.mutable_training()->set_learning_rate(1e-3);
  return spec;
}

std::shared_ptr<Model> MakeModel(ExperimentSpec spec, uint64_t seed) {
  absl::StatusOr<std::shared_ptr<Model>> created = MakeTinyMoeLm(&spec, seed);
  EXPECT_TRUE(created.ok()) << created.status();
  return created.ok() ? *created : nullptr;
}

// The same model with its routers' parameters scaled up, so that most tokens
// have clear routing margins (at initialisation the gates are near uniform
// and almost every token is a near tie).
std::shared_ptr<Model> MakeDecisiveModel(const ExperimentSpec& spec, uint64_t seed) {
  std::shared_ptr<Model> model = MakeModel(spec, seed);
  if (model == nullptr) return nullptr;
  at::NoGradGuard no_grad;
  for (const std::shared_ptr<Router>& router : model->Routers()) {
    for (at::Tensor& p : router->parameters()) p.mul_(8);
  }
  return model;
}

ModelOutput ForwardIn(Precision precision, Model& model, const Batch& batch) {
  const PrecisionScope scope(precision);
  at::manual_seed(7);  // the random router draws in its forward pass
  return model.Forward(batch, ForwardOptions{.keep_routing = true});
}

std::vector<std::string> RouterNames() {
  std::vector<std::string> names;
  for (const std::string& name : RouterRegistry().Names()) {
    if (name.rfind("testing_", 0) != 0) names.push_back(name);
  }
  return names;
}

// Per token: the gap between its k-th and (k+1)-th largest routing score
// (the aggregated distribution where the router has one). [B, T]
at::Tensor TopKMargin(const RoutingDecision& d, int64_t k) {
  const at::Tensor scores =
      d.aggregated_probs.defined() ? d.aggregated_probs : d.gate_probs;  // [B, T, E]
  const at::Tensor sorted = std::get<0>(scores.sort(-1, /*descending=*/true));
  return sorted.select(-1, k - 1) - sorted.select(-1, k);
}

class MixedPrecisionTest : public ::testing::TestWithParam<std::string> {};

TEST_P(MixedPrecisionTest, Bf16ForwardAndRoutingMatchFp32) {
  const std::string& router = GetParam();
  std::shared_ptr<Model> model = MakeDecisiveModel(TinyLmSpec(router), 1);
  ASSERT_NE(model, nullptr);
  model->eval();
  const Batch batch = TinyLmBatch(2);
  const ModelOutput fp32 = ForwardIn(FP32, *model, batch);
  const ModelOutput bf16 = ForwardIn(BF16, *model, batch);
  // The loss is fp32 from products with 8-bit operand mantissas.
  const double loss32 = fp32.loss.item<double>(), loss16 = bf16.loss.item<double>();
  EXPECT_NEAR(loss16, loss32, 1e-2 * loss32) << router;
  ASSERT_EQ(fp32.routing.size(), bf16.routing.size());
  for (size_t layer = 0; layer < fp32.routing.size(); ++layer) {
    const RoutingDecision& a = fp32.routing[layer];
    const RoutingDecision& b = bf16.routing[layer];
    const std::string where = router + ", layer " + std::to_string(layer);
    // Routers compute in fp32 whatever the scope: their outputs are fp32.
    EXPECT_EQ(b.gate_probs.scalar_type(), at::kFloat) << where;
    EXPECT_EQ(b.combine_weights.scalar_type(), at::kFloat) << where;
    // The router's input differs by the bf16 rounding of the layers before
    // it: gate probabilities move by about that much, no more.
    EXPECT_LT((a.gate_probs - b.gate_probs).abs().max().item<double>(), 0.05) << where;
    if (router == "expert_choice") {
      // Experts choose tokens within each sequence: an expert's choice is
      // clear when its last chosen token outscores its first unchosen one.
      const at::Tensor scores = a.gate_probs.transpose(1, 2);        // [B, E, T]
      const at::Tensor chosen = a.selected.transpose(1, 2).sum(-1);  // [B, E]
      const at::Tensor sorted = std::get<0>(scores.sort(-1, true));  // [B, E, T]
      const at::Tensor last = sorted.gather(-1, (chosen - 1).clamp_min(0).unsqueeze(-1));
      const at::Tensor next = sorted.gather(-1, chosen.clamp_max(kTinyTokens - 1).unsqueeze(-1));
      const at::Tensor clear = ((last - next).squeeze(-1) > 0.02).logical_and(chosen < kTinyTokens);
      ASSERT_GT(clear.sum().item<int64_t>(), 0) << where;
      const at::Tensor same_column = (a.selected == b.selected).all(1);  // [B, E]
      EXPECT_TRUE(same_column.masked_select(clear).all().item<bool>())
          << where << ": an expert with a clear fp32 choice chose differently in bf16";
      continue;
    }
    const at::Tensor same_row = (a.selected == b.selected).all(-1);  // [B, T]
    // Tokens whose top-k has a clear margin in fp32 route identically.
    const at::Tensor clear = TopKMargin(a, 2) > 0.02;
    ASSERT_GT(clear.sum().item<int64_t>(), kTinyBatch * kTinyTokens / 8) << where;
    EXPECT_TRUE(same_row.masked_select(clear).all().item<bool>())
        << where << ": a token with a clear fp32 margin routed differently in bf16";
  }
}

TEST_P(MixedPrecisionTest, Bf16StepKeepsFp32MasterStateAndTracksTheFp32Gradient) {
  const std::string& router = GetParam();
  const ExperimentSpec spec = TinyLmSpec(router);
  std::shared_ptr<Model> m32 = MakeDecisiveModel(spec, 3), m16 = MakeDecisiveModel(spec, 3);
  ASSERT_TRUE(m32 && m16);
  m32->eval();  // no dropout: the two differ only in precision
  m16->eval();
  const Batch batch = TinyLmBatch(4);
  std::vector<at::Tensor> selected[2];
  int side = 0;
  for (auto& [model, precision] :
       std::vector<std::pair<Model*, Precision>>{{m32.get(), FP32}, {m16.get(), BF16}}) {
    const PrecisionScope scope(precision);
    at::manual_seed(7);
    ModelOutput out = model->Forward(batch, ForwardOptions{.keep_routing = true});
    for (const RoutingDecision& d : out.routing) selected[side].push_back(d.selected);
    (out.loss + out.aux_loss).backward();
    ++side;
  }
  // A token routed differently changes the gradient by a whole expert's
  // contribution; the comparison below is of the same computation.
  bool same_routing = true;
  for (size_t layer = 0; layer < selected[0].size(); ++layer) {
    same_routing = same_routing && selected[0][layer].equal(selected[1][layer]);
  }
  // Hash routing depends on token ids alone: there the comparison always
  // happens.
  if (router == "hash") {
    ASSERT_TRUE(same_routing);
  }
  const auto p32 = m32->named_parameters(), p16 = m16->named_parameters();
  for (const auto& p : p16) {
    const at::Tensor& g16 = p.value().grad();
    const at::Tensor& g32 = p32[p.key()].grad();
    if (!g32.defined()) continue;
    ASSERT_TRUE(g16.defined()) << router << ": " << p.key();
    EXPECT_EQ(g16.scalar_type(), at::kFloat) << p.key();
    if (!same_routing) continue;
    const double norm32 = g32.norm().item<double>();
    if (norm32 < 1e-6) continue;
    // bf16 operands perturb each gradient by a few parts in a thousand of
    // its size, far below the noise of a minibatch.
    const double relative = (g16 - g32).norm().item<double>() / norm32;
    EXPECT_LT(relative, 5e-2) << router << ": " << p.key();
  }
  // An optimizer step in bf16: every parameter and every moment stays fp32.
  std::unique_ptr<torch::optim::Optimizer> optimizer = MakeOptimizer(spec.training(), *m16);
  {
    const PrecisionScope scope(BF16);
    ASSERT_TRUE(TrainStep(*m16, *optimizer, batch, /*grad_clip_norm=*/1.0).ok());
  }
  for (const auto& p : m16->named_parameters()) {
    EXPECT_EQ(p.value().scalar_type(), at::kFloat) << p.key();
  }
  for (const auto& [key, state] : optimizer->state()) {
    const auto& adam = static_cast<const torch::optim::AdamWParamState&>(*state);
    EXPECT_EQ(adam.exp_avg().scalar_type(), at::kFloat);
    EXPECT_EQ(adam.exp_avg_sq().scalar_type(), at::kFloat);
  }
}

INSTANTIATE_TEST_SUITE_P(EveryRouter, MixedPrecisionTest, ::testing::ValuesIn(RouterNames()),
                         [](const auto& info) { return info.param; });

// A checkpoint written after bf16 steps resumes under fp32 and the reverse:
// it holds fp32 weights and moments only, restored bit for bit.
TEST(MixedPrecisionCheckpointTest, ResumesInTheOtherPrecision) {
  const ExperimentSpec spec = TinyLmSpec("token_choice");
  const std::string dir = ::testing::TempDir() + "/mixed_precision_checkpoint";
  std::filesystem::create_directories(dir);
  const Batch batch = TinyLmBatch(5);
  for (const auto& [written, resumed] :
       std::vector<std::pair<Precision, Precision>>{{BF16, FP32}, {FP32, BF16}}) {
    const std::string path = dir + "/" + PrecisionName(written) + ".pt";
    std::shared_ptr<Model> model = MakeModel(spec, 6);
    std::unique_ptr<torch::optim::Optimizer> optimizer = MakeOptimizer(spec.training(), *model);
    {
      const PrecisionScope scope(written);
      ASSERT_TRUE(TrainStep(*model, *optimizer, batch, 1.0).ok());
      ASSERT_TRUE(TrainStep(*model, *optimizer, batch, 1.0).ok());
    }
    TrainingState state;
    state.step = 2;
    state.rng_state = at::detail::getDefaultCPUGenerator().get_state();
    const absl::Status saved_status = SaveCheckpoint(path, *model, *optimizer, state);
    ASSERT_TRUE(saved_status.ok()) << saved_status;

    std::shared_ptr<Model> restored = MakeModel(spec, 99);
    std::unique_ptr<torch::optim::Optimizer> restored_optimizer =
        MakeOptimizer(spec.training(), *restored);
    const PrecisionScope scope(resumed);
    TrainingState restored_state;
    ASSERT_TRUE(LoadCheckpoint(path, *restored, *restored_optimizer, &restored_state).ok());
    EXPECT_EQ(restored_state.step, 2);
    const auto saved = model->named_parameters();
    for (const auto& p : restored->named_parameters()) {
      EXPECT_EQ(p.value().scalar_type(), at::kFloat) << p.key();
      EXPECT_TRUE(p.value().equal(saved[p.key()])) << p.key();
    }
    const auto step = TrainStep(*restored, *restored_optimizer, batch, 1.0);
    ASSERT_TRUE(step.ok()) << step.status();
    EXPECT_TRUE(std::isfinite(step->loss));
  }
}

}  // namespace
}  // namespace moelab
