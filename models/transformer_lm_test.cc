#include "models/transformer_lm.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/generated/variable_factories.h>
#include <torch/optim/adam.h>
#include <torch/utils.h>

#include <cmath>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "core/model.h"
#include "core/tasks/image_classification_name.h"
#include "core/tasks/language_modeling_name.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "models/model_spec_util.h"
#include "models/testing/non_router_parameters.h"
#include "models/testing/test_routers.h"

namespace moelab {
namespace {

using ::testing::HasSubstr;

constexpr int64_t kVocab = 50;
constexpr int64_t kSequence = 16;

DatasetInfo LmInfo() {
  DatasetInfo info;
  info.task = kLanguageModelingTask;
  info.vocab_size = kVocab;
  info.sequence_length = kSequence;
  return info;
}

// A small model: D 16, 2 layers, 2 heads, 4 experts of width 24, top-2.
ExperimentSpec SmallSpec(const std::string& router = "testing_models_top_k") {
  ExperimentSpec spec;
  spec.set_name("test");
  spec.mutable_dataset()->set_name("synthetic_lm");
  spec.mutable_model()->set_name("moe_transformer_lm");
  TransformerLmOptions* o = spec.mutable_model()->mutable_transformer_lm();
  o->set_num_layers(2);
  o->set_model_dim(16);
  o->set_num_heads(2);
  o->set_dense_hidden(20);
  o->set_dropout(0.0f);
  spec.mutable_model()->mutable_moe()->set_num_experts(4);
  spec.mutable_model()->mutable_moe()->set_expert_hidden(24);
  spec.mutable_router()->set_name(router);
  spec.mutable_router()->set_top_k(2);
  spec.mutable_router()->set_load_balance_coef(0.01f);
  return spec;
}

std::shared_ptr<Model> Build(ExperimentSpec spec) {
  absl::Status resolved = ResolveTransformerLmSpec(spec.mutable_model());
  EXPECT_TRUE(resolved.ok()) << resolved;
  absl::StatusOr<std::shared_ptr<Model>> model = CreateModel(spec, LmInfo());
  EXPECT_TRUE(model.ok()) << model.status();
  return model.ok() ? *model : nullptr;
}

Batch RandomBatch(int64_t batch, int64_t tokens) {
  Batch b;
  b.inputs = torch::randint(kVocab, {batch, tokens}, at::kLong);
  b.targets = torch::randint(kVocab, {batch, tokens}, at::kLong);
  return b;
}

TEST(TransformerLmSpecTest, PresetsFillUnsetFieldsOnly) {
  ModelSpec spec;
  spec.set_name("moe_transformer_lm");
  spec.set_preset("smoe_medium");
  spec.mutable_transformer_lm()->set_num_layers(3);  // explicit: kept
  ASSERT_TRUE(ResolveTransformerLmSpec(&spec).ok());
  EXPECT_EQ(spec.transformer_lm().num_layers(), 3);
  EXPECT_EQ(spec.transformer_lm().model_dim(), 352);
  EXPECT_EQ(spec.transformer_lm().num_heads(), 8);
  EXPECT_FALSE(spec.transformer_lm().tie_embeddings());
  EXPECT_EQ(spec.moe().num_experts(), 16);
  EXPECT_EQ(spec.moe().expert_hidden(), 352);
  EXPECT_EQ(spec.moe().activation(), RELU);
  EXPECT_TRUE(ValidateTransformerLmSpec(spec).ok());

  ModelSpec empty;
  ASSERT_TRUE(ResolveTransformerLmSpec(&empty).ok());
  EXPECT_EQ(empty.preset(), "cpu_tiny");
  EXPECT_EQ(empty.transformer_lm().model_dim(), 128);
  EXPECT_EQ(empty.moe().num_experts(), 8);
  EXPECT_EQ(empty.moe().moe_every(), 1);
  EXPECT_TRUE(ValidateTransformerLmSpec(empty).ok());

  for (const char* preset : {"cpu_small", "smoe_small", "glam_style"}) {
    ModelSpec s;
    s.set_preset(preset);
    ASSERT_TRUE(ResolveTransformerLmSpec(&s).ok()) << preset;
    EXPECT_TRUE(ValidateTransformerLmSpec(s).ok()) << preset;
  }
}

TEST(TransformerLmSpecTest, ErrorsNameTheField) {
  ModelSpec unknown;
  unknown.set_preset("huge");
  absl::Status s = ResolveTransformerLmSpec(&unknown);
  EXPECT_THAT(std::string(s.message()), HasSubstr("model.preset"));
  EXPECT_THAT(std::string(s.message()), HasSubstr("huge"));
  EXPECT_THAT(std::string(s.message()),
              HasSubstr("cpu_tiny, cpu_small, smoe_small, smoe_medium, glam_style"));

  ModelSpec vit_options;
  vit_options.mutable_vit()->set_patch_size(4);
  vit_options.set_name("moe_transformer_lm");
  EXPECT_THAT(
      std::string(
          ResolveModelSpec(**ModelRegistry().Find("moe_transformer_lm"), &vit_options).message()),
      HasSubstr("model.vit: these options belong to another model; model "
                "'moe_transformer_lm' takes model.transformer_lm"));

  auto error_for = [](auto mutate) {
    ModelSpec spec;
    mutate(&spec);
    EXPECT_TRUE(ResolveTransformerLmSpec(&spec).ok());
    return std::string(ValidateTransformerLmSpec(spec).message());
  };
  EXPECT_THAT(error_for([](ModelSpec* s) { s->mutable_transformer_lm()->set_num_heads(3); }),
              HasSubstr("model.transformer_lm.num_heads: must be >= 1 and "
                        "divide model_dim (128), got 3"));
  EXPECT_THAT(error_for([](ModelSpec* s) { s->mutable_transformer_lm()->set_num_layers(0); }),
              HasSubstr("model.transformer_lm.num_layers"));
  EXPECT_THAT(error_for([](ModelSpec* s) { s->mutable_transformer_lm()->set_dropout(1.0f); }),
              HasSubstr("model.transformer_lm.dropout"));
  EXPECT_THAT(error_for([](ModelSpec* s) {
                s->mutable_moe()->set_moe_every(3);  // 2 layers
              }),
              HasSubstr("model.moe.moe_every"));
  EXPECT_THAT(error_for([](ModelSpec* s) { s->mutable_moe()->set_num_experts(0); }),
              HasSubstr("model.moe.num_experts"));
  EXPECT_THAT(error_for([](ModelSpec* s) { s->mutable_moe()->set_expert_hidden(-1); }),
              HasSubstr("model.moe.expert_hidden"));
}

TEST(TransformerLmTest, RegisteredWithRouterDims) {
  auto entry = ModelRegistry().Find("moe_transformer_lm");
  ASSERT_TRUE(entry.ok());
  EXPECT_EQ((*entry)->task, kLanguageModelingTask);
  ModelSpec spec = SmallSpec().model();
  ASSERT_TRUE((*entry)->resolve(&spec).ok());
  const RouterDims dims = (*entry)->router_dims(spec);
  EXPECT_EQ(dims.model_dim, 16);
  EXPECT_EQ(dims.num_experts, 4);
  EXPECT_EQ(dims.num_heads, 2);
  EXPECT_TRUE(dims.causal_model);
}

TEST(TransformerLmTest, RejectsAnImageDataset) {
  ExperimentSpec spec = SmallSpec();
  ASSERT_TRUE(ResolveTransformerLmSpec(spec.mutable_model()).ok());
  DatasetInfo images;
  images.task = kImageClassificationTask;
  images.num_classes = 10;
  auto model = CreateModel(spec, images);
  ASSERT_FALSE(model.ok());
  EXPECT_THAT(std::string(model.status().message()), HasSubstr("dataset"));
}

TEST(TransformerLmTest, ShapesLossesAndRouting) {
  torch::manual_seed(0);
  std::shared_ptr<Model> model = Build(SmallSpec());
  ASSERT_NE(model, nullptr);
  EXPECT_TRUE(model->IsCausal());
  EXPECT_EQ(model->Routers().size(), 2u);
  const Batch batch = RandomBatch(3, kSequence);
  ModelOutput out = model->Forward(batch, {.keep_routing = true});
  EXPECT_EQ(out.logits.sizes(), (std::vector<int64_t>{3, kSequence, kVocab}));
  EXPECT_EQ(out.loss.dim(), 0);
  // Near ln(V) at initialisation.
  EXPECT_NEAR(out.loss.item<double>(), std::log(double(kVocab)), 0.5);
  ASSERT_EQ(out.routing.size(), 2u);
  double aux_sum = 0;
  for (const RoutingDecision& d : out.routing) {
    EXPECT_EQ(d.selected.sizes(), (std::vector<int64_t>{3, kSequence, 4}));
    ASSERT_EQ(d.aux_losses.size(), 1u);
    aux_sum += d.aux_losses[0].second.item<double>();
  }
  EXPECT_GT(aux_sum, 0);
  EXPECT_NEAR(out.aux_loss.item<double>(), aux_sum, 1e-6);
  // The routers saw token ids, causality and the training flag.
  auto* router = dynamic_cast<TestRouter*>(model->Routers()[0].get());
  ASSERT_NE(router, nullptr);
  EXPECT_TRUE(router->last_context().causal);
  EXPECT_TRUE(router->last_context().training);
  EXPECT_TRUE(router->last_context().token_ids.equal(batch.inputs));
  EXPECT_FALSE(router->last_context().attention_probs.defined());

  // Shorter sequences work, without targets there is no loss.
  Batch prefix;
  prefix.inputs = batch.inputs.slice(1, 0, 5);
  ModelOutput short_out = model->Forward(prefix, {});
  EXPECT_EQ(short_out.logits.sizes(), (std::vector<int64_t>{3, 5, kVocab}));
  EXPECT_FALSE(short_out.loss.defined());
  EXPECT_TRUE(short_out.routing.empty());
}

// Training steps skip the logits (need_logits = false) and fuse the output
// layer with the loss: same loss, same gradients, tied or untied output.
TEST(TransformerLmTest, LossWithoutLogitsMatchesTheLogitsPath) {
  for (bool tied : {true, false}) {
    torch::manual_seed(0);
    ExperimentSpec spec = SmallSpec();
    spec.mutable_model()->mutable_transformer_lm()->set_tie_embeddings(tied);
    spec.mutable_model()->mutable_transformer_lm()->set_dropout(0);
    std::shared_ptr<Model> model = Build(spec);
    ASSERT_NE(model, nullptr);
    const Batch batch = RandomBatch(3, kSequence);
    auto loss_and_grads = [&](bool need_logits) {
      model->zero_grad();
      ModelOutput out = model->Forward(batch, {.need_logits = need_logits});
      EXPECT_EQ(out.logits.defined(), need_logits);
      out.loss.backward();
      std::vector<at::Tensor> grads;
      for (const at::Tensor& p : model->parameters()) grads.push_back(p.grad().clone());
      return std::make_pair(out.loss.item<double>(), grads);
    };
    const auto [fused_loss, fused_grads] = loss_and_grads(false);
    const auto [plain_loss, plain_grads] = loss_and_grads(true);
    EXPECT_NEAR(fused_loss, plain_loss, 1e-5) << "tied " << tied;
    ASSERT_EQ(fused_grads.size(), plain_grads.size());
    for (size_t i = 0; i < fused_grads.size(); ++i) {
      EXPECT_TRUE(at::allclose(fused_grads[i], plain_grads[i], 1e-4, 1e-6))
          << "parameter " << i << ", tied " << tied;
    }
  }
}

TEST(TransformerLmTest, AttentionRouterReceivesAttention) {
  torch::manual_seed(1);
  std::shared_ptr<Model> model = Build(SmallSpec("testing_models_attention"));
  ASSERT_NE(model, nullptr);
  model->Forward(RandomBatch(2, 7), {});
  auto* router = dynamic_cast<TestRouter*>(model->Routers()[1].get());
  ASSERT_NE(router, nullptr);
  EXPECT_EQ(router->last_context().attention_probs.sizes(), (std::vector<int64_t>{2, 2, 7, 7}));
  EXPECT_EQ(router->last_context().attention_values.sizes(), (std::vector<int64_t>{2, 2, 7, 16}));
}

TEST(TransformerLmTest, EarlierOutputsIgnoreLaterTokens) {
  torch::manual_seed(2);
  std::shared_ptr<Model> model = Build(SmallSpec());
  ASSERT_NE(model, nullptr);
  model->eval();
  Batch batch = RandomBatch(2, kSequence);
  const at::Tensor before = model->Forward(batch, {}).logits;
  batch.inputs[0][10] = (batch.inputs[0][10] + 1) % kVocab;
  batch.inputs[1][12] = (batch.inputs[1][12] + 7) % kVocab;
  const at::Tensor after = model->Forward(batch, {}).logits;
  EXPECT_LT((before[0].slice(0, 0, 10) - after[0].slice(0, 0, 10)).abs().max().item<double>(),
            1e-5);
  EXPECT_LT((before[1].slice(0, 0, 12) - after[1].slice(0, 0, 12)).abs().max().item<double>(),
            1e-5);
  EXPECT_GT((before[0][10] - after[0][10]).abs().max().item<double>(), 1e-4);
  EXPECT_GT((before[1].slice(0, 12) - after[1].slice(0, 12)).abs().max().item<double>(), 1e-4);
}

TEST(TransformerLmTest, OverfitsATinyBatch) {
  torch::manual_seed(3);
  ExperimentSpec spec = SmallSpec();
  spec.mutable_model()->mutable_transformer_lm()->set_model_dim(32);
  std::shared_ptr<Model> model = Build(spec);
  ASSERT_NE(model, nullptr);
  const Batch batch = RandomBatch(4, kSequence);
  torch::optim::Adam optimizer(model->parameters(), torch::optim::AdamOptions(1e-2));
  double loss = 0;
  int steps = 0;
  for (; steps < 150; ++steps) {
    ModelOutput out = model->Forward(batch, {});
    loss = out.loss.item<double>();
    if (loss < 0.1) break;
    optimizer.zero_grad();
    (out.loss + out.aux_loss).backward();
    optimizer.step();
  }
  // From ln(50) = 3.9 to below 0.1 within 150 Adam steps.
  EXPECT_LT(loss, 0.1) << "after " << steps << " steps";
}

TEST(TransformerLmTest, StatsMatchAHandCount) {
  ExperimentSpec spec = SmallSpec();
  spec.mutable_model()->mutable_transformer_lm()->set_tie_embeddings(false);
  spec.mutable_model()->mutable_moe()->set_moe_every(2);  // block 1 only
  std::shared_ptr<Model> model = Build(spec);
  ASSERT_NE(model, nullptr);
  const int64_t d = 16, v = kVocab, t = kSequence, e = 4, h = 24, dense = 20, k = 2;
  const int64_t attention_block = 2 * d + 4 * (d * d + d) + 2 * d;
  const int64_t dense_ffn = d * dense + dense + dense * d + d;
  const int64_t expert = d * h + h + h * d + d;
  const int64_t gate = e * d;
  const int64_t total =
      v * d + t * d + 2 * attention_block + dense_ffn + e * expert + gate + 2 * d + v * d;
  const ModelStats stats = model->Stats();
  EXPECT_EQ(stats.total_parameters, total);
  EXPECT_EQ(stats.active_parameters_per_token, total - (e - k) * expert);
  EXPECT_EQ(stats.num_moe_layers, 1);
  EXPECT_DOUBLE_EQ(stats.flops_per_expert_per_token, 4.0 * d * h);
  const double flops = 2 * (8.0 * d * d + 4.0 * t * d) + 4.0 * d * dense +
                       (2.0 * d * e + k * 4.0 * d * h) + 2.0 * d * v;
  EXPECT_DOUBLE_EQ(stats.flops_per_token, flops);

  // Tied: no separate output matrix.
  ExperimentSpec tied = spec;
  tied.mutable_model()->mutable_transformer_lm()->set_tie_embeddings(true);
  std::shared_ptr<Model> tied_model = Build(tied);
  ASSERT_NE(tied_model, nullptr);
  EXPECT_EQ(tied_model->Stats().total_parameters, total - v * d);
}

// Router streams (model_spec_util.h): building a router leaves the global
// generator exactly where it was, cached normal sample included (an odd
// count of scalar-path normals leaves one cached).
TEST(RouterStreamTest, LeavesTheGlobalGeneratorWhereItWas) {
  const auto draws_after = [](bool build_router) {
    torch::manual_seed(5);
    torch::randn({3});  // < 16 elements: the scalar path, caches a sample
    if (build_router) {
      RouterSpec spec;
      spec.set_name("xmoe");  // draws a projection and an orthogonal matrix
      spec.set_top_k(2);
      const RouterDims dims{.model_dim = 16, .num_experts = 4};
      absl::StatusOr<std::shared_ptr<Router>> router =
          CreateRouterOnOwnStream(spec, dims, RouterStreamKey(), 0);
      EXPECT_TRUE(router.ok()) << router.status();
    }
    return std::vector<at::Tensor>{torch::randn({3}), torch::randn({40}), torch::rand({5})};
  };
  const std::vector<at::Tensor> plain = draws_after(false);
  const std::vector<at::Tensor> with_router = draws_after(true);
  for (size_t i = 0; i < plain.size(); ++i) {
    EXPECT_TRUE(plain[i].equal(with_router[i])) << "draw " << i;
  }
}

TEST(RouterStreamTest, KeyFollowsTheGeneratorWithoutAdvancingIt) {
  torch::manual_seed(5);
  const uint64_t key = RouterStreamKey();
  EXPECT_EQ(RouterStreamKey(), key);  // nothing was consumed
  const at::Tensor next = torch::rand({4});
  torch::manual_seed(5);
  EXPECT_TRUE(torch::rand({4}).equal(next));
  EXPECT_NE(RouterStreamKey(), key);  // the state moved on: so did the key
  torch::manual_seed(6);
  EXPECT_NE(RouterStreamKey(), key);
  EXPECT_NE(RouterStreamSeed(key, 0), RouterStreamSeed(key, 1));
}

ExperimentSpec SpecWithRouter(const std::string& router) {
  ExperimentSpec spec = SmallSpec(router);
  if (router == "similarity_aware_full") {
    spec.mutable_router()->set_name("similarity_aware");
    spec.mutable_router()->mutable_similarity_aware()->set_projection(FULL);
  }
  return spec;
}

// Paired seeds: two models with the same seed and different routers differ
// in their routers only, however many random numbers each router draws
// (token_choice: an [E, D] gate; similarity_aware FULL: a gate and W_s = I;
// xmoe: a projection, orthogonal expert embeddings and a temperature;
// hash: nothing).
TEST(TransformerLmTest, SameSeedDifferentRoutersShareEveryOtherParameter) {
  torch::manual_seed(11);
  std::shared_ptr<Model> reference = Build(SpecWithRouter("token_choice"));
  ASSERT_NE(reference, nullptr);
  const std::map<std::string, at::Tensor> expected = NonRouterParameters(*reference);
  // The embeddings, both blocks' attention and experts, the final norm.
  ASSERT_GE(expected.size(), 20u);
  ASSERT_TRUE(expected.count("block1.moe.w1"));
  for (const std::string router :
       {"similarity_aware_full", "xmoe", "hash", "testing_models_top_k"}) {
    torch::manual_seed(11);
    std::shared_ptr<Model> model = Build(SpecWithRouter(router));
    ASSERT_NE(model, nullptr) << router;
    ExpectSameNonRouterParameters(expected, *model, router);
  }
  // The comparison can fail: another seed changes them.
  torch::manual_seed(12);
  std::shared_ptr<Model> other = Build(SpecWithRouter("token_choice"));
  ASSERT_NE(other, nullptr);
  EXPECT_FALSE(NonRouterParameters(*other).at("block1.moe.w1").equal(expected.at("block1.moe.w1")));
}

// Routers that draw the same shapes get the same values: token_choice and
// unified both draw one [E, D] gate from N(0, 0.02) on the same stream.
// Each layer's stream is its own, and the seed moves them all.
TEST(TransformerLmTest, RoutersOfTheSameShapeStartFromTheSameGate) {
  const auto gates = [](const std::string& router, uint64_t seed) {
    torch::manual_seed(seed);
    std::shared_ptr<Model> model = Build(SpecWithRouter(router));
    std::vector<at::Tensor> out;
    if (model == nullptr) return out;
    for (const auto& r : model->Routers()) {
      out.push_back(r->named_parameters()["gate_weight"]);
    }
    return out;
  };
  const std::vector<at::Tensor> token_choice = gates("token_choice", 21);
  const std::vector<at::Tensor> unified = gates("unified", 21);
  ASSERT_EQ(token_choice.size(), 2u);
  ASSERT_EQ(unified.size(), 2u);
  for (size_t layer = 0; layer < 2; ++layer) {
    EXPECT_EQ(token_choice[layer].sizes(), (std::vector<int64_t>{4, 16}));
    EXPECT_TRUE(token_choice[layer].equal(unified[layer])) << "layer " << layer;
  }
  EXPECT_FALSE(token_choice[0].equal(token_choice[1]));
  EXPECT_FALSE(gates("token_choice", 22)[0].equal(token_choice[0]));
}

}  // namespace
}  // namespace moelab
