// The models mark the phases of core/step_profiler.h: a training step of
// either model, profiled, shows router, dispatch, expert matmuls, combine,
// attention and loss, each with forward and backward time.

#include <ATen/ATen.h>
#include <torch/csrc/autograd/generated/variable_factories.h>
#include <torch/utils.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "core/model.h"
#include "core/step_profiler.h"
#include "core/tasks/image_classification_name.h"
#include "core/tasks/language_modeling_name.h"
#include "gtest/gtest.h"
#include "models/testing/test_routers.h"
#include "models/transformer_lm.h"
#include "models/vit.h"

namespace moelab {
namespace {

const PhaseTime* Find(const StepProfile& profile, const std::string& name) {
  for (const PhaseTime& p : profile.phases) {
    if (p.name == name) return &p;
  }
  return nullptr;
}

// Profiles two forward + backward steps of `model` on `batch`.
StepProfile ProfileSteps(Model& model, const Batch& batch, bool need_logits = true) {
  StepProfiler profiler;
  for (int step = 0; step < 2; ++step) {
    profiler.BeginStep();
    model.zero_grad();
    ModelOutput out = model.Forward(batch, ForwardOptions{.need_logits = need_logits});
    (out.loss + out.aux_loss).backward();
    profiler.EndStep();
  }
  return profiler.Profile();
}

// Every phase in `phases` has forward and backward time; "other" is the only
// phase beside them.
void ExpectPhases(const StepProfile& profile, const std::vector<const char*>& phases) {
  EXPECT_EQ(profile.steps, 2);
  for (const char* name : phases) {
    const PhaseTime* phase = Find(profile, name);
    ASSERT_NE(phase, nullptr) << name << "\n" << StepProfiler::Format(profile);
    EXPECT_GT(phase->forward_ms, 0) << name;
    // Backward nodes are charged to the phase that created them.
    EXPECT_GT(phase->backward_ms, 0) << name << "\n" << StepProfiler::Format(profile);
  }
  EXPECT_EQ(profile.phases.size(), phases.size() + 1) << StepProfiler::Format(profile);
  EXPECT_EQ(profile.phases.back().name, "other");
}

const std::vector<const char*> kMoePhases = {kPhaseEmbedding, kPhaseAttention, kPhaseRouter,
                                             kPhaseDispatch,  kPhaseCombine,   kPhaseExpertMatmuls};

std::vector<const char*> With(std::vector<const char*> phases,
                              std::initializer_list<const char*> more) {
  phases.insert(phases.end(), more);
  return phases;
}

ExperimentSpec SmallSpec(const std::string& model) {
  ExperimentSpec spec;
  spec.set_name("test");
  spec.mutable_model()->set_name(model);
  spec.mutable_model()->mutable_moe()->set_num_experts(4);
  spec.mutable_model()->mutable_moe()->set_expert_hidden(24);
  spec.mutable_router()->set_name("testing_models_top_k");
  spec.mutable_router()->set_top_k(2);
  spec.mutable_router()->set_load_balance_coef(0.01f);
  return spec;
}

TEST(StepPhasesTest, LanguageModelMarksEveryPhase) {
  torch::manual_seed(0);
  ExperimentSpec spec = SmallSpec("moe_transformer_lm");
  spec.mutable_dataset()->set_name("synthetic_lm");
  TransformerLmOptions* o = spec.mutable_model()->mutable_transformer_lm();
  o->set_num_layers(2);
  o->set_model_dim(16);
  o->set_num_heads(2);
  o->set_dense_hidden(20);
  o->set_dropout(0.0f);
  ASSERT_TRUE(ResolveTransformerLmSpec(spec.mutable_model()).ok());
  DatasetInfo info;
  info.task = kLanguageModelingTask;
  info.vocab_size = 50;
  info.sequence_length = 16;
  absl::StatusOr<std::shared_ptr<Model>> model = CreateModel(spec, info);
  ASSERT_TRUE(model.ok()) << model.status();
  Batch batch;
  batch.inputs = torch::randint(50, {4, 16}, at::kLong);
  batch.targets = torch::randint(50, {4, 16}, at::kLong);
  ExpectPhases(ProfileSteps(**model, batch), With(kMoePhases, {kPhaseOutput, kPhaseLoss}));
  // Training steps fuse the output layer with the loss.
  ExpectPhases(ProfileSteps(**model, batch, /*need_logits=*/false),
               With(kMoePhases, {kPhaseOutputAndLoss}));
}

TEST(StepPhasesTest, VisionTransformerMarksEveryPhase) {
  torch::manual_seed(0);
  ExperimentSpec spec = SmallSpec("vmoe_vit");
  spec.mutable_dataset()->set_name("fashion_mnist");
  VitOptions* o = spec.mutable_model()->mutable_vit();
  o->set_patch_size(7);
  o->set_num_layers(2);
  o->set_model_dim(16);
  o->set_num_heads(2);
  o->set_dense_hidden(20);
  ASSERT_TRUE(ResolveVitSpec(spec.mutable_model()).ok());
  DatasetInfo info;
  info.task = kImageClassificationTask;
  info.num_classes = 10;
  info.channels = 1;
  info.height = 28;
  info.width = 28;
  absl::StatusOr<std::shared_ptr<Model>> model = CreateModel(spec, info);
  ASSERT_TRUE(model.ok()) << model.status();
  Batch batch;
  batch.inputs = torch::randn({4, 1, 28, 28});
  batch.targets = torch::randint(10, {4}, at::kLong);
  ExpectPhases(ProfileSteps(**model, batch), With(kMoePhases, {kPhaseOutput, kPhaseLoss}));
}

}  // namespace
}  // namespace moelab
