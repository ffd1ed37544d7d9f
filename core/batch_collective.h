#ifndef MOELAB_CORE_BATCH_COLLECTIVE_H_
#define MOELAB_CORE_BATCH_COLLECTIVE_H_

// Statistics over the whole batch when the batch is split over
// data-parallel ranks. Under data parallelism each rank routes only its
// shard of the batch, so a quantity defined over the batch (the
// load-balancing loss's expert shares f_e, an expert's capacity queue)
// needs the other ranks' counts. Routers call these functions; in one
// process (no collective installed) they are the identity, so a router
// written for one process is already correct, and the run records which
// quantities were global (RunResult.distributed).
//
// Example: the share of a batch's (token, expert) pairs each expert
// received, over every rank's tokens:
//
//   at::Tensor counts = counted.to(at::kFloat).sum(0);  // [E], this shard's
//   counts = SumOverBatchShards(counts);                // [E], the batch's
//   at::Tensor f = counts / counts.sum().clamp_min(1);

#include <ATen/core/Tensor.h>

namespace moelab {

class BatchCollective {
 public:
  virtual ~BatchCollective() = default;
  // Number of shards the batch is split into (the data-parallel ranks).
  virtual int shards() const = 0;
  // This rank's shard: shard s holds the batch's examples
  // [s * B / shards, (s + 1) * B / shards).
  virtual int shard() const = 0;
  // Sum over the shards, in place; not differentiable.
  virtual void SumInPlace(at::Tensor& tensor) = 0;
  // [shards, ...]: every shard's `tensor`, in shard order.
  virtual at::Tensor Gather(const at::Tensor& tensor) = 0;
};

// The collective of the running data-parallel job; null in one process.
BatchCollective* CurrentBatchCollective();

// Installs `collective` for its lifetime (restoring the previous one).
class ScopedBatchCollective {
 public:
  explicit ScopedBatchCollective(BatchCollective* collective);
  ~ScopedBatchCollective();
  ScopedBatchCollective(const ScopedBatchCollective&) = delete;
  ScopedBatchCollective& operator=(const ScopedBatchCollective&) = delete;

 private:
  BatchCollective* previous_;
};

// The sum of `tensor` over the shards (detached); `tensor` itself in one
// process.
at::Tensor SumOverBatchShards(const at::Tensor& tensor);

// [shards, ...] every shard's `tensor`; [1, ...] in one process.
at::Tensor GatherBatchShards(const at::Tensor& tensor);

// The number of shards (1 in one process) and this rank's shard (0).
int BatchShards();
int BatchShardIndex();

}  // namespace moelab

#endif  // MOELAB_CORE_BATCH_COLLECTIVE_H_
