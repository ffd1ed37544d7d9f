#include "core/spec.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <string>

namespace moelab {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

// Tests edit this text by string replacement: keep it as written.
// clang-format off
constexpr char kValidSpec[] = R"pb(
  name: "ok"
  seed: 1
  dataset { name: "testing_text_dir" wikitext { data_dir: "/" } }
  model { name: "testing_lm" moe { num_experts: 4 } }
  router { name: "testing_first_expert" top_k: 1 }
  training { learning_rate: 0.001 epochs: 1 batch_size: 2 }
)pb";
// clang-format on

TEST(SpecTest, ValidSpecLoadsWithDefaultsFilledIn) {
  auto spec = LoadSpecFromText(kValidSpec, "valid.pbtxt");
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->runtime().device(), "cpu");
  EXPECT_EQ(spec->output().directory(), "runs");
  EXPECT_EQ(spec->training().optimizer(), ADAMW);
  EXPECT_EQ(spec->evaluation().probe_examples(), 32);
}

TEST(SpecTest, SyntaxErrorNamesLineAndColumn) {
  auto spec = ParseSpec("name: \"x\"\nseed: 1\nmodel {", "broken.pbtxt");
  ASSERT_FALSE(spec.ok());
  EXPECT_THAT(spec.status().message(), HasSubstr("broken.pbtxt:3:"));
}

TEST(SpecTest, UnknownFieldIsAParseError) {
  auto spec = ParseSpec("router { name: \"x\" topk: 2 }", "typo.pbtxt");
  ASSERT_FALSE(spec.ok());
  EXPECT_THAT(spec.status().message(), HasSubstr("topk"));
}

TEST(SpecTest, HashIgnoresOutputDirectoryButNotSeed) {
  auto a = LoadSpecFromText(kValidSpec, "a");
  ASSERT_TRUE(a.ok());
  ExperimentSpec b = *a;
  b.mutable_output()->set_directory("/elsewhere");
  b.mutable_runtime()->set_threads(7);
  EXPECT_EQ(SpecHash(*a), SpecHash(b));
  b.set_seed(2);
  EXPECT_NE(SpecHash(*a), SpecHash(b));
  EXPECT_EQ(SpecHash(*a).size(), 16u);
}

TEST(SpecTest, PrecisionDefaultsToFp32AndOnlyBf16ChangesTheHash) {
  auto a = LoadSpecFromText(kValidSpec, "a");
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->runtime().precision(), FP32);
  ExperimentSpec unset = *a;
  unset.mutable_runtime()->clear_precision();
  // Cached fp32 runs from before the field existed keep their key.
  EXPECT_EQ(SpecHash(*a), SpecHash(unset));
  ExperimentSpec bf16 = *a;
  bf16.mutable_runtime()->set_precision(BF16);
  EXPECT_NE(SpecHash(*a), SpecHash(bf16));
}

TEST(SpecTest, AnEmptySpecSaysTheDatasetNameIsRequired) {
  absl::StatusOr<ExperimentSpec> spec = LoadSpecFromText("", "empty.pbtxt");
  ASSERT_FALSE(spec.ok());
  EXPECT_THAT(spec.status().message(), HasSubstr("empty.pbtxt: dataset.name: required; one of: "));
  EXPECT_THAT(spec.status().message(), HasSubstr("testing_text_dir"));
  EXPECT_THAT(spec.status().message(), Not(HasSubstr("unknown dataset")));
}

// Under `bazel run` a relative evaluation.init_checkpoint is relative to the
// directory the command was typed in ($BUILD_WORKING_DIRECTORY), which is
// where the trainer loads it from: validation checks that same file.
TEST(SpecTest, ARelativeInitCheckpointIsCheckedWhereItWillBeLoaded) {
  const std::string typed_in = ::testing::TempDir() + "/spec_test_cwd";
  std::filesystem::create_directories(typed_in + "/runs");
  std::ofstream(typed_in + "/runs/checkpoint.pt") << "x";
  const std::string text =
      std::string(kValidSpec) + "evaluation { init_checkpoint: \"runs/checkpoint.pt\" }";
  ASSERT_EQ(::setenv("BUILD_WORKING_DIRECTORY", typed_in.c_str(), 1), 0);
  absl::StatusOr<ExperimentSpec> found = LoadSpecFromText(text, "relative.pbtxt");
  std::filesystem::remove(typed_in + "/runs/checkpoint.pt");
  absl::StatusOr<ExperimentSpec> missing = LoadSpecFromText(text, "relative.pbtxt");
  ::unsetenv("BUILD_WORKING_DIRECTORY");
  EXPECT_TRUE(found.ok()) << found.status();
  ASSERT_FALSE(missing.ok());
  EXPECT_THAT(missing.status().message(),
              HasSubstr("evaluation.init_checkpoint: file not found: runs/checkpoint.pt "
                        "(resolved as " +
                        typed_in + "/runs/checkpoint.pt)"));
}

