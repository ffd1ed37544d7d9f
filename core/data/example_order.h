#ifndef MOELAB_CORE_DATA_EXAMPLE_ORDER_H_
#define MOELAB_CORE_DATA_EXAMPLE_ORDER_H_

// Which examples a batch holds, shared by every dataset so that all of them
// batch, shuffle and drop remainders the same way (core/dataset.h).

#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "core/dataset.h"

namespace moelab {

class ExampleOrder {
 public:
  explicit ExampleOrder(int64_t num_train_examples);

  ExampleOrder(const ExampleOrder&) = delete;
  ExampleOrder& operator=(const ExampleOrder&) = delete;

  // Trains on `examples` of the split's N training examples (a dataset's
  // Dataset::SetTrainSubset; DatasetSpec.train_subset_examples): those at
  // floor(i * N / n), i < n; 0 restores the whole split. Call before any
  // batch. An error names the field and `source` (e.g. "SOTU addresses
  // 1790-1989") when `examples` is negative or more than N.
  absl::Status SetTrainSubset(int64_t examples, absl::string_view source);

  // Training examples an epoch passes over: the subset's size, else the
  // split's. A dataset's NumExamples(kTrain) returns this.
  int64_t num_train_examples() const { return static_cast<int64_t>(train_examples_.size()); }

  // The split's example index of training position `position` (an index
  // into the subset when there is one; itself otherwise).
  int64_t TrainExample(int64_t position) const;

  // Example indices of batch `index` of a split with `num_examples` (for
  // training, num_train_examples()). Training: positions
  // [index * B, (index + 1) * B) of a permutation drawn from (seed, epoch),
  // mapped to the split's example indices through the subset; batches are
  // full (the partial remainder is dropped).
  // Evaluation: examples [index * B, min(N, (index + 1) * B)) in order, the
  // last batch possibly partial. An index out of range is a programmer error.
  std::vector<int64_t> BatchExamples(Split split, int64_t num_examples, int64_t batch_size,
                                     int64_t index, int64_t epoch, uint64_t seed) const;

  // The training permutation of (seed, epoch) over num_train_examples()
  // positions; position p holds training position Permutation(...)[p].
  std::shared_ptr<const std::vector<int64_t>> Permutation(int64_t epoch, uint64_t seed) const;

 private:
  const int64_t split_examples_;
  // The split's example index of each training position.
  std::vector<int64_t> train_examples_;
  // An epoch asks for the same permutation once per batch; keeping the
  // latest one makes a batch O(B) instead of O(N). Thread-safe.
  mutable std::mutex mu_;
  mutable int64_t cached_epoch_ = 0;
  mutable uint64_t cached_seed_ = 0;
  mutable std::shared_ptr<const std::vector<int64_t>> cached_;
};

// Checks a GetExamples request: every index in [0, num_examples).
void CheckExampleIndices(Split split, int64_t num_examples, const std::vector<int64_t>& indices);

// Resolves a training-split GetExamples request to the split's example
// indices (through `order`'s subset); other splits pass through.
std::vector<int64_t> SplitExampleIndices(const ExampleOrder& order, Split split,
                                         const std::vector<int64_t>& indices);

}  // namespace moelab

#endif  // MOELAB_CORE_DATA_EXAMPLE_ORDER_H_
