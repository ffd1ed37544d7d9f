#include "core/run_outputs.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "core/task.h"
#include "google/protobuf/util/json_util.h"
#include "google/protobuf/util/message_differencer.h"

namespace moelab {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

std::unique_ptr<Task> MustCreateTask(const std::string& name, int64_t sequence_length = 0) {
  DatasetInfo info;
  info.task = name;
  info.sequence_length = sequence_length;
  absl::StatusOr<std::unique_ptr<Task>> task = CreateTask(info);
  EXPECT_TRUE(task.ok()) << task.status();
  return *std::move(task);
}

// Two epochs of a run with one MoE layer: the first without fluctuation
// (nothing to compare with) or aggregation, the second with both.
RunResult TwoEpochs() {
  RunResult result;
  result.mutable_spec()->set_name("two_epochs");
  result.mutable_spec()->mutable_router()->set_name("similarity_aware");
  for (int e = 1; e <= 2; ++e) {
    EpochMetrics* epoch = result.add_epochs();
    epoch->set_epoch(e);
    epoch->set_step(10 * e);
    epoch->set_train_loss(5.5 - e);
    epoch->set_valid_loss(std::log(200.0 / e));
    epoch->set_valid_perplexity(200.0 / e);
    epoch->set_examples_per_s(100);
    LayerRoutingMetrics* layer = epoch->add_layers();
    (*layer->mutable_values())["gate_entropy"] = 1.5;
    if (e == 2) {
      layer->set_has_fluctuation(true);
      layer->set_fluctuation_top1(0.25);
      layer->set_fluctuation_topk(0.5);
      (*layer->mutable_values())["aggregation_self_weight"] = 0.4;
      (*layer->mutable_values())["aggregation_effective_neighbours"] = 3;
    }
  }
  return result;
}

TEST(RunOutputsTest, MetricsCsvHasAColumnPerLayerMetricAndEmptyCellsForAbsentOnes) {
  const std::string csv = MetricsCsv(TwoEpochs());
  const std::vector<std::string> lines = absl::StrSplit(csv, '\n', absl::SkipEmpty());
  ASSERT_EQ(lines.size(), 3u);
  const std::vector<std::string> header = absl::StrSplit(lines[0], ',');
  const std::vector<std::string> first = absl::StrSplit(lines[1], ',');
  const std::vector<std::string> second = absl::StrSplit(lines[2], ',');
  // 13 run columns; per layer 6 built-in ones and the 3 registered metrics
  // the run has, in name order.
  ASSERT_EQ(header.size(), 13u + 6u + 3u);
  ASSERT_EQ(first.size(), header.size());
  ASSERT_EQ(second.size(), header.size());
  EXPECT_EQ(header[13], "l0_fluct_top1");
  EXPECT_EQ(first[13], "") << "epoch 1 has no fluctuation";
  EXPECT_EQ(second[13], "0.25");
  EXPECT_EQ(header[19], "l0_aggregation_effective_neighbours");
  EXPECT_EQ(header[20], "l0_aggregation_self_weight");
  EXPECT_EQ(first[20], "") << "epoch 1 has no aggregation";
  EXPECT_EQ(second[20], "0.4");
  EXPECT_EQ(header[21], "l0_gate_entropy");
  EXPECT_EQ(first[21], "1.5");
  EXPECT_EQ(header[5], "valid_perplexity");
  EXPECT_EQ(second[5], "100");
}

TEST(RunOutputsTest, EpochLinesNameTheTasksFigureAndUnit) {
  const RunResult result = TwoEpochs();
  EXPECT_EQ(FormatEpochLine(result.epochs(1), *MustCreateTask("language_modeling", 64)),
            "epoch 2: train loss 3.5000  valid ppl 100.0000  fluctuation 25.0%  6400 tokens/s\n");
  EXPECT_EQ(FormatEpochLine(result.epochs(0), *MustCreateTask("image_classification")),
            "epoch 1: train loss 4.5000  valid acc 0.0000  fluctuation -  100 images/s\n");
}

TEST(RunOutputsTest, SummaryShowsEveryEpochAndTheTasksFinalLine) {
  RunResult result = TwoEpochs();
  result.mutable_final()->set_valid_perplexity(99.5);
  result.mutable_final()->set_test_perplexity(120.25);
  result.mutable_final()->set_unigram_perplexity(800);
  const std::string summary = FormatRunSummary(result, *MustCreateTask("language_modeling", 8));
  EXPECT_THAT(summary, HasSubstr("== two_epochs  (router similarity_aware"));
  EXPECT_THAT(summary, HasSubstr("valid ppl"));
  EXPECT_THAT(summary, HasSubstr("tokens/s"));
  EXPECT_THAT(summary, HasSubstr("    1      4.5000    200.0000             -"));
  EXPECT_THAT(summary, HasSubstr("    2      3.5000    100.0000         25.0%"));
  EXPECT_THAT(summary,
              HasSubstr("valid perplexity 99.50  test perplexity 120.25  (unigram baseline "
                        "800.00)\n"));
  EXPECT_THAT(summary, Not(HasSubstr("NON-CAUSAL")));

  result.set_non_causal_router_in_causal_model(true);
  result.mutable_final()->set_generation_perplexity(130);
  result.mutable_final()->set_teacher_forced_perplexity_same_subset(110);
  result.mutable_final()->set_leak_sequences(4);
  EXPECT_THAT(FormatRunSummary(result, *MustCreateTask("language_modeling", 8)),
              HasSubstr("NON-CAUSAL ROUTER: generation-time perplexity 130.00 vs teacher-forced "
                        "110.00 on the same 4 sequences"));
}

TEST(RunOutputsTest, AnImageSummaryReportsAccuracyAndImagesPerSecond) {
  RunResult result = TwoEpochs();
  result.mutable_final()->set_valid_accuracy(0.75);
  CorruptedMetrics* corrupted = result.mutable_final()->add_corrupted();
  corrupted->mutable_corruption()->set_kind(GAUSSIAN_NOISE);
  corrupted->mutable_corruption()->set_severity(2);
  corrupted->set_accuracy(0.5);
  corrupted->set_expert_change(0.25);
  const std::string summary = FormatRunSummary(result, *MustCreateTask("image_classification"));
  EXPECT_THAT(summary, HasSubstr("valid acc"));
  EXPECT_THAT(summary, HasSubstr("images/s"));
  EXPECT_THAT(summary, HasSubstr("valid accuracy 75.00%\n"));
  EXPECT_THAT(summary, HasSubstr("under GAUSSIAN_NOISE severity 2: accuracy 0.5000  (experts "
                                 "changed for 25.0% of tokens)"));
  EXPECT_THAT(summary, Not(HasSubstr("perplexity")));
}

TEST(RunOutputsTest, WritesResultJsonThatReadsBackAndMetricsCsv) {
  const std::string dir =
      std::string(std::getenv("TEST_TMPDIR") ? std::getenv("TEST_TMPDIR") : "/tmp") +
      "/run_outputs_" + std::to_string(getpid());
  std::filesystem::create_directories(dir);
  const RunResult result = TwoEpochs();
  ASSERT_TRUE(WriteOutputs(dir, result).ok());
  std::stringstream json, csv;
  json << std::ifstream(dir + "/result.json").rdbuf();
  csv << std::ifstream(dir + "/metrics.csv").rdbuf();
  absl::StatusOr<RunResult> read = ParseRunResultJson(json.str(), dir + "/result.json");
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(*read, result));
  EXPECT_EQ(csv.str(), MetricsCsv(result));
  EXPECT_THAT(json.str(), HasSubstr("\"valid_perplexity\": 100"));
  EXPECT_FALSE(WriteOutputs(dir + "/no/such/dir", result).ok());
}

