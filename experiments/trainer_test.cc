// End-to-end trainer behaviour on a tiny real spec: determinism,
// kill-and-resume, training-free evaluation, outputs on disk.

#include "core/trainer.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <optional>
#include <string>

#include "absl/strings/str_cat.h"
#include "core/atomic_file.h"
#include "core/provenance.h"
#include "core/routing_metrics.h"
#include "core/spec.h"
#include "experiments/testing/tiny_run.h"
#include "google/protobuf/text_format.h"

namespace moelab {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

std::string TempDir(const std::string& name) {
  const std::string dir = absl::StrCat(::testing::TempDir(), "/", name);
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

ExperimentSpec Tiny(const std::string& extra = "") { return TinyRunSpec(3, extra); }

RunResult RunTiny(const ExperimentSpec& spec, const std::string& dir, bool resume = false,
                  int stop_after = 0, const std::optional<SourceRevision>& source = std::nullopt) {
  RunOptions options;
  options.source = source;
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
      EXPECT_EQ(a.epochs(e).layers(l).values().at("gate_entropy"),
                b.epochs(e).layers(l).values().at("gate_entropy"));
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

TEST(TrainerTest, ALaterRunRemovesTemporariesOfAKilledWriter) {
  const std::string dir = TempDir("temporaries");
  RunTiny(Tiny(), dir, /*resume=*/false, /*stop_after=*/1);
  // A checkpoint write killed mid-way by a process that no longer exists
  // (pid 2^22 + 1 is above the largest pid Linux allows), and one of a live
  // process (our parent), which must stay.
  const std::string dead = dir + "/tiny/checkpoint.pt.tmp.4194305";
  const std::string live = absl::StrCat(dir, "/tiny/checkpoint.pt.tmp.", getppid());
  ASSERT_TRUE(WriteFileAtomically(dead, "partial").ok());
  ASSERT_TRUE(WriteFileAtomically(live, "partial").ok());
  RunTiny(Tiny(), dir, /*resume=*/true);
  EXPECT_FALSE(fs::exists(dead));
  EXPECT_TRUE(fs::exists(live));
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
  // It stopped in its first epoch: there is no earlier checkpoint to offer.
  EXPECT_THAT(result.status().message(), HasSubstr("no checkpoint was written"));
  absl::StatusOr<std::string> json = ReadFile(dir + "/tiny/result.json");
  ASSERT_TRUE(json.ok());
  EXPECT_THAT(*json, HasSubstr("STOPPED_NONFINITE_LOSS"));
  EXPECT_THAT(*json, HasSubstr("\"status_reason\": \"training stopped: the loss became"));
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
  EXPECT_EQ(trained.final().leak_nll_gap(), 0);
  EXPECT_EQ(trained.final().leak_nll_gap_ci95(), 0);
  EXPECT_EQ(trained.final().leak_sequences(), 32);  // the default, of 96
  // The final evaluation's routing, whole validation split, every MoE layer.
  ASSERT_EQ(trained.final().layers_size(), trained.epochs(0).layers_size());
  EXPECT_GT(trained.final().layers(0).values().at("experts_per_token"), 0);
  EXPECT_FALSE(trained.final().layers(0).values().count("aggregation_self_weight"));
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
  // The leak, per sequence on equally long sequences, averages to the log
  // ratio of the two perplexities; its interval is over 32 sequences.
  EXPECT_EQ(result.final().leak_sequences(), 32);
  EXPECT_NEAR(result.final().leak_nll_gap(),
              std::log(result.final().generation_perplexity() /
                       result.final().teacher_forced_perplexity_same_subset()),
              1e-9);
  EXPECT_GT(result.final().leak_nll_gap_ci95(), 0);
  EXPECT_TRUE(std::isfinite(result.final().leak_nll_gap_ci95()));
  ASSERT_EQ(result.final().layers_size(), trained.final().layers_size());
}

TEST(TrainerTest, IdentityAggregationIsFlaggedNotSilent) {
  // Raw dot products at a temperature far below the differences between
  // u_i.u_i and u_i.u_j: each row of S is one-hot on i, p = r. (The paper's
  // literal tau = 1 does this on trained D = 128 states; the tiny model's
  // barely trained states are too alike for tau = 1 to show it.)
  const std::string dir = TempDir("identity");
  ExperimentSpec literal = Tiny();
  literal.mutable_router()->Clear();
  ASSERT_TRUE(google::protobuf::TextFormat::ParseFromString(
      R"pb(name: "similarity_aware"
           top_k: 2
           similarity_aware { scale: RAW_DOT_PRODUCT temperature: 0.001 })pb",
      literal.mutable_router()));
  literal.mutable_training()->set_epochs(1);
  ASSERT_TRUE(ResolveSpec(&literal).ok());
  ASSERT_TRUE(ValidateSpec(literal).ok()) << ValidateSpec(literal);
  const RunResult flagged = RunTiny(literal, dir);
  ASSERT_GT(flagged.final().layers_size(), 0);
  for (const LayerRoutingMetrics& layer : flagged.final().layers()) {
    EXPECT_TRUE(layer.values().count("aggregation_self_weight"));
    EXPECT_GT(layer.values().at("aggregation_self_weight"), kIdentityAggregationSelfWeight);
    EXPECT_NEAR(layer.values().at("aggregation_effective_neighbours"), 1, 0.1);
  }
  EXPECT_EQ(flagged.identity_aggregation_layers_size(), flagged.final().layers_size());
  bool warned = false;
  for (const std::string& w : flagged.warnings()) {
    warned |= w.find("aggregates effectively nothing") != std::string::npos;
  }
  EXPECT_TRUE(warned);
  absl::StatusOr<std::string> csv = ReadFile(dir + "/tiny/metrics.csv");
  ASSERT_TRUE(csv.ok());
  EXPECT_THAT(*csv, HasSubstr(",l0_aggregation_effective_neighbours,l0_aggregation_self_weight,"));

  // A temperature far above u.u spreads S over the visible tokens.
  ExperimentSpec spread = literal;
  spread.mutable_router()->mutable_similarity_aware()->set_temperature(1e4);
  const RunResult mixed = RunTiny(spread, TempDir("spread"));
  EXPECT_EQ(mixed.identity_aggregation_layers_size(), 0);
  for (const LayerRoutingMetrics& layer : mixed.final().layers()) {
    EXPECT_LT(layer.values().at("aggregation_self_weight"), 0.5);
    EXPECT_GT(layer.values().at("aggregation_effective_neighbours"), 2);
  }
}

TEST(TrainerTest, AttentionAwareHeadChangeSurvivesAResume) {
  ExperimentSpec spec = Tiny();
  spec.mutable_router()->Clear();
  spec.mutable_router()->set_name("attention_aware");
  spec.mutable_router()->set_top_k(2);
  ASSERT_TRUE(ResolveSpec(&spec).ok());
  ASSERT_TRUE(ValidateSpec(spec).ok()) << ValidateSpec(spec);
  const RunResult straight = RunTiny(spec, TempDir("attention_straight"));
  ASSERT_EQ(straight.epochs_size(), 3);
  for (int e = 0; e < 3; ++e) {
    for (const LayerRoutingMetrics& layer : straight.epochs(e).layers()) {
      EXPECT_TRUE(layer.values().count("aggregation_self_weight")) << "epoch " << e;
      EXPECT_GT(layer.values().at("aggregation_effective_neighbours"), 1) << "epoch " << e;
      // No previous epoch to compare the first one with.
      EXPECT_EQ(layer.has_head_change(), e > 0) << "epoch " << e;
      EXPECT_GE(layer.head_change(), 0);
      EXPECT_LE(layer.head_change(), 1);
    }
  }
  // The probe's heads travel in the checkpoint: a resumed run reports the
  // same head change as an uninterrupted one.
  const std::string dir = TempDir("attention_resumed");
  RunTiny(spec, dir, /*resume=*/false, /*stop_after=*/1);
  const RunResult resumed = RunTiny(spec, dir, /*resume=*/true);
  ExpectSameMetrics(straight, resumed);
  for (int e = 1; e < 3; ++e) {
    for (int l = 0; l < straight.epochs(e).layers_size(); ++l) {
      EXPECT_TRUE(resumed.epochs(e).layers(l).has_head_change());
      EXPECT_EQ(resumed.epochs(e).layers(l).head_change(),
                straight.epochs(e).layers(l).head_change());
    }
  }
}

TEST(TrainerTest, FlagIdentityAggregationOnHandMadeLayers) {
  RunResult result;
  result.mutable_spec()->mutable_router()->set_name("similarity_aware");
  LayerRoutingMetrics* spread = result.mutable_final()->add_layers();
  spread->set_layer(0);
  (*spread->mutable_values())["aggregation_self_weight"] = 0.6;
  LayerRoutingMetrics* identity = result.mutable_final()->add_layers();
  identity->set_layer(1);
  (*identity->mutable_values())["aggregation_self_weight"] = 0.995;
  LayerRoutingMetrics* plain = result.mutable_final()->add_layers();
  plain->set_layer(2);  // no aggregation at all: never flagged
  const std::string warning = FlagIdentityAggregation(&result);
  EXPECT_THAT(warning, HasSubstr("MoE layer 1: mean self-weight 0.99500"));
  ASSERT_EQ(result.identity_aggregation_layers_size(), 1);
  EXPECT_EQ(result.identity_aggregation_layers(0), 1);
  ASSERT_EQ(result.warnings_size(), 1);
  (*identity->mutable_values())["aggregation_self_weight"] = 0.9;
  result.clear_warnings();
  EXPECT_EQ(FlagIdentityAggregation(&result), "");
  EXPECT_EQ(result.identity_aggregation_layers_size(), 0);
}

SourceRevision Revision(char digit) {
  SourceRevision source;
  source.set_commit(std::string(40, digit));
  source.set_revision(RevisionLabel(source));
  return source;
}

TEST(TrainerTest, RecordsTheSourceRevisionAndAResumeAcrossRevisions) {
  // Without an override the run records this process's revision.
  const RunResult plain = RunTiny(Tiny(), TempDir("provenance_plain"));
  EXPECT_EQ(plain.source().revision(), CurrentSourceRevision().revision());

  const std::string dir = TempDir("provenance");
  const RunResult partial = RunTiny(Tiny(), dir, /*resume=*/false, /*stop_after=*/1, Revision('a'));
  EXPECT_EQ(partial.source().revision(), "aaaaaaaaaaaa");
  // Resumed by other code, twice: the run mixes two revisions and says so
  // once, and its label matches neither.
  const RunResult second = RunTiny(Tiny(), dir, /*resume=*/true, /*stop_after=*/1, Revision('b'));
  EXPECT_EQ(second.source().revision(), "aaaaaaaaaaaa,bbbbbbbbbbbb");
  const RunResult resumed = RunTiny(Tiny(), dir, /*resume=*/true, 0, Revision('b'));
  EXPECT_EQ(resumed.status(), "COMPLETED");
  EXPECT_EQ(resumed.source().revision(), "aaaaaaaaaaaa,bbbbbbbbbbbb");
  int warnings = 0;
  for (const std::string& w : resumed.warnings()) {
    if (w.find("resumed with different source code") != std::string::npos) {
      EXPECT_THAT(w, HasSubstr("epochs 1-1 ran at revision aaaaaaaaaaaa, the rest at "
                               "bbbbbbbbbbbb"));
      ++warnings;
    }
  }
  EXPECT_EQ(warnings, 1);
  // A third revision extends the label.
  const std::string third = TempDir("provenance_third");
  RunTiny(Tiny(), third, false, 1, Revision('a'));
  RunTiny(Tiny(), third, true, 1, Revision('b'));
  EXPECT_EQ(RunTiny(Tiny(), third, true, 0, Revision('c')).source().revision(),
            "aaaaaaaaaaaa,bbbbbbbbbbbb,cccccccccccc");
}

}  // namespace
}  // namespace moelab
