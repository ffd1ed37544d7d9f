#ifndef MOELAB_CORE_DISTRIBUTED_DATA_PARALLEL_H_
#define MOELAB_CORE_DISTRIBUTED_DATA_PARALLEL_H_

// Data parallelism over c10d: each rank trains on its shard of every batch
// and the ranks average their gradients, as PyTorch's DDP does, with DDP's
// own engine (c10d::Reducer): gradients of replicated parameters are
// averaged in buckets, each bucket's all-reduce starting as soon as the
// backward pass has produced its gradients. Parameters split by expert
// parallelism are not in the buckets: their gradients already hold the
// contributions of every rank in their expert group (the all-to-all's
// backward brings them), and are summed over the expert group's replicas
// and divided by the world size after the backward pass.
//
//   DataParallel dp(groups, model.parameters(), /*expert_sharded=*/{}, {});
//   if (absl::Status s = dp.SyncInitialState(model.buffers()); !s.ok()) ...
//   ScopedBatchCollective scope(&dp.batch_collective());  // routers' counts
//   for (int64_t i = 0; i < steps; ++i) {
//     Batch shard = ShardOf(data.GetBatch(...), dp.shard(), dp.shards());
//     TrainStep(model, optimizer, shard, clip, &dp);  // losses: rank means
//   }

#include <ATen/core/Tensor.h>

#include <atomic>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "core/batch_collective.h"
#include "core/dataset.h"
#include "core/distributed/process_groups.h"
#include "core/evaluation_shards.h"
#include "core/train_step.h"

namespace c10d {
class Reducer;  // torch/csrc/distributed/c10d/reducer.hpp
}  // namespace c10d

namespace moelab {

struct DataParallelOptions {
  // Gradient bytes per all-reduce bucket (DDP's default, 25 MiB).
  int64_t bucket_bytes = 25 << 20;
};

// Seconds spent communicating since the start, for benchmarks.
struct CommunicationTimes {
  // From each gradient bucket's all-reduce launch to its completion, summed
  // over buckets: it overlaps the rest of the backward pass.
  double gradient_all_reduce_s = 0;
  // Blocking collectives: the losses' mean, the expert gradients' sum over
  // replicas, the gradient norm, the routers' batch statistics.
  double blocking_s = 0;
};

class DataParallel : public StepSynchronizer {
 public:
  // `parameters`: the model's; `expert_sharded`: those of them split over
  // the expert group (empty without expert parallelism). The others that
  // train are replicated, each rank holding them in full.
  DataParallel(const ProcessGroups& groups, const std::vector<at::Tensor>& parameters,
               std::vector<at::Tensor> expert_sharded, const DataParallelOptions& options);
  ~DataParallel() override;

  // Rank 0's replicated parameters and `buffers` copied to every rank, after
  // checking that every rank built parameters of the same shapes. A
  // collective: every rank calls it.
  absl::Status SyncInitialState(const std::vector<at::Tensor>& buffers);

  // Before each forward pass: after the first step, the buckets are
  // regrouped once in the order the gradients arrived (as DDP does).
  void PrepareForForward() override;
  // Before each backward pass.
  void PrepareForBackward() override;
  // After each backward pass: the expert-parallel gradients (the buckets
  // were reduced during the pass).
  absl::Status FinishBackward() override;

  // The mean over ranks of each entry of `values` (a small CPU float64
  // tensor): losses for the record, and the non-finite check every rank must
  // agree on.
  absl::StatusOr<at::Tensor> MeanOverRanks(const at::Tensor& values) override;

  // The squared L2 norm of all gradients of the model, over every rank's
  // expert shards (for gradient clipping).
  absl::StatusOr<double> GradientNormSquared() override;
  std::string DescribeFailure(const std::exception& error) override;

  CommunicationTimes communication_times() const;

  // Bytes of the replicated parameters: what each step all-reduces.
  int64_t replicated_bytes() const;

  int shards() const { return groups_.world_size(); }
  int shard() const { return groups_.rank(); }
  BatchCollective& batch_collective() { return *collective_; }
  // Evaluation batches shared over every rank, the sums all-reduced.
  EvaluationShards& evaluation_shards() { return *evaluation_shards_; }

 private:
  const ProcessGroups& groups_;
  std::vector<at::Tensor> replicated_;
  std::vector<at::Tensor> expert_sharded_;
  // Nanoseconds, written by gloo's threads (bucket completions) and this one.
  std::shared_ptr<std::atomic<int64_t>> all_reduce_ns_, blocking_ns_;
  std::unique_ptr<c10d::Reducer> reducer_;
  std::unique_ptr<BatchCollective> collective_;
  std::unique_ptr<EvaluationShards> evaluation_shards_;
};

// Rows [shard * B / shards, (shard + 1) * B / shards) of both halves of
// `batch` (B divisible by shards; the caller checks).
Batch ShardOf(const Batch& batch, int shard, int shards);

}  // namespace moelab

#endif  // MOELAB_CORE_DISTRIBUTED_DATA_PARALLEL_H_