struct BadSpec {
  std::string label;
  // kValidSpec with its first occurrence of `from` replaced by `to`.
  std::string from;
  std::string to;
  std::string expected;
};

class BadSpecTest : public ::testing::TestWithParam<BadSpec> {};

TEST_P(BadSpecTest, GivesAClearErrorNamingTheField) {
  std::string text = kValidSpec;
  const size_t at = text.find(GetParam().from);
  ASSERT_NE(at, std::string::npos) << GetParam().from;
  text.replace(at, GetParam().from.size(), GetParam().to);
  auto spec = LoadSpecFromText(text, "bad.pbtxt");
  ASSERT_FALSE(spec.ok()) << GetParam().label;
  EXPECT_THAT(spec.status().message(), HasSubstr("bad.pbtxt"));
  EXPECT_THAT(spec.status().message(), HasSubstr(GetParam().expected)) << spec.status();
}

constexpr char kTraining[] = "training { learning_rate: 0.001 epochs: 1 batch_size: 2 }";

INSTANTIATE_TEST_SUITE_P(
    Core, BadSpecTest,
    ::testing::Values(
        BadSpec{"empty name", "name: \"ok\"", "name: \"\"", "name: must be non-empty"},
        BadSpec{"slash in name", "name: \"ok\"", "name: \"a/b\"", "name: must be non-empty"},
        BadSpec{"unknown router", "name: \"testing_first_expert\"", "name: \"nope\"",
                "router.name: unknown router 'nope'"},
        BadSpec{"unknown model", "name: \"testing_lm\"", "name: \"nope\"",
                "model.name: unknown model 'nope'"},
        BadSpec{"unknown dataset", "name: \"testing_text_dir\"", "name: \"nope\"",
                "dataset.name: unknown dataset 'nope'"},
        BadSpec{"empty dataset name", "name: \"testing_text_dir\"", "name: \"\"",
                "dataset.name: required; one of: testing_text_dir"},
        BadSpec{"no model", "model { name: \"testing_lm\" moe { num_experts: 4 } }", "",
                "model.name: required; one of: "},
        BadSpec{"no router", "router { name: \"testing_first_expert\" top_k: 1 }", "",
                "router.name: required; one of: testing_first_expert"},
        BadSpec{"k > E", "top_k: 1", "top_k: 5",
                "router.top_k: must be <= the number of experts (model.moe.num_experts = 4)"},
        BadSpec{"negative k", "top_k: 1", "top_k: -1", "router.top_k: must be > 0"},
        BadSpec{"fractional k", "top_k: 1", "top_k: 1.5", "needs a whole number"},
        BadSpec{"zero lr", "learning_rate: 0.001", "learning_rate: 0", "training.learning_rate"},
        BadSpec{"zero batch", "batch_size: 2", "batch_size: 0", "training.batch_size"},
        BadSpec{"no epochs", "epochs: 1", "", "training.epochs"},
        BadSpec{"bad device", kTraining, std::string(kTraining) + " runtime { device: \"tpu\" }",
                "runtime.device"},
        BadSpec{"bad text corruption rate", kTraining,
                std::string(kTraining) +
                    " evaluation { corruptions { kind: TOKEN_DELETION rate: 1.5 } }",
                "evaluation.corruptions[0].rate"},
        BadSpec{"image corruption on text", kTraining,
                std::string(kTraining) + " evaluation { corruptions { kind: JPEG severity: 2 } }",
                "is an image corruption"},
        BadSpec{"missing checkpoint", kTraining,
                std::string(kTraining) + " evaluation { init_checkpoint: \"/no/such.ckpt\" }",
                "evaluation.init_checkpoint: file not found"},
        BadSpec{"missing data dir", "data_dir: \"/\"", "data_dir: \"/no/such/dir\"",
                "dataset.wikitext.data_dir: directory not found"},
        BadSpec{"wrong options for router", "top_k: 1 }", "top_k: 1 unified {} }",
                "router.unified: these options belong to another router"},
        BadSpec{"zero experts", "num_experts: 4", "num_experts: 0", "model.moe.num_experts"}),
    [](const ::testing::TestParamInfo<BadSpec>& info) {
      std::string name;
      for (char c : info.param.label) name += std::isalnum(c) ? c : '_';
      return name;
    });

}  // namespace
}  // namespace moelab
