#include "core/tasks/language_modeling.h"

#include <gtest/gtest.h>

#include <cmath>
#include <memory>

#include "core/data/token_stream_dataset.h"
#include "core/task.h"
#include "core/testing/bigram_model.h"
#include "core/testing/small_token_stream.h"

namespace moelab {
namespace {

FinalMetrics EvaluateFinalWith(Model& model, const Dataset& data, bool leaks_future,
                               int generation_eval_sequences = 10) {  // > the 2 there are
  EvaluationSpec evaluation;
  evaluation.set_generation_eval_sequences(generation_eval_sequences);
  LanguageModeling task(data.info());
  FinalMetrics final_metrics;
  const TaskEvaluationContext context{.model = model,
                                      .data = data,
                                      .evaluation = evaluation,
                                      .batch_size = 1,
                                      .leaks_future = leaks_future};
  EXPECT_TRUE(task.EvaluateFinal(context, &final_metrics).ok());
  return final_metrics;
}

TEST(LanguageModelingTest, IsRegisteredUnderItsName) {
  DatasetInfo info;
  info.task = kLanguageModelingTask;
  info.sequence_length = 64;
  absl::StatusOr<std::unique_ptr<Task>> task = CreateTask(info);
  ASSERT_TRUE(task.ok()) << task.status();
  EXPECT_EQ((*task)->Unit().per_example, 64);
  EXPECT_EQ((*task)->Unit().name, "tokens");
}

TEST(LanguageModelingTest, PerplexityIsTheExponentOfTheLoss) {
  DatasetInfo info;
  info.sequence_length = 64;
  LanguageModeling task(info);
  EpochMetrics epoch;
  epoch.set_valid_loss(std::log(100.0));
  epoch.set_examples_per_s(10);
  task.CompleteEpoch(&epoch);
  EXPECT_NEAR(epoch.valid_perplexity(), 100, 1e-9);
  EXPECT_DOUBLE_EQ(epoch.tokens_per_s(), 640);
  EXPECT_EQ(task.ValidHeadline(epoch).name, "ppl");

  FinalMetrics final_metrics;
  final_metrics.set_valid_loss(std::log(50.0));
  EvaluationSpec evaluation;
  task.CompleteFinal(evaluation, &final_metrics);
  EXPECT_NEAR(final_metrics.valid_perplexity(), 50, 1e-9);
  EXPECT_EQ(final_metrics.test_perplexity(), 0) << "no test evaluation, no test perplexity";
  evaluation.set_test_at_end(true);
  final_metrics.set_test_loss(std::log(60.0));
  task.CompleteFinal(evaluation, &final_metrics);
  EXPECT_NEAR(final_metrics.test_perplexity(), 60, 1e-9);

  CorruptedMetrics corrupted;
  corrupted.set_loss(std::log(70.0));
  task.CompleteCorrupted(&corrupted);
  EXPECT_NEAR(corrupted.perplexity(), 70, 1e-9);
}

TEST(LanguageModelingTest, UnigramBaselineIsTheTokenStreamsOwn) {
  std::unique_ptr<TokenStreamDataset> data = SmallTokenStream();
  BigramModel model;
  const FinalMetrics f = EvaluateFinalWith(model, *data, /*leaks_future=*/false);
  // Worked out by hand in token_stream_dataset_test.
  EXPECT_GT(f.unigram_perplexity(), 1);
  EXPECT_DOUBLE_EQ(f.unigram_perplexity(), data->UnigramPerplexity(Split::kValid));
}

TEST(LanguageModelingTest, GenerationTimeEvaluationOnlyForCausalModelsThatAskForIt) {
  std::unique_ptr<TokenStreamDataset> data = SmallTokenStream();
  BigramModel not_causal(/*sees_the_end=*/true, /*causal=*/false);
  FinalMetrics f = EvaluateFinalWith(not_causal, *data, /*leaks_future=*/false);
  EXPECT_EQ(f.generation_perplexity(), 0);
  EXPECT_EQ(f.leak_sequences(), 0);
  BigramModel causal;
  f = EvaluateFinalWith(causal, *data, /*leaks_future=*/true, /*generation_eval_sequences=*/0);
  EXPECT_EQ(f.generation_perplexity(), 0);
  EXPECT_EQ(f.leak_sequences(), 0);
}

TEST(LanguageModelingTest, ACausalModelsGenerationPerplexityIsItsTeacherForcedOne) {
  std::unique_ptr<TokenStreamDataset> data = SmallTokenStream();
  BigramModel model(/*sees_the_end=*/false);
  const FinalMetrics f = EvaluateFinalWith(model, *data, /*leaks_future=*/false);
  // (3 -> 0) 0.7, (0 -> 0) 0.1, (0 -> 1) 0.2, (1 -> 2) 0.4.
  const double bigram =
      std::exp(-(std::log(0.7) + std::log(0.1) + std::log(0.2) + std::log(0.4)) / 4);
  EXPECT_NEAR(f.teacher_forced_perplexity_same_subset(), bigram, 1e-5);
  EXPECT_NEAR(f.generation_perplexity(), bigram, 1e-5);
  EXPECT_EQ(f.leak_sequences(), 2);
  EXPECT_EQ(f.leak_nll_gap_ci95(), 0);
}

TEST(LanguageModelingTest, AFutureSeeingModelIsScoredWithPrefixesOnly) {
  std::unique_ptr<TokenStreamDataset> data = SmallTokenStream();
  BigramModel model(/*sees_the_end=*/true);
  const FinalMetrics f = EvaluateFinalWith(model, *data, /*leaks_future=*/true);
  // Teacher-forced, every position sees its sequence's last input: {3,0}
  // is scored with P[0] (targets 0 0: 0.1, 0.1), {0,1} with P[1] (targets
  // 1 2: 0.1, 0.4).
  const double teacher = std::exp(-(3 * std::log(0.1) + std::log(0.4)) / 4);
  // With only its prefix, a position's last input is its own: the bigram.
  const double generation =
      std::exp(-(std::log(0.7) + std::log(0.1) + std::log(0.2) + std::log(0.4)) / 4);
  EXPECT_NEAR(f.teacher_forced_perplexity_same_subset(), teacher, 1e-5);
  EXPECT_NEAR(f.generation_perplexity(), generation, 1e-5);
  // Per sequence, generation minus teacher-forced mean NLL:
  // -(ln 0.7 - ln 0.1) / 2 and -(ln 0.2 - ln 0.1) / 2.
  const double gap0 = -std::log(7.0) / 2, gap1 = -std::log(2.0) / 2;
  EXPECT_NEAR(f.leak_nll_gap(), (gap0 + gap1) / 2, 1e-5);
  EXPECT_GT(f.leak_nll_gap_ci95(), 0);
  EXPECT_EQ(f.leak_sequences(), 2);
}

}  // namespace
}  // namespace moelab
