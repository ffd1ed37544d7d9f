#include "models/vit.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/generated/variable_factories.h>
#include <torch/optim/adam.h>

#include <cmath>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "core/model.h"
#include "core/tasks/image_classification_name.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "models/testing/non_router_parameters.h"
#include "models/testing/test_routers.h"

namespace moelab {
namespace {

using ::testing::HasSubstr;

DatasetInfo ImageInfo(int64_t side = 28) {
  DatasetInfo info;
  info.task = kImageClassificationTask;
  info.num_classes = 10;
  info.channels = 1;
  info.height = side;
  info.width = side;
  return info;
}

// D 16, 2 layers (block 1 is MoE), 2 heads, patch 7 (16 patches on 28x28).
ExperimentSpec SmallSpec(Pooling pooling = CLASS_TOKEN) {
  ExperimentSpec spec;
  spec.set_name("test");
  spec.mutable_dataset()->set_name("fashion_mnist");
  spec.mutable_model()->set_name("vmoe_vit");
  VitOptions* o = spec.mutable_model()->mutable_vit();
  o->set_patch_size(7);
  o->set_num_layers(2);
  o->set_model_dim(16);
  o->set_num_heads(2);
  o->set_dense_hidden(20);
  o->set_pooling(pooling);
  spec.mutable_model()->mutable_moe()->set_num_experts(4);
  spec.mutable_model()->mutable_moe()->set_expert_hidden(24);
  spec.mutable_router()->set_name("testing_models_top_k");
  spec.mutable_router()->set_top_k(2);
  return spec;
}

std::shared_ptr<Model> Build(ExperimentSpec spec, DatasetInfo info = ImageInfo()) {
  absl::Status resolved = ResolveVitSpec(spec.mutable_model());
  EXPECT_TRUE(resolved.ok()) << resolved;
  absl::StatusOr<std::shared_ptr<Model>> model = CreateModel(spec, info);
  EXPECT_TRUE(model.ok()) << model.status();
  return model.ok() ? *model : nullptr;
}

Batch RandomImages(int64_t batch) {
  Batch b;
  b.inputs = torch::randn({batch, 1, 28, 28});
  b.targets = torch::randint(10, {batch}, at::kLong);
  return b;
}

TEST(VitSpecTest, PresetsAndDefaults) {
  ModelSpec empty;
  ASSERT_TRUE(ResolveVitSpec(&empty).ok());
  EXPECT_EQ(empty.preset(), "cpu_tiny");
  EXPECT_EQ(empty.vit().patch_size(), 4);
  EXPECT_EQ(empty.vit().pooling(), CLASS_TOKEN);
  EXPECT_EQ(empty.moe().moe_every(), 2);
  EXPECT_EQ(empty.moe().num_experts(), 8);
  EXPECT_TRUE(ValidateVitSpec(empty).ok());

  ModelSpec s;
  s.set_preset("vmoe_s");
  s.mutable_vit()->set_pooling(MEAN);
  ASSERT_TRUE(ResolveVitSpec(&s).ok());
  EXPECT_EQ(s.vit().patch_size(), 32);
  EXPECT_EQ(s.vit().model_dim(), 512);
  EXPECT_EQ(s.vit().num_layers(), 8);
  EXPECT_EQ(s.vit().pooling(), MEAN);
  EXPECT_EQ(s.moe().num_experts(), 32);
  EXPECT_TRUE(ValidateVitSpec(s).ok());
  for (const char* preset : {"vmoe_s16", "vmoe_b16"}) {
    ModelSpec p;
    p.set_preset(preset);
    ASSERT_TRUE(ResolveVitSpec(&p).ok()) << preset;
    EXPECT_TRUE(ValidateVitSpec(p).ok()) << preset;
  }
}

TEST(VitSpecTest, ErrorsNameTheField) {
  ModelSpec unknown;
  unknown.set_preset("vmoe_h");
  const std::string message(ResolveVitSpec(&unknown).message());
  EXPECT_THAT(message, HasSubstr("model.preset"));
  EXPECT_THAT(message, HasSubstr("cpu_tiny, vmoe_s, vmoe_s16, vmoe_b16"));

  ModelSpec lm_options;
  lm_options.mutable_transformer_lm()->set_num_layers(2);
  lm_options.set_name("vmoe_vit");
  EXPECT_THAT(
      std::string(ResolveModelSpec(**ModelRegistry().Find("vmoe_vit"), &lm_options).message()),
      HasSubstr("model.transformer_lm: these options belong to another model; model 'vmoe_vit' "
                "takes model.vit"));

  ModelSpec heads;
  heads.mutable_vit()->set_num_heads(5);
  ASSERT_TRUE(ResolveVitSpec(&heads).ok());
  EXPECT_THAT(std::string(ValidateVitSpec(heads).message()), HasSubstr("model.vit.num_heads"));

  // The patch must divide the image: known only with the dataset.
  ExperimentSpec spec = SmallSpec();
  spec.mutable_model()->mutable_vit()->set_patch_size(5);
  ASSERT_TRUE(ResolveVitSpec(spec.mutable_model()).ok());
  auto model = CreateModel(spec, ImageInfo());
  ASSERT_FALSE(model.ok());
  EXPECT_THAT(std::string(model.status().message()),
              HasSubstr("model.vit.patch_size: 5 does not divide"));

  DatasetInfo text;
  text.vocab_size = 100;
  text.sequence_length = 8;
  ExperimentSpec valid = SmallSpec();
  ASSERT_TRUE(ResolveVitSpec(valid.mutable_model()).ok());
  EXPECT_THAT(std::string(CreateModel(valid, text).status().message()),
              HasSubstr("dataset.name: model 'vmoe_vit' needs an "
                        "image-classification dataset"));
}

TEST(VitTest, ShapesTokensAndRouting) {
  torch::manual_seed(0);
  for (Pooling pooling : {CLASS_TOKEN, MEAN}) {
    std::shared_ptr<Model> model = Build(SmallSpec(pooling));
    ASSERT_NE(model, nullptr);
    EXPECT_FALSE(model->IsCausal());
    ASSERT_EQ(model->Routers().size(), 1u);
    const Batch batch = RandomImages(3);
    ModelOutput out = model->Forward(batch, {.keep_routing = true});
    EXPECT_EQ(out.logits.sizes(), (std::vector<int64_t>{3, 10}));
    EXPECT_NEAR(out.loss.item<double>(), std::log(10.0), 1.0);
    const int64_t tokens = pooling == CLASS_TOKEN ? 17 : 16;
    ASSERT_EQ(out.routing.size(), 1u);
    EXPECT_EQ(out.routing[0].selected.sizes(), (std::vector<int64_t>{3, tokens, 4}));
    auto* router = dynamic_cast<TestRouter*>(model->Routers()[0].get());
    ASSERT_NE(router, nullptr);
    const RoutingContext& context = router->last_context();
    EXPECT_FALSE(context.causal);
    EXPECT_EQ(context.token_ids.sizes(), (std::vector<int64_t>{3, tokens}));
    EXPECT_EQ(context.token_ids[2][tokens - 1].item<int64_t>(), tokens - 1);
    EXPECT_EQ(context.token_ids[1][0].item<int64_t>(), 0);
  }
}

TEST(VitTest, TwentyEightPixelsWithPatchFourGive49Patches) {
  torch::manual_seed(1);
  ExperimentSpec spec = SmallSpec(MEAN);
  spec.mutable_model()->mutable_vit()->set_patch_size(4);
  std::shared_ptr<Model> model = Build(spec);
  ASSERT_NE(model, nullptr);
  ModelOutput out = model->Forward(RandomImages(2), {.keep_routing = true});
  EXPECT_EQ(out.routing[0].selected.size(1), 49);
}

TEST(VitTest, AttentionIsBidirectional) {
  torch::manual_seed(2);
  std::shared_ptr<Model> model = Build(SmallSpec(MEAN));
  ASSERT_NE(model, nullptr);
  model->eval();
  Batch batch = RandomImages(1);
  const at::Tensor before = model->Forward(batch, {}).logits;
  // Only the last patch (bottom-right 7x7) changes.
  batch.inputs.slice(2, 21).slice(3, 21).add_(1.0);
  const at::Tensor after = model->Forward(batch, {}).logits;
  EXPECT_GT((before - after).abs().max().item<double>(), 1e-5);
}

TEST(VitTest, OverfitsATinyBatch) {
  torch::manual_seed(3);
  std::shared_ptr<Model> model = Build(SmallSpec());
  ASSERT_NE(model, nullptr);
  const Batch batch = RandomImages(16);
  torch::optim::Adam optimizer(model->parameters(), torch::optim::AdamOptions(3e-3));
  double loss = 0;
  int steps = 0;
  for (; steps < 200; ++steps) {
    ModelOutput out = model->Forward(batch, {});
    loss = out.loss.item<double>();
    if (loss < 0.05) break;
    optimizer.zero_grad();
    (out.loss + out.aux_loss).backward();
    optimizer.step();
  }
  // 16 random images with random labels memorised: from ln(10) = 2.3 to
  // below 0.05 within 200 Adam steps.
  EXPECT_LT(loss, 0.05) << "after " << steps << " steps";
}

TEST(VitTest, StatsMatchAHandCount) {
  std::shared_ptr<Model> model = Build(SmallSpec(CLASS_TOKEN));
  ASSERT_NE(model, nullptr);
  const int64_t d = 16, p = 7, n = 16, t = n + 1, e = 4, h = 24, dense = 20, k = 2, classes = 10;
  const int64_t patch = 1 * p * p * d + d;
  const int64_t attention_block = 2 * d + 4 * (d * d + d) + 2 * d;
  const int64_t dense_ffn = d * dense + dense + dense * d + d;
  const int64_t expert = 2 * d * h + h + d;
  const int64_t total = patch + d /*class token*/ + t * d + 2 * attention_block + dense_ffn +
                        e * expert + e * d /*gate*/ + 2 * d /*final LN*/ + d * classes + classes;
  const ModelStats stats = model->Stats();
  EXPECT_EQ(stats.total_parameters, total);
  EXPECT_EQ(stats.active_parameters_per_token, total - (e - k) * expert);
  EXPECT_EQ(stats.num_moe_layers, 1);
  EXPECT_DOUBLE_EQ(stats.flops_per_expert_per_token, 4.0 * d * h);
  const double per_image_extra = 2.0 * p * p * d * n + 2.0 * d * classes;
  const double flops = 2 * (8.0 * d * d + 4.0 * t * d) + 4.0 * d * dense +
                       (2.0 * d * e + k * 4.0 * d * h) + per_image_extra / t;
  EXPECT_DOUBLE_EQ(stats.flops_per_token, flops);
}

// Four blocks, MoE in blocks 1 and 3, with `router` ("similarity_aware_full":
// similarity_aware with a learnable D x D W_s).
ExperimentSpec FourBlocksWithRouter(const std::string& router) {
  ExperimentSpec spec = SmallSpec();
  spec.mutable_model()->mutable_vit()->set_num_layers(4);
  spec.mutable_router()->set_name(router);
  if (router == "similarity_aware_full") {
    spec.mutable_router()->set_name("similarity_aware");
    spec.mutable_router()->mutable_similarity_aware()->set_projection(FULL);
  }
  return spec;
}

// Paired seeds: the same seed with different routers gives the same
// patch embedding, blocks, experts and head, however many random numbers
// each router draws (see models/model_spec_util.h).
TEST(VitTest, SameSeedDifferentRoutersShareEveryOtherParameter) {
  torch::manual_seed(11);
  std::shared_ptr<Model> reference = Build(FourBlocksWithRouter("token_choice"));
  ASSERT_NE(reference, nullptr);
  ASSERT_EQ(reference->Routers().size(), 2u);
  const std::map<std::string, at::Tensor> expected = NonRouterParameters(*reference);
  ASSERT_TRUE(expected.count("block3.moe.w1"));
  ASSERT_TRUE(expected.count("head.weight"));
  for (const std::string router :
       {"similarity_aware_full", "xmoe", "hash", "testing_models_top_k"}) {
    torch::manual_seed(11);
    std::shared_ptr<Model> model = Build(FourBlocksWithRouter(router));
    ASSERT_NE(model, nullptr) << router;
    ExpectSameNonRouterParameters(expected, *model, router);
  }
  torch::manual_seed(12);
  std::shared_ptr<Model> other = Build(FourBlocksWithRouter("token_choice"));
  ASSERT_NE(other, nullptr);
  EXPECT_FALSE(NonRouterParameters(*other).at("head.weight").equal(expected.at("head.weight")));
}

// token_choice and unified draw one [E, D] gate each, on the same stream.
TEST(VitTest, RoutersOfTheSameShapeStartFromTheSameGate) {
  const auto gates = [](const std::string& router) {
    torch::manual_seed(21);
    std::shared_ptr<Model> model = Build(FourBlocksWithRouter(router));
    std::vector<at::Tensor> out;
    if (model == nullptr) return out;
    for (const auto& r : model->Routers()) {
      out.push_back(r->named_parameters()["gate_weight"]);
    }
    return out;
  };
  const std::vector<at::Tensor> token_choice = gates("token_choice");
  const std::vector<at::Tensor> unified = gates("unified");
  ASSERT_EQ(token_choice.size(), 2u);
  ASSERT_EQ(unified.size(), 2u);
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_TRUE(token_choice[i].equal(unified[i])) << "MoE layer " << i;
  }
  EXPECT_FALSE(token_choice[0].equal(token_choice[1]));
}

}  // namespace
}  // namespace moelab
