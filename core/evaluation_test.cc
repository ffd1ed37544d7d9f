#include "core/evaluation.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <vector>

#include "core/corruption.h"
#include "core/testing/bigram_model.h"
#include "core/testing/small_token_stream.h"
#include "google/protobuf/util/message_differencer.h"

namespace moelab {
namespace {

using ::google::protobuf::util::MessageDifferencer;

const c10::Device kCpu(c10::kCPU);

std::vector<int64_t> ToVector(const at::Tensor& t) {
  const at::Tensor c = t.contiguous().to(at::kLong);
  return std::vector<int64_t>(c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel());
}

TEST(EvaluationTest, LossAccuracyAndLoadOverTheWholeSplit) {
  std::unique_ptr<TokenStreamDataset> data = SmallTokenStream();
  BigramModel model;
  const absl::StatusOr<Evaluation> evaluated =
      Evaluate(model, *data, Split::kValid, /*batch_size=*/1, /*max_batches=*/0, kCpu);
  ASSERT_TRUE(evaluated.ok()) << evaluated.status();
  const Evaluation& e = *evaluated;
  // Inputs {3,0} {0,1}, targets {0,0} {1,2}: P 0.7, 0.1, 0.2, 0.4; the
  // argmax (0, 3, 3, 2) is right at the first and last token.
  EXPECT_EQ(e.targets, 4);
  EXPECT_NEAR(e.loss, -(std::log(0.7) + std::log(0.1) + std::log(0.2) + std::log(0.4)) / 4, 1e-6);
  EXPECT_DOUBLE_EQ(e.accuracy, 0.5);
  // Tokens 3 0 0 1 go to experts 1 0 0 1.
  ASSERT_EQ(e.layers.size(), 1u);
  ASSERT_EQ(e.layers[0].expert_share_size(), 2);
  EXPECT_DOUBLE_EQ(e.layers[0].expert_share(0), 0.5);
  EXPECT_DOUBLE_EQ(e.layers[0].load_cv(), 0);
  EXPECT_NEAR(e.layers[0].values().at("gate_entropy"),
              -(0.75 * std::log(0.75) + 0.25 * std::log(0.25)), 1e-6);
}

TEST(EvaluationTest, MaxBatchesBoundsTheEvaluation) {
  std::unique_ptr<TokenStreamDataset> data = SmallTokenStream();
  BigramModel model;
  const absl::StatusOr<Evaluation> evaluated =
      Evaluate(model, *data, Split::kValid, /*batch_size=*/1, /*max_batches=*/1, kCpu);
  ASSERT_TRUE(evaluated.ok()) << evaluated.status();
  const Evaluation& e = *evaluated;
  EXPECT_EQ(e.targets, 2);
  EXPECT_NEAR(e.loss, -(std::log(0.7) + std::log(0.1)) / 2, 1e-6);
  EXPECT_DOUBLE_EQ(e.accuracy, 0.5);
}

// One of `count` processes, in one: Sum records this process's partial
// sums and adds those another process recorded (`others`), as the
// processes' all-reduce would.
class RecordingShards : public EvaluationShards {
 public:
  RecordingShards(int index, int count, const std::vector<double>* others)
      : index_(index), count_(count), others_(others) {}
  int index() const override { return index_; }
  int count() const override { return count_; }
  absl::Status Sum(std::vector<double>* values) override {
    recorded_ = *values;
    if (others_ != nullptr) {
      EXPECT_EQ(others_->size(), values->size());
      for (size_t i = 0; i < values->size(); ++i) (*values)[i] += (*others_)[i];
    }
    return absl::OkStatus();
  }
  const std::vector<double>& recorded() const { return recorded_; }

