#ifndef MOELAB_CORE_DATA_EXAMPLE_ORDER_H_
#define MOELAB_CORE_DATA_EXAMPLE_ORDER_H_

// Which examples a batch holds, shared by every dataset so that all of them
// batch, shuffle and drop remainders the same way (core/dataset.h).

#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "core/dataset.h"

namespace moelab {

class ExampleOrder {
 public:
  explicit ExampleOrder(int64_t num_train_examples);

  ExampleOrder(const ExampleOrder&) = delete;
  ExampleOrder& operator=(const ExampleOrder&) = delete;

  // Example indices of batch `index` of a split with `num_examples`.
  // Training: positions [index * B, (index + 1) * B) of a permutation drawn
  // from (seed, epoch); batches are full (the partial remainder is dropped).
  // Evaluation: examples [index * B, min(N, (index + 1) * B)) in order, the
  // last batch possibly partial. An index out of range is a programmer error.
  std::vector<int64_t> BatchExamples(Split split, int64_t num_examples, int64_t batch_size,
                                     int64_t index, int64_t epoch, uint64_t seed) const;

  // The training permutation of (seed, epoch); position p holds example
  // Permutation(...)[p].
  std::shared_ptr<const std::vector<int64_t>> Permutation(int64_t epoch, uint64_t seed) const;

 private:
  const int64_t num_train_examples_;
  // An epoch asks for the same permutation once per batch; keeping the
  // latest one makes a batch O(B) instead of O(N). Thread-safe.
  mutable std::mutex mu_;
  mutable int64_t cached_epoch_ = 0;
  mutable uint64_t cached_seed_ = 0;
  mutable std::shared_ptr<const std::vector<int64_t>> cached_;
};

// Checks a GetExamples request: every index in [0, num_examples).
void CheckExampleIndices(Split split, int64_t num_examples, const std::vector<int64_t>& indices);

}  // namespace moelab

#endif  // MOELAB_CORE_DATA_EXAMPLE_ORDER_H_
