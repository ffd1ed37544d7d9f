#ifndef MOELAB_CORE_EVALUATION_SHARDS_H_
#define MOELAB_CORE_EVALUATION_SHARDS_H_

// The seam between an evaluation (core/evaluation.h) and the processes of a
// multi-process run that share it (core/distributed/data_parallel.h
// implements it over c10d).

#include <vector>

#include "absl/status/status.h"

namespace moelab {

// How the processes of a multi-process run share an evaluation
// (core/distributed/ implements it over c10d): process index() of count()
// evaluates batches index(), index() + count(), ..., and Sum adds up the
// processes' partial sums.
class EvaluationShards {
 public:
  virtual ~EvaluationShards() = default;
  virtual int index() const = 0;
  virtual int count() const = 0;
  // Replaces `values` by their element-wise sum over the processes; every
  // process passes as many.
  virtual absl::Status Sum(std::vector<double>* values) = 0;
};

}  // namespace moelab

#endif  // MOELAB_CORE_EVALUATION_SHARDS_H_
