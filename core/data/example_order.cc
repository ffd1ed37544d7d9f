#include "core/data/example_order.h"

#include <c10/util/Exception.h>

#include <algorithm>

#include "core/data/random.h"

namespace moelab {
namespace {

// Keeps shuffling streams apart from augmentation streams of equal keys.
constexpr uint64_t kShuffleSalt = 0x73687566666c65ull;  // "shuffle"

}  // namespace

ExampleOrder::ExampleOrder(int64_t num_train_examples) : num_train_examples_(num_train_examples) {}

std::shared_ptr<const std::vector<int64_t>> ExampleOrder::Permutation(int64_t epoch,
                                                                      uint64_t seed) const {
  std::lock_guard<std::mutex> lock(mu_);
  if (cached_ == nullptr || cached_epoch_ != epoch || cached_seed_ != seed) {
    DataRng rng = DataRng::FromKeys({kShuffleSalt, seed, static_cast<uint64_t>(epoch)});
    cached_ =
        std::make_shared<const std::vector<int64_t>>(RandomPermutation(num_train_examples_, rng));
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
    TORCH_CHECK(num_examples == num_train_examples_, "training split size changed");
    const int64_t batches = num_examples / batch_size;
    TORCH_CHECK(index >= 0 && index < batches, "train batch index ", index, " out of range [0, ",
                batches, ") for batch_size ", batch_size);
    std::shared_ptr<const std::vector<int64_t>> order = Permutation(epoch, seed);
    return std::vector<int64_t>(order->begin() + begin, order->begin() + begin + batch_size);
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

}  // namespace moelab
