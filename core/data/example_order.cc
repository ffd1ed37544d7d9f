#include "core/data/example_order.h"

#include <c10/util/Exception.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "core/data/random.h"

namespace moelab {
namespace {

// Keeps shuffling streams apart from augmentation streams of equal keys.
constexpr uint64_t kShuffleSalt = 0x73687566666c65ull;  // "shuffle"

std::vector<int64_t> EvenlySpaced(int64_t n, int64_t total) {
  std::vector<int64_t> examples(n);
  // floor(i * N / n) is strictly increasing for n <= N, so no example repeats.
  for (int64_t i = 0; i < n; ++i) examples[i] = i * total / n;
  return examples;
}

}  // namespace

ExampleOrder::ExampleOrder(int64_t num_train_examples)
    : split_examples_(num_train_examples),
      train_examples_(EvenlySpaced(num_train_examples, num_train_examples)) {}

absl::Status ExampleOrder::SetTrainSubset(int64_t examples, absl::string_view source) {
  if (examples < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "dataset.train_subset_examples: must be >= 0 (0 = the whole split), got ", examples));
  }
  if (examples > split_examples_) {
    return absl::InvalidArgumentError(absl::StrCat("dataset.train_subset_examples: ", examples,
                                                   " exceeds the ", split_examples_,
                                                   " training examples of ", source));
  }
  train_examples_ = EvenlySpaced(examples > 0 ? examples : split_examples_, split_examples_);
  std::lock_guard<std::mutex> lock(mu_);
  cached_ = nullptr;
  return absl::OkStatus();
}

int64_t ExampleOrder::TrainExample(int64_t position) const {
  TORCH_CHECK(position >= 0 && position < num_train_examples(), "training position ", position,
              " out of range [0, ", num_train_examples(), ")");
  return train_examples_[position];
}

std::shared_ptr<const std::vector<int64_t>> ExampleOrder::Permutation(int64_t epoch,
                                                                      uint64_t seed) const {
  std::lock_guard<std::mutex> lock(mu_);
  if (cached_ == nullptr || cached_epoch_ != epoch || cached_seed_ != seed) {
    DataRng rng = DataRng::FromKeys({kShuffleSalt, seed, static_cast<uint64_t>(epoch)});
    cached_ =
        std::make_shared<const std::vector<int64_t>>(RandomPermutation(num_train_examples(), rng));
    cached_epoch_ = epoch;
    cached_seed_ = seed;
  }
  return cached_;
}

std::vector<int64_t> ExampleOrder::BatchExamples(Split split, int64_t num_examples,
                                                 int64_t batch_size, int64_t index, int64_t epoch,
                                                 uint64_t seed) const {
  TORCH_CHECK(batch_size >= 1, "batch_size must be >= 1, got ", batch_size);
  const int64_t begin = index * batch_size;
  if (split == Split::kTrain) {
    TORCH_CHECK(num_examples == num_train_examples(), "training split size changed");
    const int64_t batches = num_examples / batch_size;
    TORCH_CHECK(index >= 0 && index < batches, "train batch index ", index, " out of range [0, ",
                batches, ") for batch_size ", batch_size);
    std::shared_ptr<const std::vector<int64_t>> order = Permutation(epoch, seed);
    std::vector<int64_t> examples(batch_size);
    for (int64_t b = 0; b < batch_size; ++b) examples[b] = train_examples_[(*order)[begin + b]];
    return examples;
  }
  const int64_t batches = (num_examples + batch_size - 1) / batch_size;
  TORCH_CHECK(index >= 0 && index < batches, SplitName(split), " batch index ", index,
              " out of range [0, ", batches, ") for batch_size ", batch_size);
  const int64_t end = std::min(num_examples, begin + batch_size);
  std::vector<int64_t> examples(end - begin);
  for (int64_t i = begin; i < end; ++i) examples[i - begin] = i;
  return examples;
}

void CheckExampleIndices(Split split, int64_t num_examples, const std::vector<int64_t>& indices) {
  TORCH_CHECK(!indices.empty(), "GetExamples needs at least one index");
  for (int64_t i : indices) {
    TORCH_CHECK(i >= 0 && i < num_examples, SplitName(split), " example index ", i,
                " out of range [0, ", num_examples, ")");
  }
}

std::vector<int64_t> SplitExampleIndices(const ExampleOrder& order, Split split,
                                         const std::vector<int64_t>& indices) {
  if (split != Split::kTrain) return indices;
  std::vector<int64_t> examples(indices.size());
  for (size_t i = 0; i < indices.size(); ++i) examples[i] = order.TrainExample(indices[i]);
  return examples;
}

}  // namespace moelab
