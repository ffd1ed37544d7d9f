// Bad input and faults through RunExperiment, as a demanding user meets
// them (issue 16): each case asserts how the run ends (the Status code and
// message) and what its result.json says. The binaries' exit path (one
// "error:" line, non-zero status) is bad_input_test.sh.

#include <ATen/ATen.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/optim/sgd.h>

#include <filesystem>
#include <memory>
#include <new>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/atomic_file.h"
#include "core/checkpoint.h"
#include "core/model.h"
#include "core/spec.h"
#include "core/tasks/image_classification_name.h"
#include "core/testing/file_size_limit.h"
#include "core/trainer.h"
#include "experiments/testing/tiny_run.h"
#include "google/protobuf/util/json_util.h"

namespace moelab {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::testing::Not;

ExperimentSpec Tiny(const std::string& extra = "") { return TinyRunSpec(2, extra); }

std::string TempDir(const std::string& name) {
  const std::string dir = absl::StrCat(::testing::TempDir(), "/bad_input_", name);
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

absl::StatusOr<RunResult> RunTiny(const ExperimentSpec& spec, const std::string& dir,
                                  bool resume = false, int stop_after = 0, bool overwrite = false) {
  RunOptions options;
  options.output_directory = dir;
  options.resume = resume;
  options.stop_after_epochs = stop_after;
  options.overwrite = overwrite;
  options.verbose = false;
  return RunExperiment(spec, options);
}

// result.json as the run left it.
RunResult Recorded(const std::string& run_dir) {
  absl::StatusOr<std::string> json = ReadFile(run_dir + "/result.json");
  EXPECT_TRUE(json.ok()) << json.status();
  RunResult result;
  if (json.ok()) {
    EXPECT_TRUE(google::protobuf::util::JsonStringToMessage(*json, &result).ok());
  }
  return result;
}

std::vector<std::string> Temporaries(const std::string& dir) {
  std::vector<std::string> found;
  for (const auto& entry : fs::directory_iterator(dir)) {
    const std::string name = entry.path().filename().string();
    if (name.find(".tmp.") != std::string::npos) found.push_back(name);
  }
  return found;
}

TEST(BadInputTest, AnAllocationLargerThanMemoryAtModelBuildIsAnErrorNotACrash) {
  // A 10^6 x 2^20 float embedding: 4 TB.
  ExperimentSpec spec = Tiny();
  spec.mutable_dataset()->mutable_synthetic_lm()->set_vocab_size(1000000);
  spec.mutable_model()->mutable_transformer_lm()->set_model_dim(1 << 20);
  const std::string dir = TempDir("oom");
  const absl::StatusOr<RunResult> result = RunTiny(spec, dir);
  ASSERT_FALSE(result.ok());
  EXPECT_TRUE(absl::IsResourceExhausted(result.status())) << result.status();
  EXPECT_THAT(result.status().message(),
              HasSubstr("out of memory while building model 'moe_transformer_lm': "));
  EXPECT_THAT(result.status().message(), HasSubstr("you tried to allocate"));
  EXPECT_THAT(result.status().message(), Not(HasSubstr("\n")));  // no backtrace
  const RunResult recorded = Recorded(dir + "/tiny");
  EXPECT_EQ(recorded.status(), "FAILED");
  EXPECT_EQ(recorded.status_reason(), result.status().message());
  EXPECT_EQ(recorded.spec_hash(), SpecHash(spec));
}

TEST(BadInputTest, StatusFromExceptionNamesTheStage) {
  const absl::Status oom = StatusFromException(std::bad_alloc(), "loading dataset 'sotu_lm'");
  EXPECT_TRUE(absl::IsResourceExhausted(oom));
  EXPECT_EQ(oom.message(), "out of memory while loading dataset 'sotu_lm': std::bad_alloc");
  const absl::Status other =
      StatusFromException(std::runtime_error("bad shape\nframe #0"), "training epoch 2");
  EXPECT_TRUE(absl::IsInternal(other));
  EXPECT_EQ(other.message(), "training epoch 2: bad shape");
}

TEST(BadInputTest, AFullDiskWhileWritingACheckpointEndsTheRunWithItsReason) {
  const std::string dir = TempDir("disk_full");
  absl::StatusOr<RunResult> result;
  {
    // result.json, metrics.csv and spec.pbtxt fit (a few KB); the
    // checkpoint (about 400 KB) does not.
    FileSizeLimit limit(64 << 10);
    result = RunTiny(Tiny(), dir);
  }
  ASSERT_FALSE(result.ok());
  EXPECT_TRUE(absl::IsResourceExhausted(result.status())) << result.status();
  EXPECT_THAT(result.status().message(),
              HasSubstr(absl::StrCat("epoch 1 finished but cannot write checkpoint '", dir,
                                     "/tiny/checkpoint.pt': cannot write '")));
  EXPECT_THAT(result.status().message(), HasSubstr("File too large"));
  const RunResult recorded = Recorded(dir + "/tiny");
  EXPECT_EQ(recorded.status(), "FAILED");
  EXPECT_EQ(recorded.status_reason(), result.status().message());
  EXPECT_EQ(recorded.epochs_size(), 1);  // what the run measured is kept
  EXPECT_THAT(Temporaries(dir + "/tiny"), ::testing::IsEmpty());
  EXPECT_FALSE(fs::exists(dir + "/tiny/checkpoint.pt"));
}

TEST(BadInputTest, ACheckpointWithFlippedBytesIsNotResumed) {
  const std::string dir = TempDir("flipped");
  ASSERT_TRUE(RunTiny(Tiny(), dir, /*resume=*/false, /*stop_after=*/1).ok());
  const std::string checkpoint = dir + "/tiny/checkpoint.pt";
  std::string bytes = *ReadFile(checkpoint);
  for (size_t i = bytes.size() / 2; i < bytes.size() / 2 + 16; ++i) {
    bytes[i] = static_cast<char>(bytes[i] ^ 0x5a);
  }
  ASSERT_TRUE(WriteFileAtomically(checkpoint, bytes).ok());
  const absl::StatusOr<RunResult> resumed = RunTiny(Tiny(), dir, /*resume=*/true);
  ASSERT_FALSE(resumed.ok());
  EXPECT_TRUE(absl::IsDataLoss(resumed.status())) << resumed.status();
  EXPECT_THAT(resumed.status().message(), HasSubstr(absl::StrCat("checkpoint '", checkpoint,
                                                                 "' is corrupt: the FNV-1a 64 "
                                                                 "checksum")));
  // The record of the epoch it had finished stays, now marked FAILED.
  const RunResult recorded = Recorded(dir + "/tiny");
  EXPECT_EQ(recorded.status(), "FAILED");
  EXPECT_EQ(recorded.status_reason(), resumed.status().message());
  EXPECT_EQ(recorded.epochs_size(), 1);
}

TEST(BadInputTest, AnotherModelsInitCheckpointIsRefused) {
  // A tiny V-MoE ViT's checkpoint, as a trained vision run leaves it.
  const std::string dir = TempDir("vit_into_lm");
  ExperimentSpec vit;
  vit.set_name("vit");
  vit.mutable_dataset()->set_name("fashion_mnist");
  vit.mutable_model()->set_name("vmoe_vit");
  vit.mutable_model()->set_preset("cpu_tiny");
  vit.mutable_model()->mutable_vit()->set_patch_size(7);
  vit.mutable_model()->mutable_vit()->set_model_dim(32);
  vit.mutable_model()->mutable_vit()->set_num_heads(2);
  vit.mutable_model()->mutable_moe()->set_num_experts(4);
  vit.mutable_router()->set_name("token_choice");
  vit.mutable_router()->set_top_k(2);
  ASSERT_TRUE(ResolveSpec(&vit).ok());
  DatasetInfo images;
  images.task = kImageClassificationTask;
  images.num_classes = 10;
  images.channels = 1;
  images.height = images.width = 28;
  images.pixel_mean = {0.5f};
  images.pixel_std = {0.25f};
  absl::StatusOr<std::shared_ptr<Model>> model = CreateModel(vit, images);
  ASSERT_TRUE(model.ok()) << model.status();
  torch::optim::SGD optimizer((*model)->parameters(), torch::optim::SGDOptions(0.1));
  TrainingState state;
  state.rng_state = at::detail::getDefaultCPUGenerator().get_state();
  const std::string checkpoint = dir + "/vit_checkpoint.pt";
  const absl::Status saved = SaveCheckpoint(checkpoint, **model, optimizer, state);
  ASSERT_TRUE(saved.ok()) << saved;

  ExperimentSpec lm = Tiny();
  lm.mutable_training()->set_epochs(0);
  lm.mutable_evaluation()->set_init_checkpoint(checkpoint);
  ASSERT_TRUE(ValidateSpec(lm).ok()) << ValidateSpec(lm);
  const absl::StatusOr<RunResult> result = RunTiny(lm, dir);
  ASSERT_FALSE(result.ok());
  EXPECT_TRUE(absl::IsInvalidArgument(result.status())) << result.status();
  EXPECT_THAT(result.status().message(),
              HasSubstr(absl::StrCat("evaluation.init_checkpoint: checkpoint '", checkpoint,
                                     "' does not fit this model: ")));
  EXPECT_THAT(std::string(result.status().message()),
              HasSubstr("only router parameters may differ"));
  EXPECT_EQ(Recorded(dir + "/tiny").status(), "FAILED");
}

TEST(BadInputTest, AFreshRunDoesNotOverwriteAnotherSpecsCompletedRun) {
  const std::string dir = TempDir("overwrite");
  ExperimentSpec first = Tiny();
  first.mutable_training()->set_epochs(1);
  ASSERT_TRUE(RunTiny(first, dir).ok());
  const std::string before = *ReadFile(dir + "/tiny/result.json");
  ExperimentSpec second = first;
  second.set_seed(4);
  const absl::StatusOr<RunResult> refused = RunTiny(second, dir);
  ASSERT_FALSE(refused.ok());
  EXPECT_TRUE(absl::IsFailedPrecondition(refused.status())) << refused.status();
  EXPECT_THAT(
      refused.status().message(),
      HasSubstr(absl::StrCat("the run directory ", dir,
                             "/tiny holds a COMPLETED run "
                             "of a different spec (hash ",
                             SpecHash(first), "; this spec's hash is ", SpecHash(second), ")")));
  EXPECT_THAT(refused.status().message(), HasSubstr("--overwrite"));
  // Untouched: neither overwritten nor marked FAILED.
  EXPECT_EQ(*ReadFile(dir + "/tiny/result.json"), before);
  EXPECT_EQ(*ReadFile(dir + "/tiny/spec.pbtxt"), SpecToText(first));
  // The same spec again may run; --overwrite replaces the other one.
  EXPECT_TRUE(RunTiny(first, dir).ok());
  const absl::StatusOr<RunResult> replaced =
      RunTiny(second, dir, /*resume=*/false, /*stop_after=*/0, /*overwrite=*/true);
  ASSERT_TRUE(replaced.ok()) << replaced.status();
  EXPECT_EQ(Recorded(dir + "/tiny").spec_hash(), SpecHash(second));
}

}  // namespace
}  // namespace moelab
