#ifndef MOELAB_CORE_EVALUATION_H_
#define MOELAB_CORE_EVALUATION_H_

// The evaluation stage every task shares: mean loss and argmax accuracy over
// a split with each MoE layer's routing accumulated over the same tokens,
// the same on corrupted inputs, and the fixed probe set whose routing
// fluctuation is measured between epochs. Task-specific figures (perplexity,
// baselines) are the task's (core/task.h).

#include <c10/core/Device.h>

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/dataset.h"
#include "core/evaluation_shards.h"
#include "core/model.h"
#include "core/routing_metrics.h"
#include "proto/experiment.pb.h"
#include "proto/result.pb.h"

namespace moelab {

struct Evaluation {
  // Mean loss and share of argmax-correct predictions over `targets`
  // targets (tokens or images); 0 when the split is empty.
  double loss = 0;
  double accuracy = 0;
  int64_t targets = 0;
  std::vector<LayerRoutingMetrics> layers;
};

// Evaluates the model (in eval mode, without gradients) on the first
// `max_batches` batches of `split` (0: all of them, the trailing partial
// batch included).
//
// With `shards`, each process evaluates its share of the batches and the
// result is the whole evaluation's, on every process. Every batch is routed
// whole by one process, so batch-wide routing decisions are those of one
// process (a training job's batch collective is set aside here, as it is in
// every evaluation). Each process makes the same number of forward passes (under
// expert parallelism each is collective): one whose share of the last
// round is empty runs another's batch and discards it. Errors: the sum's.
absl::StatusOr<Evaluation> Evaluate(Model& model, const Dataset& data, Split split,
                                    int64_t batch_size, int max_batches, const c10::Device& device,
                                    EvaluationShards* shards = nullptr);

// The loss and accuracy on corrupted validation batches (perplexity is the
// task's, Task::CompleteCorrupted), and expert_change: the share of tokens
// in the first `change_batches` batches whose expert set differs from the
// clean input's, averaged over MoE layers; -1 when the corruption moves
// tokens (deletion), so positions cannot be compared.
absl::StatusOr<CorruptedMetrics> EvaluateCorrupted(Model& model, const Dataset& data,
                                                   const CorruptionSpec& corruption,
                                                   int64_t batch_size, int max_batches,
                                                   int64_t change_batches, uint64_t seed,
                                                   const c10::Device& device);

// The fixed probe set: `count` validation example indices (all of them when
// fewer), drawn by `seed` and sorted.
std::vector<int64_t> ProbeIndices(const Dataset& data, int count, uint64_t seed);

// Each MoE layer's assignment of the probe examples' tokens, in probe order.
std::vector<ProbeAssignment> ProbeRouting(Model& model, const Dataset& data,
                                          const std::vector<int64_t>& indices, int64_t batch_size,
                                          const c10::Device& device);

}  // namespace moelab

#endif  // MOELAB_CORE_EVALUATION_H_
