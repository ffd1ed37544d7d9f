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
    layer->set_gate_entropy(1.5);
    if (e == 2) {
      layer->set_has_fluctuation(true);
      layer->set_fluctuation_top1(0.25);
      layer->set_fluctuation_topk(0.5);
      layer->set_has_aggregation(true);
      layer->set_aggregation_self_weight(0.4);
      layer->set_aggregation_effective_neighbours(3);
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
  ASSERT_EQ(header.size(), 13u + 12u);
  ASSERT_EQ(first.size(), header.size());
  ASSERT_EQ(second.size(), header.size());
  EXPECT_EQ(header[13], "l0_fluct_top1");
  EXPECT_EQ(first[13], "") << "epoch 1 has no fluctuation";
  EXPECT_EQ(second[13], "0.25");
  EXPECT_EQ(header[22], "l0_self_weight");
  EXPECT_EQ(first[22], "");
  EXPECT_EQ(second[22], "0.4");
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
  RunResult read;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(json.str(), &read).ok());
  EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(read, result));
  EXPECT_EQ(csv.str(), MetricsCsv(result));
  EXPECT_THAT(json.str(), HasSubstr("\"valid_perplexity\": 100"));
  EXPECT_FALSE(WriteOutputs(dir + "/no/such/dir", result).ok());
}

}  // namespace
}  // namespace moelab