 private:
  int index_, count_;
  const std::vector<double>* others_;
  std::vector<double> recorded_;
};

TEST(EvaluationTest, ShardedEvaluationEqualsTheWholeOne) {
  std::unique_ptr<TokenStreamDataset> data = SmallTokenStream();
  BigramModel model;
  const absl::StatusOr<Evaluation> whole =
      Evaluate(model, *data, Split::kValid, /*batch_size=*/1, /*max_batches=*/0, kCpu);
  ASSERT_TRUE(whole.ok());
  // 2 batches over 3 processes: the third only keeps in step (its partial
  // sums are zero); processes 1 and 2 first, then 0 adds theirs.
  RecordingShards third(2, 3, nullptr), second(1, 3, nullptr);
  ASSERT_TRUE(Evaluate(model, *data, Split::kValid, 1, 0, kCpu, &third).ok());
  EXPECT_EQ(third.recorded()[2], 0) << "the stand-in batch was counted";
  ASSERT_TRUE(Evaluate(model, *data, Split::kValid, 1, 0, kCpu, &second).ok());
  // The same sums from every process (the stand-in's layers included), as
  // an all-reduce needs.
  ASSERT_EQ(third.recorded().size(), second.recorded().size());
  std::vector<double> others = second.recorded();
  for (size_t i = 0; i < others.size(); ++i) others[i] += third.recorded()[i];
  RecordingShards first(0, 3, &others);
  const absl::StatusOr<Evaluation> sharded =
      Evaluate(model, *data, Split::kValid, 1, 0, kCpu, &first);
  ASSERT_TRUE(sharded.ok());
  EXPECT_EQ(first.recorded()[2], 2) << "process 0 evaluates batch 0 alone";
  EXPECT_EQ(sharded->targets, whole->targets);
  EXPECT_DOUBLE_EQ(sharded->loss, whole->loss);
  EXPECT_DOUBLE_EQ(sharded->accuracy, whole->accuracy);
  ASSERT_EQ(sharded->layers.size(), 1u);
  // (Equals: a map's serialised order is unspecified.)
  EXPECT_TRUE(MessageDifferencer::Equals(sharded->layers[0], whole->layers[0]))
      << sharded->layers[0].DebugString() << " vs " << whole->layers[0].DebugString();
}

TEST(EvaluationTest, ProbeSetIsSortedFixedBySeedAndBoundedBySplit) {
  std::unique_ptr<TokenStreamDataset> data = SmallTokenStream();
  EXPECT_EQ(ProbeIndices(*data, 10, 7), (std::vector<int64_t>{0, 1}));
  const std::vector<int64_t> one = ProbeIndices(*data, 1, 7);
  ASSERT_EQ(one.size(), 1u);
  EXPECT_EQ(ProbeIndices(*data, 1, 7), one);
}

TEST(EvaluationTest, ProbeRoutingFollowsProbeOrderAcrossBatches) {
  std::unique_ptr<TokenStreamDataset> data = SmallTokenStream();
  BigramModel model;
  const std::vector<ProbeAssignment> forward =
      ProbeRouting(model, *data, {0, 1}, /*batch_size=*/1, kCpu);
  ASSERT_EQ(forward.size(), 1u);
  EXPECT_EQ(ToVector(forward[0].top1), (std::vector<int64_t>{1, 0, 0, 1}));
  const std::vector<ProbeAssignment> reversed =
      ProbeRouting(model, *data, {1, 0}, /*batch_size=*/2, kCpu);
  EXPECT_EQ(ToVector(reversed[0].top1), (std::vector<int64_t>{0, 1, 1, 0}));
}

// The share of tokens in the first `batches` validation batches (of 1)
// whose expert, the parity of their id, the corruption changes.
double ParityChanges(const Dataset& data, const CorruptionSpec& corruption, uint64_t seed,
                     int batches) {
  double changed = 0, compared = 0;
  for (int i = 0; i < batches; ++i) {
    absl::StatusOr<Batch> corrupted = CorruptedBatch(data, Split::kValid, 1, i, corruption, seed);
    EXPECT_TRUE(corrupted.ok()) << corrupted.status();
    const Batch clean = data.GetBatch(Split::kValid, 1, i, 0, 0);
    changed += corrupted->inputs.remainder(2).ne(clean.inputs.remainder(2)).sum().item<double>();
    compared += clean.inputs.numel();
  }
  return changed / compared;
}

TEST(EvaluationTest, CorruptedEvaluationComparesExpertsOnlyWhenPositionsSurvive) {
  std::unique_ptr<TokenStreamDataset> data = SmallTokenStream();
  BigramModel model;
  CorruptionSpec substitution;
  substitution.set_kind(TOKEN_SUBSTITUTION);
  substitution.set_rate(0.9);
  absl::StatusOr<CorruptedMetrics> substituted =
      EvaluateCorrupted(model, *data, substitution, 1, 0, /*change_batches=*/2, 3, kCpu);
  ASSERT_TRUE(substituted.ok()) << substituted.status();
  EXPECT_TRUE(std::isfinite(substituted->loss()));
  const double expected = ParityChanges(*data, substitution, 3, 2);
  EXPECT_GT(expected, 0) << "choose a seed whose substitutions change some parity";
  EXPECT_DOUBLE_EQ(substituted->expert_change(), expected);
  EXPECT_EQ(substituted->perplexity(), 0) << "perplexity is the task's to fill";
  // Only the first batch compared, then none.
  absl::StatusOr<CorruptedMetrics> first =
      EvaluateCorrupted(model, *data, substitution, 1, 0, /*change_batches=*/1, 3, kCpu);
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_DOUBLE_EQ(first->expert_change(), ParityChanges(*data, substitution, 3, 1));
  absl::StatusOr<CorruptedMetrics> none =
      EvaluateCorrupted(model, *data, substitution, 1, 0, /*change_batches=*/0, 3, kCpu);
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_EQ(none->expert_change(), -1);

  CorruptionSpec deletion;
  deletion.set_kind(TOKEN_DELETION);
  deletion.set_rate(0.5);
  absl::StatusOr<CorruptedMetrics> deleted =
      EvaluateCorrupted(model, *data, deletion, 1, 0, 2, 3, kCpu);
  ASSERT_TRUE(deleted.ok()) << deleted.status();
  EXPECT_EQ(deleted->expert_change(), -1);
}

}  // namespace
}  // namespace moelab
