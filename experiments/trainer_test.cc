// End-to-end trainer behaviour on a tiny real spec: determinism,
// kill-and-resume, training-free evaluation, outputs on disk.

#include <filesystem>
#include <string>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "core/atomic_file.h"
#include "core/spec.h"
#include "core/trainer.h"

namespace moelab {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

constexpr char kTinySpec[] = R"pb(
  name: "tiny"
  seed: 3
  dataset {
    name: "synthetic_lm"
    synthetic_lm { vocab_size: 64 sequence_length: 16 num_sequences: 96 }
  }
  model {
    name: "moe_transformer_lm"
    preset: "cpu_tiny"
    moe { num_experts: 4 expert_hidden: 32 }
    transformer_lm { num_layers: 2 model_dim: 32 num_heads: 2 dense_hidden: 32 }
  }
  router { name: "token_choice" top_k: 2 load_balance_coef: 0.01 }
  training { learning_rate: 0.003 epochs: 3 batch_size: 16 warmup_steps: 2 }
  evaluation { probe_examples: 8 max_eval_batches: 2 }
  runtime { threads: 1 }
)pb";

std::string TempDir(const std::string& name) {
  const std::string dir = absl::StrCat(::testing::TempDir(), "/", name);
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

ExperimentSpec Tiny(const std::string& extra = "") {
  absl::StatusOr<ExperimentSpec> spec = LoadSpecFromText(std::string(kTinySpec) + extra, "tiny");
  EXPECT_TRUE(spec.ok()) << spec.status();
  return *spec;
}

RunResult RunTiny(const ExperimentSpec& spec, const std::string& dir, bool resume = false,
              int stop_after = 0) {
  RunOptions options;
  options.output_directory = dir;
  options.resume = resume;
  options.stop_after_epochs = stop_after;
  options.verbose = false;
  absl::StatusOr<RunResult> result = RunExperiment(spec, options);
  EXPECT_TRUE(result.ok()) << result.status();
  return result.ok() ? *result : RunResult{};
}

// Everything a run measured except timings and memory.
void ExpectSameMetrics(const RunResult& a, const RunResult& b) {
  ASSERT_EQ(a.epochs_size(), b.epochs_size());
  for (int e = 0; e < a.epochs_size(); ++e) {
    EXPECT_EQ(a.epochs(e).train_loss(), b.epochs(e).train_loss()) << "epoch " << e;
    EXPECT_EQ(a.epochs(e).valid_loss(), b.epochs(e).valid_loss()) << "epoch " << e;
    ASSERT_EQ(a.epochs(e).layers_size(), b.epochs(e).layers_size());
    for (int l = 0; l < a.epochs(e).layers_size(); ++l) {
      EXPECT_EQ(a.epochs(e).layers(l).fluctuation_top1(), b.epochs(e).layers(l).fluctuation_top1());
      EXPECT_EQ(a.epochs(e).layers(l).gate_entropy(), b.epochs(e).layers(l).gate_entropy());
    }
  }
  EXPECT_EQ(a.final().valid_perplexity(), b.final().valid_perplexity());
}

TEST(TrainerTest, SameSpecAndSeedGiveIdenticalMetrics) {
  const ExperimentSpec spec = Tiny();
  RunResult a = RunTiny(spec, TempDir("det_a"));
  RunResult b = RunTiny(spec, TempDir("det_b"));
  EXPECT_EQ(a.status(), "COMPLETED");
  ExpectSameMetrics(a, b);
  EXPECT_EQ(a.spec_hash(), SpecHash(spec));
  EXPECT_EQ(a.versions().threads(), 1);
  EXPECT_FALSE(a.versions().libtorch().empty());
  // Fluctuation needs a previous epoch.
  EXPECT_FALSE(a.epochs(0).layers(0).has_fluctuation());
  EXPECT_TRUE(a.epochs(1).layers(0).has_fluctuation());
}

TEST(TrainerTest, KilledAndResumedRunEqualsUninterruptedRun) {
  const ExperimentSpec spec = Tiny();
  RunResult straight = RunTiny(spec, TempDir("straight"));
  const std::string dir = TempDir("resumed");
  RunResult partial = RunTiny(spec, dir, /*resume=*/false, /*stop_after=*/1);
  EXPECT_EQ(partial.epochs_size(), 1);
  EXPECT_EQ(partial.status(), "RUNNING");
  RunResult resumed = RunTiny(spec, dir, /*resume=*/true);
  EXPECT_EQ(resumed.status(), "COMPLETED");
  ExpectSameMetrics(straight, resumed);
}

TEST(TrainerTest, WritesItsOutputs) {
  const std::string dir = TempDir("outputs");
  const RunResult result = RunTiny(Tiny(), dir);
  for (const EpochMetrics& e : result.epochs()) {
    EXPECT_GT(e.rss_mb(), 0);
    EXPECT_GE(e.peak_rss_mb(), e.rss_mb());
  }
  for (const char* file : {"spec.pbtxt", "result.json", "metrics.csv", "checkpoint.pt"}) {
    EXPECT_TRUE(fs::exists(absl::StrCat(dir, "/tiny/", file))) << file;
  }
  absl::StatusOr<std::string> csv = ReadFile(dir + "/tiny/metrics.csv");
  ASSERT_TRUE(csv.ok());
  EXPECT_THAT(*csv, HasSubstr("epoch,step,train_loss"));
  EXPECT_THAT(*csv, HasSubstr(",peak_rss_mb,rss_mb,"));
  EXPECT_EQ(std::count(csv->begin(), csv->end(), '\n'), 4);  // header + 3 epochs
  absl::StatusOr<std::string> json = ReadFile(dir + "/tiny/result.json");
  ASSERT_TRUE(json.ok());
  EXPECT_THAT(*json, HasSubstr("\"status\": \"COMPLETED\""));
}

TEST(TrainerTest, RefusesToResumeAnotherSpecsCheckpoint) {
  const std::string dir = TempDir("other_spec");
  RunTiny(Tiny(), dir, false, 1);
  ExperimentSpec changed = Tiny();
  changed.set_seed(4);
  RunOptions options;
  options.output_directory = dir;
  options.resume = true;
  options.verbose = false;
  absl::StatusOr<RunResult> result = RunExperiment(changed, options);
  ASSERT_FALSE(result.ok());
  EXPECT_THAT(result.status().message(), HasSubstr("different spec"));
}

TEST(TrainerTest, NonFiniteLossStopsTheRunWithAClearError) {
  const std::string dir = TempDir("nonfinite");
  ExperimentSpec spec = Tiny();
  spec.mutable_training()->set_learning_rate(1e30);
  spec.mutable_training()->set_warmup_steps(0);
  RunOptions options;
  options.output_directory = dir;
  options.verbose = false;
  absl::StatusOr<RunResult> result = RunExperiment(spec, options);
  ASSERT_FALSE(result.ok());
  EXPECT_THAT(result.status().message(), HasSubstr("training stopped: the loss became"));
  absl::StatusOr<std::string> json = ReadFile(dir + "/tiny/result.json");
  ASSERT_TRUE(json.ok());
  EXPECT_THAT(*json, HasSubstr("STOPPED_NONFINITE_LOSS"));
}

TEST(TrainerTest, TrainingFreeEvaluationWithAnotherRouter) {
  const std::string dir = TempDir("trained");
  const RunResult trained = RunTiny(Tiny(), dir);
  // Token choice is causal: it reports the generation-time perplexity on the
  // same validation subset as non-causal routers do, equal there to its
  // teacher-forced one.
  EXPECT_FALSE(trained.non_causal_router_in_causal_model());
  EXPECT_GT(trained.final().generation_perplexity(), 1);
  EXPECT_EQ(trained.final().generation_perplexity(),
            trained.final().teacher_forced_perplexity_same_subset());
  ExperimentSpec swapped = Tiny();
  swapped.set_name("swapped");
  swapped.mutable_router()->Clear();
  swapped.mutable_router()->set_name("unified");
  swapped.mutable_router()->set_top_k(2);
  swapped.mutable_training()->set_epochs(0);
  swapped.mutable_evaluation()->set_init_checkpoint(dir + "/tiny/checkpoint.pt");
  ASSERT_TRUE(ResolveSpec(&swapped).ok());
  ASSERT_TRUE(ValidateSpec(swapped).ok()) << ValidateSpec(swapped);
  RunResult result = RunTiny(swapped, dir);
  EXPECT_EQ(result.status(), "COMPLETED");
  EXPECT_EQ(result.epochs_size(), 0);
  EXPECT_GT(result.final().valid_perplexity(), 1);
  // Unified routing in a causal LM (per-sequence top-c) is not causal.
  EXPECT_TRUE(result.non_causal_router_in_causal_model());
  EXPECT_GT(result.final().generation_perplexity(), 1);
  EXPECT_GT(result.final().teacher_forced_perplexity_same_subset(), 1);
  EXPECT_NE(result.final().generation_perplexity(),
            result.final().teacher_forced_perplexity_same_subset());
}

}  // namespace
}  // namespace moelab
