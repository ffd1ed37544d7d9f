#include "core/data/token_stream_dataset.h"

#include <ATen/ops/equal.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_split.h"
#include "core/data/corpus.h"
#include "core/data/example_order.h"
#include "core/data/random.h"
#include "core/testing/small_token_stream.h"

namespace moelab {
namespace {

using ::testing::ElementsAre;
using ::testing::ElementsAreArray;
using ::testing::HasSubstr;

// A tokenizer over a fixed space-separated string.
SplitTokenizer Words(std::string text) {
  return [text](TokenSink emit) {
    for (absl::string_view word : absl::StrSplit(text, ' ', absl::SkipEmpty())) {
      emit(word);
    }
    return absl::OkStatus();
  };
}

std::vector<int64_t> ToVector(const at::Tensor& t) {
  const at::Tensor c = t.contiguous();
  return std::vector<int64_t>(c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel());
}

// A corpus whose streams are 0..n-1 of each split, so ids are positions.
TokenizedCorpus PositionCorpus(int32_t train, int32_t valid, int32_t test) {
  TokenizedCorpus corpus;
  corpus.vocab_size = std::max({train, valid, test});
  for (auto [split, n] : {std::pair{Split::kTrain, train}, std::pair{Split::kValid, valid},
                          std::pair{Split::kTest, test}}) {
    corpus.split(split).resize(n);
    std::iota(corpus.split(split).begin(), corpus.split(split).end(), 0);
  }
  return corpus;
}

std::unique_ptr<TokenStreamDataset> MustCreate(TokenizedCorpus corpus, int64_t length) {
  auto dataset = TokenStreamDataset::Create(std::move(corpus), length, {"tr", "va", "te"});
  EXPECT_TRUE(dataset.ok()) << dataset.status();
  return *std::move(dataset);
}

TEST(DataRngTest, MatchesTheSplitMix64ReferenceOutput) {
  // First outputs of the reference splitmix64.c seeded with 0.
  DataRng rng(0);
  EXPECT_EQ(rng.Next(), 0xe220a8397b1dcdafull);
  EXPECT_EQ(rng.Next(), 0x6e789e6aa1b965f4ull);
}

TEST(DataRngTest, KeysAreOrderedAndBoundsHold) {
  EXPECT_NE(DataRng::FromKeys({1, 2}).Next(), DataRng::FromKeys({2, 1}).Next());
  EXPECT_EQ(DataRng::FromKeys({1, 2}).Next(), DataRng::FromKeys({1, 2}).Next());
  DataRng rng(7);
  std::vector<int> histogram(3, 0);
  for (int i = 0; i < 3000; ++i) {
    const uint64_t x = rng.Below(3);
    ASSERT_LT(x, 3u);
    ++histogram[x];
    const double u = rng.Uniform();
    ASSERT_GE(u, 0.0);
    ASSERT_LT(u, 1.0);
  }
  for (int count : histogram) EXPECT_NEAR(count, 1000, 150);
}

TEST(DataRngTest, RandomPermutationIsAPermutation) {
  DataRng rng(3);
  std::vector<int64_t> order = RandomPermutation(100, rng);
  std::vector<int64_t> sorted = order;
  std::sort(sorted.begin(), sorted.end());
  std::vector<int64_t> expected(100);
  std::iota(expected.begin(), expected.end(), 0);
  EXPECT_EQ(sorted, expected);
  EXPECT_NE(order, expected);
}

TEST(CorpusTest, TokenizeLinesAddsEosPerLineLikeTheWikiTextLoaders) {
  std::vector<std::string> tokens;
  const auto split_spaces = [](absl::string_view line, TokenSink emit) {
    for (absl::string_view w : absl::StrSplit(line, ' ', absl::SkipEmpty())) {
      emit(w);
    }
  };
  const auto collect = [&](absl::string_view token) { tokens.emplace_back(token); };
  TokenizeLines("x y\n \nz\n", split_spaces, collect);
  EXPECT_THAT(tokens, ElementsAre("x", "y", "<eos>", "<eos>", "z", "<eos>"));
  tokens.clear();
  TokenizeLines("x", split_spaces, collect);  // no final newline
  EXPECT_THAT(tokens, ElementsAre("x", "<eos>"));
  tokens.clear();
  TokenizeLines("", split_spaces, collect);
  EXPECT_TRUE(tokens.empty());
}

TEST(CorpusTest, IdsFollowTrainFrequencyThenBytesWithRareWordsUnk) {
  // Train counts: a 3, b 2, z 2, <eos> 2, c 1 (rare), <unk> 1.
  absl::StatusOr<TokenizedCorpus> corpus = BuildCorpus(
      Words("a b z a c <eos> z a b <unk> <eos>"), Words("b c d z <unk> <eos>"), Words("a a <eos>"),
      /*min_count=*/2);
  ASSERT_TRUE(corpus.ok()) << corpus.status();
  EXPECT_THAT(corpus->words, ElementsAre("<unk>", "<eos>", "a", "b", "z"));
  EXPECT_EQ(corpus->vocab_size, 5);
  EXPECT_EQ(corpus->unk_id, 0);
  EXPECT_THAT(corpus->split(Split::kTrain), ElementsAre(2, 3, 4, 2, 0, 1, 4, 2, 3, 0, 1));
  // c is rare in train, d absent from it: both <unk>.
  EXPECT_THAT(corpus->split(Split::kValid), ElementsAre(3, 0, 0, 4, 0, 1));
  EXPECT_THAT(corpus->split(Split::kTest), ElementsAre(2, 2, 1));
}

TEST(CorpusTest, TokenizerErrorsPropagate) {
  SplitTokenizer failing = [](TokenSink) { return absl::DataLossError("/x/valid.txt: broken"); };
  absl::StatusOr<TokenizedCorpus> corpus = BuildCorpus(Words("a <eos>"), failing, Words("a"), 1);
  ASSERT_FALSE(corpus.ok());
  EXPECT_THAT(corpus.status().message(), HasSubstr("/x/valid.txt"));
}

TEST(TokenStreamDatasetTest, ExamplesAreShiftedWindowsOfLengthL) {
  auto dataset = MustCreate(PositionCorpus(23, 23, 23), 4);
  EXPECT_EQ(dataset->info().sequence_length, 4);
  EXPECT_EQ(dataset->info().vocab_size, 23);
  EXPECT_EQ(dataset->NumExamples(Split::kValid), 5);  // (23 - 1) / 4
  Batch batch = dataset->GetExamples(Split::kValid, {3, 0});
  EXPECT_EQ(batch.inputs.sizes(), (std::vector<int64_t>{2, 4}));
  EXPECT_EQ(batch.inputs.scalar_type(), at::kLong);
  EXPECT_THAT(ToVector(batch.inputs), ElementsAre(12, 13, 14, 15, 0, 1, 2, 3));
  EXPECT_THAT(ToVector(batch.targets), ElementsAre(13, 14, 15, 16, 1, 2, 3, 4));
}

TEST(TokenStreamDatasetTest, EvaluationBatchesCoverEveryTokenOnceInOrder) {
  auto dataset = MustCreate(PositionCorpus(40, 23, 23), 4);
  const int64_t batches = dataset->NumBatches(Split::kTest, 2);
  ASSERT_EQ(batches, 3);  // 5 examples: 2 + 2 + 1, the last batch kept
  std::vector<int64_t> inputs, targets;
  for (int64_t i = 0; i < batches; ++i) {
    // Epoch and seed must not matter for evaluation.
    Batch batch = dataset->GetBatch(Split::kTest, 2, i, /*epoch=*/i + 5, 99);
    for (int64_t v : ToVector(batch.inputs)) inputs.push_back(v);
    for (int64_t v : ToVector(batch.targets)) targets.push_back(v);
  }
  std::vector<int64_t> expected_inputs(20), expected_targets(20);
  std::iota(expected_inputs.begin(), expected_inputs.end(), 0);
  std::iota(expected_targets.begin(), expected_targets.end(), 1);
  EXPECT_EQ(inputs, expected_inputs);
  EXPECT_EQ(targets, expected_targets);
}

TEST(TokenStreamDatasetTest, TrainingBatchesAreDeterministicShuffles) {
  // 50 training examples of length 2.
  auto dataset = MustCreate(PositionCorpus(101, 3, 3), 2);
  ASSERT_EQ(dataset->NumExamples(Split::kTrain), 50);
  EXPECT_EQ(dataset->NumBatches(Split::kTrain, 8), 6);  // remainder dropped

  const auto epoch_order = [&](int64_t epoch, uint64_t seed) {
    std::vector<int64_t> starts;
    for (int64_t i = 0; i < 6; ++i) {
      Batch batch = dataset->GetBatch(Split::kTrain, 8, i, epoch, seed);
      std::vector<int64_t> inputs = ToVector(batch.inputs);
      std::vector<int64_t> targets = ToVector(batch.targets);
      for (size_t b = 0; b < 8; ++b) {
        EXPECT_EQ(inputs[2 * b] % 2, 0);  // windows start at multiples of L
        EXPECT_EQ(targets[2 * b], inputs[2 * b] + 1);
        EXPECT_EQ(targets[2 * b + 1], inputs[2 * b + 1] + 1);
        starts.push_back(inputs[2 * b] / 2);
      }
    }
    return starts;
  };
  const std::vector<int64_t> first = epoch_order(0, 1);
  EXPECT_EQ(std::set<int64_t>(first.begin(), first.end()).size(), 48u);
  EXPECT_EQ(epoch_order(0, 1), first);  // deterministic
  EXPECT_NE(epoch_order(1, 1), first);  // reshuffled each epoch
  EXPECT_NE(epoch_order(0, 2), first);  // and per seed
  std::vector<int64_t> in_order(48);
  std::iota(in_order.begin(), in_order.end(), 0);
  EXPECT_NE(first, in_order);

  // Random access: a batch asked for alone equals the one inside the epoch.
  Batch alone = dataset->GetBatch(Split::kTrain, 8, 4, 0, 1);
  EXPECT_EQ(ToVector(alone.inputs)[0] / 2, first[32]);
}

TEST(TokenStreamDatasetTest, TrainSubsetIsEvenlySpacedAndTheSameForEverySeed) {
  // 50 training examples of length 2; a subset of 8: floor(i * 50 / 8).
  auto dataset = MustCreate(PositionCorpus(101, 3, 3), 2);
  ASSERT_TRUE(dataset->SetTrainSubset(8).ok());
  ASSERT_EQ(dataset->NumExamples(Split::kTrain), 8);
  EXPECT_EQ(dataset->NumBatches(Split::kTrain, 4), 2);
  const std::set<int64_t> subset = {0, 6, 12, 18, 25, 31, 37, 43};
  for (uint64_t seed : {1u, 2u}) {
    for (int64_t epoch : {0, 1}) {
      std::set<int64_t> seen;
      for (int64_t i = 0; i < 2; ++i) {
        std::vector<int64_t> inputs =
            ToVector(dataset->GetBatch(Split::kTrain, 4, i, epoch, seed).inputs);
        for (size_t b = 0; b < 4; ++b) seen.insert(inputs[2 * b] / 2);
      }
      // Each epoch is a whole pass over exactly the subset.
      EXPECT_EQ(seen, subset) << "seed " << seed << " epoch " << epoch;
    }
  }
  // GetExamples on the training split addresses subset positions.
  EXPECT_EQ(ToVector(dataset->GetExamples(Split::kTrain, {4}).inputs)[0], 2 * 25);
  // Evaluation splits are untouched.
  EXPECT_EQ(dataset->NumExamples(Split::kValid), 1);
  // 0 restores the whole split.
  ASSERT_TRUE(dataset->SetTrainSubset(0).ok());
  EXPECT_EQ(dataset->NumExamples(Split::kTrain), 50);
}

TEST(TokenStreamDatasetTest, TrainSubsetOutOfRangeNamesTheFieldAndSource) {
  auto dataset = MustCreate(PositionCorpus(101, 3, 3), 2);
  absl::Status too_many = dataset->SetTrainSubset(51);
  EXPECT_EQ(too_many.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(too_many.message(), HasSubstr("dataset.train_subset_examples: 51 exceeds the 50"));
  EXPECT_THAT(too_many.message(), HasSubstr("tr"));
  EXPECT_FALSE(dataset->SetTrainSubset(-1).ok());
  EXPECT_EQ(dataset->NumExamples(Split::kTrain), 50);
}

TEST(TokenStreamDatasetTest, UnigramBaselineOfASubsetCountsOnlyItsWindows) {
  // L = 2: examples 0 = {2, 3, 2}, 1 = {2, 0, 2}, 2 = {2, 3, 1}; a subset of 1
  // is example 0.
  std::unique_ptr<TokenStreamDataset> dataset = SmallTokenStream();
  ASSERT_TRUE(dataset->SetTrainSubset(1).ok());
  // Counts 2:2 3:1 (N = 3, V = 4): p = (c + 1) / 7; test targets 2 2.
  EXPECT_NEAR(dataset->UnigramPerplexity(Split::kTest), 7.0 / 3, 1e-12);
}

TEST(TokenStreamDatasetTest, UnigramPerplexityUsesAddOneTrainCounts) {
  std::unique_ptr<TokenStreamDataset> dataset = SmallTokenStream();  // valid targets 0 0 1 2
  // Train counts 0:1 1:1 2:3 3:2, N = 7, V = 4: p = (c + 1) / 11.
  const double expected_valid =
      std::exp(-(2 * std::log(2.0 / 11) + std::log(2.0 / 11) + std::log(4.0 / 11)) / 4);
  EXPECT_NEAR(dataset->UnigramPerplexity(Split::kValid), expected_valid, 1e-12);
  EXPECT_NEAR(dataset->UnigramPerplexity(Split::kTest), 11.0 / 4, 1e-12);

  absl::StatusOr<double> through_base =
      UnigramPerplexity(static_cast<const Dataset&>(*dataset), Split::kValid);
  ASSERT_TRUE(through_base.ok());
  EXPECT_DOUBLE_EQ(*through_base, expected_valid);
}

class NotAStream : public Dataset {
 public:
  const DatasetInfo& info() const override { return info_; }
  int64_t NumExamples(Split) const override { return 0; }
  Batch GetBatch(Split, int64_t, int64_t, int64_t, uint64_t) const override { return {}; }
  Batch GetExamples(Split, const std::vector<int64_t>&) const override { return {}; }

 private:
  DatasetInfo info_;
};

TEST(TokenStreamDatasetTest, UnigramPerplexityOfOtherDatasetsIsAnError) {
  NotAStream other;
  EXPECT_FALSE(UnigramPerplexity(other, Split::kValid).ok());
}

TEST(DatasetTest, PluginsWithoutSubsetsRefuseOneByName) {
  NotAStream other;
  EXPECT_TRUE(other.SetTrainSubset(0).ok());
  absl::Status refused = other.SetTrainSubset(3);
  EXPECT_EQ(refused.code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(refused.message(), HasSubstr("dataset.train_subset_examples"));
}

TEST(TokenStreamDatasetTest, SplitTooShortForOneSequenceNamesItsSource) {
  auto dataset =
      TokenStreamDataset::Create(PositionCorpus(40, 4, 40), 4, {"tr", "the valid file", "te"});
  ASSERT_FALSE(dataset.ok());
  EXPECT_THAT(dataset.status().message(), HasSubstr("the valid file"));
  EXPECT_THAT(dataset.status().message(), HasSubstr("4 tokens"));
  EXPECT_THAT(dataset.status().message(), HasSubstr("sequence_length + 1 = 5"));
}

TEST(TokenStreamDatasetTest, OutOfRangeRequestsAreProgrammerErrors) {
  auto dataset = MustCreate(PositionCorpus(23, 23, 23), 4);
  EXPECT_THROW(dataset->GetBatch(Split::kTrain, 2, 2, 0, 0), c10::Error);
  EXPECT_THROW(dataset->GetBatch(Split::kValid, 2, 3, 0, 0), c10::Error);
  EXPECT_THROW(dataset->GetExamples(Split::kValid, {5}), c10::Error);
}

}  // namespace
}  // namespace moelab
