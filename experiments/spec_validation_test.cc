// Malformed specs against the real plugins: each must give a clear error
// naming the field (or file) and never crash.

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>

#include "core/spec.h"

namespace moelab {
namespace {

using ::testing::HasSubstr;

// Tests edit this text by string replacement: keep it as written.
// clang-format off
constexpr char kValid[] = R"pb(
name: "valid"
dataset { name: "synthetic_lm" synthetic_lm { vocab_size: 50 sequence_length: 8 } }
model { name: "moe_transformer_lm" preset: "cpu_tiny" moe { num_experts: 4 } }
router { name: "token_choice" top_k: 2 }
training { learning_rate: 0.001 epochs: 1 batch_size: 4 }
)pb";
// clang-format on

struct Case {
  std::string label;
  std::string from;  // replaced in kValid by `to`
  std::string to;
  std::string expected;
};

class MalformedSpecTest : public ::testing::TestWithParam<Case> {};

TEST(ValidSpecTest, TheBaseSpecIsValid) {
  absl::StatusOr<ExperimentSpec> spec = LoadSpecFromText(kValid, "valid.pbtxt");
  ASSERT_TRUE(spec.ok()) << spec.status();
}

TEST(EmptySpecTest, SaysTheDatasetNameIsRequiredAndListsTheDatasets) {
  absl::StatusOr<ExperimentSpec> spec = LoadSpecFromText("", "empty.pbtxt");
  ASSERT_FALSE(spec.ok());
  EXPECT_THAT(spec.status().message(), HasSubstr("empty.pbtxt: dataset.name: required; one of: "));
  for (const char* dataset : {"fashion_mnist", "sotu_lm", "synthetic_lm", "wikitext_lm"}) {
    EXPECT_THAT(spec.status().message(), HasSubstr(dataset));
  }
}

TEST_P(MalformedSpecTest, ClearErrorNamingTheField) {
  std::string text = kValid;
  const size_t at = text.find(GetParam().from);
  ASSERT_NE(at, std::string::npos) << GetParam().from;
  text.replace(at, GetParam().from.size(), GetParam().to);
  absl::StatusOr<ExperimentSpec> spec = LoadSpecFromText(text, "bad.pbtxt");
  ASSERT_FALSE(spec.ok()) << GetParam().label << " was accepted";
  EXPECT_THAT(spec.status().message(), HasSubstr(GetParam().expected)) << spec.status();
}

const char kRouter[] = "router { name: \"token_choice\" top_k: 2 }";

INSTANTIATE_TEST_SUITE_P(
    RealPlugins, MalformedSpecTest,
    ::testing::Values(
        Case{"syntax error", "name: \"valid\"", "name: \"valid", "bad.pbtxt:2:"},
        Case{"unknown field", "top_k: 2", "topk: 2", "no field named \"topk\""},
        Case{"no router name", "name: \"token_choice\"", "name: \"\"",
             "router.name: required; one of: "},
        Case{"no model name", "name: \"moe_transformer_lm\"", "", "model.name: required"},
        Case{"unknown router", "name: \"token_choice\"", "name: \"token_chioce\"",
             "router.name: unknown router 'token_chioce'; registered routers:"},
        Case{"k < 0", "top_k: 2", "top_k: -2", "router.top_k: must be > 0"},
        Case{"nccl on a CPU build", "batch_size: 4 }",
             "batch_size: 4 } runtime { distributed { backend: \"nccl\" } }",
             "runtime.distributed.backend: nccl needs a CUDA build of LibTorch"},
        Case{"unknown backend", "batch_size: 4 }",
             "batch_size: 4 } runtime { distributed { backend: \"mpi\" } }",
             "runtime.distributed.backend: unknown backend 'mpi' (expected gloo or nccl)"},
        Case{"negative timeout", "batch_size: 4 }",
             "batch_size: 4 } runtime { distributed { timeout_s: -1 } }",
             "runtime.distributed.timeout_s: must be a positive number of seconds, got -1"},
        Case{"NaN timeout", "batch_size: 4 }",
             "batch_size: 4 } runtime { distributed { timeout_s: nan } }",
             "runtime.distributed.timeout_s"},
        Case{"negative expert parallel", "batch_size: 4 }",
             "batch_size: 4 } runtime { distributed { expert_parallel: -2 } }",
             "runtime.distributed.expert_parallel: must be >= 1, got -2"},
        Case{"tiny buckets", "batch_size: 4 }",
             "batch_size: 4 } runtime { distributed { bucket_bytes: 10 } }",
             "runtime.distributed.bucket_bytes: must be at least 1024, got 10"},
        Case{"negative training subset", "name: \"synthetic_lm\"",
             "name: \"synthetic_lm\" train_subset_examples: -5",
             "dataset.train_subset_examples: must be >= 0 (0 = the whole training split), got -5"},
        Case{"an explicit k = 0 is refused, not replaced by the default", "top_k: 2", "top_k: 0",
             "router.top_k: must be > 0, got 0"},
        Case{"NaN weight decay", "learning_rate: 0.001", "learning_rate: 0.001 weight_decay: nan",
             "training.weight_decay"},
        Case{"infinite learning rate", "learning_rate: 0.001", "learning_rate: inf",
             "training.learning_rate: must be a finite number > 0, got inf"},
        Case{"NaN momentum", "learning_rate: 0.001", "learning_rate: 0.001 momentum: nan",
             "training.momentum"},
        Case{"NaN min_lr_ratio", "learning_rate: 0.001", "learning_rate: 0.001 min_lr_ratio: nan",
             "training.min_lr_ratio"},
        Case{"NaN load-balance coefficient", "top_k: 2", "top_k: 2 load_balance_coef: nan",
             "router.load_balance_coef: must be a finite number >= 0"},
        Case{"infinite z-loss coefficient", "top_k: 2", "top_k: 2 z_loss_coef: inf",
             "router.z_loss_coef: must be a finite number >= 0"},
        Case{"an explicit synthetic sequence_length 0 is refused", "sequence_length: 8",
             "sequence_length: 0", "dataset.synthetic_lm.sequence_length: must be >= 1, got 0"},
        Case{
            "an explicit sequence_length 0 is refused",
            "dataset { name: \"synthetic_lm\" synthetic_lm { vocab_size: 50 sequence_length: 8 } }",
            "dataset { name: \"sotu_lm\" sotu { sequence_length: 0 } }",
            "dataset.sotu.sequence_length: must be >= 1, got 0"},
        Case{"k > experts", "top_k: 2", "top_k: 5",
             "router.top_k: must be <= the number of experts (model.moe.num_experts = 4), got 5"},
        Case{"fractional k for token choice", "top_k: 2", "top_k: 1.5", "needs a whole number"},
        Case{"tau <= 0", kRouter,
             "router { name: \"similarity_aware\" top_k: 2 similarity_aware { temperature: 0 } }",
             "router.similarity_aware.temperature"},
        Case{"sigma <= 0", kRouter,
             "router { name: \"attention_aware\" top_k: 2 attention_aware { sigma: -1 } }",
             "router.attention_aware.sigma"},
        Case{"renormalised top-1 token choice cannot learn from the task", kRouter,
             "router { name: \"token_choice\" top_k: 1 token_choice { renormalize: true } }",
             "router.token_choice.renormalize: with top_k = 1 every combine weight is r/r "
             "= 1, so the task loss gives the gate zero gradient"},
        Case{
            "renormalised top-1 similarity-aware routing likewise", kRouter,
            "router { name: \"similarity_aware\" top_k: 1 similarity_aware { renormalize: true } }",
            "router.similarity_aware.renormalize"},
        Case{"unknown load-balance counting", "top_k: 2", "top_k: 2 load_balance_counting: 7",
             "router.load_balance_counting: unknown value 7"},
        Case{"alpha + beta != 1", kRouter,
             "router { name: \"unified\" top_k: 2 unified { alpha: 0.7 beta: 0.2 } }",
             "router.unified"},
        Case{"options of another router", kRouter,
             "router { name: \"token_choice\" top_k: 2 unified { } }",
             "router.unified: these options belong to another router"},
        Case{
            "missing dataset directory",
            "dataset { name: \"synthetic_lm\" synthetic_lm { vocab_size: 50 sequence_length: 8 } }",
            "dataset { name: \"wikitext_lm\" wikitext { data_dir: \"/no/such/wikitext\" } }",
            "dataset.wikitext.data_dir"},
        Case{"vision model on text", "name: \"moe_transformer_lm\"", "name: \"vmoe_vit\"",
             "model.name"},
        Case{"unknown preset", "preset: \"cpu_tiny\"", "preset: \"huge\"", "model.preset"},
        Case{"negative learning rate", "learning_rate: 0.001", "learning_rate: -1",
             "training.learning_rate"},
        Case{"zero batch", "batch_size: 4", "batch_size: 0", "training.batch_size"},
        Case{"negative capacity factor", kRouter,
             "router { name: \"token_choice\" top_k: 2 token_choice { capacity_factor: -1 } }",
             "router.token_choice.capacity_factor"}),
    [](const auto& info) {
      std::string name;
      for (char c : info.param.label) name += std::isalnum(c) ? c : '_';
      return name;
    });

}  // namespace
}  // namespace moelab