// A result.json written before entropies, experts per token, drops and the
// aggregation diagnostics moved into `values` (every field printed, as
// JsonOf always did).
TEST(RunOutputsTest, AResultWrittenBeforeTheMetricsMovedReadsWithThemInValues) {
  auto old_layer = [](const char* aggregated_entropy, const char* has_aggregation,
                      const char* self_weight, const char* neighbours) {
    return absl::StrCat(
        R"({"layer": 1, "gate_entropy": 1.25, "aggregated_entropy": )", aggregated_entropy,
        R"(, "dropped_fraction": 0.125, "experts_per_token": 2, )", R"("has_aggregation": )",
        has_aggregation, R"(, "aggregation_self_weight": )", self_weight,
        R"(, "aggregation_effective_neighbours": )", neighbours,
        R"(, "load_cv": 0.5, "values": {"gate_margin": 0.75}})");
  };
  const std::string json =
      absl::StrCat(R"({"status": "COMPLETED", "epochs": [{"epoch": 1, "step": "10", "layers": [)",
                   old_layer("1.0625", "true", "0.375", "\"NaN\""),
                   R"(]}], "final": {"experts_per_token": 2, "layers": [)",
                   old_layer("0", "false", "0", "0"), "]}}");
  absl::StatusOr<RunResult> read = ParseRunResultJson(json, "old/result.json");
  ASSERT_TRUE(read.ok()) << read.status();
  const LayerRoutingMetrics& aggregating = read->epochs(0).layers(0);
  EXPECT_EQ(aggregating.layer(), 1);
  EXPECT_EQ(aggregating.load_cv(), 0.5);
  EXPECT_EQ(aggregating.values().at("gate_entropy"), 1.25);
  EXPECT_EQ(aggregating.values().at("aggregated_entropy"), 1.0625);
  EXPECT_EQ(aggregating.values().at("dropped_fraction"), 0.125);
  EXPECT_EQ(aggregating.values().at("experts_per_token"), 2);
  EXPECT_EQ(aggregating.values().at("aggregation_self_weight"), 0.375);
  // A non-finite value moves as it was written.
  EXPECT_TRUE(std::isnan(aggregating.values().at("aggregation_effective_neighbours")));
  EXPECT_EQ(aggregating.values().at("gate_margin"), 0.75);
  // Without aggregation the old fields held zeros that meant "not measured".
  const LayerRoutingMetrics& plain = read->final().layers(0);
  EXPECT_EQ(plain.values().at("gate_entropy"), 1.25);
  EXPECT_EQ(plain.values().count("aggregated_entropy"), 0u);
  EXPECT_EQ(plain.values().count("aggregation_self_weight"), 0u);
  EXPECT_EQ(plain.values().count("aggregation_effective_neighbours"), 0u);
  EXPECT_EQ(read->final().experts_per_token(), 2);
}

TEST(RunOutputsTest, AFileThatIsNotAResultIsRefusedNamingIt) {
  absl::StatusOr<RunResult> read = ParseRunResultJson("{\"epochs\": [", "runs/x/result.json");
  EXPECT_EQ(read.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(read.status().message(), HasSubstr("runs/x/result.json"));
  read = ParseRunResultJson(R"({"no_such_field": 1})", "runs/y/result.json");
  EXPECT_THAT(read.status().message(), HasSubstr("runs/y/result.json: not a moelab result"));
  EXPECT_TRUE(ParseRunResultJson(R"({"no_such_field": 1})", "runs/y/result.json",
                                 /*ignore_unknown_fields=*/true)
                  .ok());
}

}  // namespace
}  // namespace moelab
