#include "core/data/synthetic_lm.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <vector>

#include "core/data/token_stream_dataset.h"
#include "core/dataset.h"

namespace moelab {
namespace {

using ::testing::HasSubstr;

DatasetSpec Spec(int vocab, int length, int sequences) {
  DatasetSpec spec;
  spec.set_name("synthetic_lm");
  SyntheticLmOptions* options = spec.mutable_synthetic_lm();
  options->set_vocab_size(vocab);
  options->set_sequence_length(length);
  options->set_num_sequences(sequences);
  return spec;
}

TEST(SyntheticLmTest, ResolveFillsDefaults) {
  const auto* entry = *DatasetRegistry().Find("synthetic_lm");
  DatasetSpec spec;
  spec.set_name("synthetic_lm");
  entry->resolve(&spec);
  EXPECT_EQ(spec.synthetic_lm().vocab_size(), 10000);
  EXPECT_EQ(spec.synthetic_lm().sequence_length(), 128);
  EXPECT_EQ(spec.synthetic_lm().num_sequences(), 1024);
  EXPECT_TRUE(entry->validate(spec).ok());
}

TEST(SyntheticLmTest, ValidateNamesTheField) {
  const auto* entry = *DatasetRegistry().Find("synthetic_lm");
  EXPECT_THAT(entry->validate(Spec(1, 8, 4)).message(),
              HasSubstr("dataset.synthetic_lm.vocab_size: must be >= 2, got 1"));
  EXPECT_THAT(entry->validate(Spec(10, 0, 4)).message(),
              HasSubstr("dataset.synthetic_lm.sequence_length"));
  EXPECT_THAT(entry->validate(Spec(10, 8, -1)).message(),
              HasSubstr("dataset.synthetic_lm.num_sequences"));
  EXPECT_THAT(entry->validate(Spec(10, 1 << 16, 1 << 14)).message(),
              HasSubstr("dataset.synthetic_lm.num_sequences"));
}

TEST(SyntheticLmTest, UniformDeterministicTokensInShape) {
  absl::StatusOr<std::unique_ptr<Dataset>> a = LoadDataset(Spec(50, 16, 300));
  absl::StatusOr<std::unique_ptr<Dataset>> b = LoadDataset(Spec(50, 16, 300));
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_TRUE(b.ok()) << b.status();
  const DatasetInfo& info = (*a)->info();
  EXPECT_EQ(info.vocab_size, 50);
  EXPECT_EQ(info.sequence_length, 16);
  EXPECT_EQ(info.unk_id, -1);
  for (Split split : {Split::kTrain, Split::kValid, Split::kTest}) {
    EXPECT_EQ((*a)->NumExamples(split), 300);
  }

  Batch batch = (*a)->GetBatch(Split::kTrain, 32, 3, 1, 42);
  EXPECT_EQ(batch.inputs.sizes(), (std::vector<int64_t>{32, 16}));
  EXPECT_TRUE(batch.inputs.equal((*b)->GetBatch(Split::kTrain, 32, 3, 1, 42).inputs));
  EXPECT_FALSE(batch.inputs.equal((*a)->GetBatch(Split::kTrain, 32, 3, 2, 42).inputs));
  // Targets are the inputs shifted by one within the stream.
  EXPECT_TRUE(batch.targets.narrow(1, 0, 15).equal(batch.inputs.narrow(1, 1, 15)));

  // Splits are different streams.
  EXPECT_FALSE((*a)->GetExamples(Split::kValid, {0})
                   .inputs.equal((*a)->GetExamples(Split::kTest, {0}).inputs));

  // Every id in range, each near its expected count 300 * 16 / 50 = 96.
  const auto* stream = dynamic_cast<const TokenStreamDataset*>(a->get());
  ASSERT_NE(stream, nullptr);
  std::vector<int> counts(50, 0);
  for (int32_t id : stream->corpus().split(Split::kTrain)) {
    ASSERT_GE(id, 0);
    ASSERT_LT(id, 50);
    ++counts[id];
  }
  for (int count : counts) {
    EXPECT_GT(count, 50);
    EXPECT_LT(count, 150);
  }
  // A uniform stream's unigram perplexity is close to the vocabulary size.
  EXPECT_NEAR(stream->UnigramPerplexity(Split::kValid), 50, 3);
}

}  // namespace
}  // namespace moelab
