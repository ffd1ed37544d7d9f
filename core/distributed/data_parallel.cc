#include "core/distributed/data_parallel.h"

#include <ATen/ATen.h>
#include <torch/utils.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <stdexcept>
#include <string>
#include <torch/csrc/distributed/c10d/comm.hpp>
#include <torch/csrc/distributed/c10d/reducer.hpp>
#include <tuple>

#include "absl/strings/str_cat.h"
#include "core/checkpoint.h"
#include "core/distributed/communication_timer.h"

namespace moelab {
namespace {

constexpr size_t kBroadcastBucketBytes = 256 << 20;

// DDP's all-reduce of a gradient bucket (the mean over ranks, as the
// Reducer's default), timed from launch to completion.
class TimedAllReduceHook : public c10d::CommHookInterface {
 public:
  TimedAllReduceHook(c10::intrusive_ptr<c10d::ProcessGroup> group,
                     std::shared_ptr<std::atomic<int64_t>> total_ns)
      : group_(std::move(group)), total_ns_(std::move(total_ns)) {}

  c10::intrusive_ptr<c10::ivalue::Future> runHook(c10d::GradBucket& bucket) override {
    const auto start = std::chrono::steady_clock::now();
    std::vector<at::Tensor> tensors = {bucket.getBufferRef()};
    tensors[0].div_(group_->getSize());
    c10::intrusive_ptr<c10::ivalue::Future> done = group_->allreduce(tensors)->getFuture();
    done->addCallback(
        [total = total_ns_, start](c10::ivalue::Future&) { *total += NanosecondsSince(start); });
    return done;
  }

  // gloo's future holds the reduced tensors, a list of one.
  at::Tensor parseHookResult(const c10::IValue& result) override {
    return result.isTensor() ? result.toTensor() : result.toTensorVector()[0];
  }

 private:
  c10::intrusive_ptr<c10d::ProcessGroup> group_;
  std::shared_ptr<std::atomic<int64_t>> total_ns_;
};

// The batch-wide statistics of routers (core/batch_collective.h) over the
// data-parallel ranks.
class WorldBatchCollective : public BatchCollective {
 public:
  WorldBatchCollective(const ProcessGroups& groups, std::atomic<int64_t>& blocking_ns)
      : groups_(groups), blocking_ns_(blocking_ns) {}
  int shards() const override { return groups_.world_size(); }
  int shard() const override { return groups_.rank(); }
  void SumInPlace(at::Tensor& tensor) override {
    ScopedNanoseconds timer(blocking_ns_);
    std::vector<at::Tensor> tensors{tensor};
    WaitForCollectiveOrThrow(groups_.world()->allreduce(tensors), groups_,
                             "a routing statistic's all-reduce");
  }
  at::Tensor Gather(const at::Tensor& tensor) override {
    ScopedNanoseconds timer(blocking_ns_);
    std::vector<at::Tensor> input{tensor};
    std::vector<std::vector<at::Tensor>> output(1);
    for (int r = 0; r < shards(); ++r) output[0].push_back(at::empty_like(tensor));
    WaitForCollectiveOrThrow(groups_.world()->allgather(output, input), groups_,
                             "a routing statistic's all-gather");
    return at::stack(output[0]);
  }

 private:
  const ProcessGroups& groups_;
  std::atomic<int64_t>& blocking_ns_;
};

// An evaluation's batches shared over every rank (core/evaluation.h).
class WorldEvaluationShards : public EvaluationShards {
 public:
  explicit WorldEvaluationShards(const ProcessGroups& groups) : groups_(groups) {}
  int index() const override { return groups_.rank(); }
  int count() const override { return groups_.world_size(); }
  absl::Status Sum(std::vector<double>* values) override {
    std::vector<at::Tensor> tensors{at::tensor(*values, at::kDouble)};
    if (absl::Status s =
            WaitForCollective(groups_.world()->allreduce(tensors), groups_, "the evaluation's sum");
        !s.ok()) {
      return s;
    }
    const at::Tensor sum = tensors[0].contiguous();
    std::copy(sum.data_ptr<double>(), sum.data_ptr<double>() + values->size(), values->begin());
    return absl::OkStatus();
  }

 private:
  const ProcessGroups& groups_;
};

// Sums `tensors` over `group` in one flat buffer.
absl::Status SumCoalesced(const std::vector<at::Tensor>& tensors,
                          const c10::intrusive_ptr<c10d::ProcessGroup>& group,
                          const ProcessGroups& groups, const std::string& what) {
  if (!group || tensors.empty()) return absl::OkStatus();
  std::vector<at::Tensor> flat{at::cat(
      [&] {
        std::vector<at::Tensor> views;
        for (const at::Tensor& t : tensors) views.push_back(t.reshape({-1}));
        return views;
      }(),
      0)};
  if (absl::Status s = WaitForCollective(group->allreduce(flat), groups, what); !s.ok()) return s;
  int64_t offset = 0;
  for (const at::Tensor& t : tensors) {
    t.view({-1}).copy_(flat[0].slice(0, offset, offset + t.numel()));
    offset += t.numel();
  }
  return absl::OkStatus();
}

}  // namespace

namespace {

// The trainable parameters not in `expert_sharded`.
std::vector<at::Tensor> Replicated(const std::vector<at::Tensor>& parameters,
                                   const std::vector<at::Tensor>& expert_sharded) {
  std::vector<at::Tensor> replicated;
  for (const at::Tensor& p : parameters) {
    const bool sharded = std::any_of(
        expert_sharded.begin(), expert_sharded.end(),
        [&](const at::Tensor& e) { return e.unsafeGetTensorImpl() == p.unsafeGetTensorImpl(); });
    if (p.requires_grad() && !sharded) replicated.push_back(p);
  }
  return replicated;
}

}  // namespace

DataParallel::DataParallel(const ProcessGroups& groups, const std::vector<at::Tensor>& parameters,
                           std::vector<at::Tensor> expert_sharded,
                           const DataParallelOptions& options)
    : groups_(groups),
      replicated_(Replicated(parameters, expert_sharded)),
      expert_sharded_(std::move(expert_sharded)),
      all_reduce_ns_(std::make_shared<std::atomic<int64_t>>(0)),
      blocking_ns_(std::make_shared<std::atomic<int64_t>>(0)) {
  collective_ = std::make_unique<WorldBatchCollective>(groups, *blocking_ns_);
  evaluation_shards_ = std::make_unique<WorldEvaluationShards>(groups);
  const std::vector<bool> dense(replicated_.size(), false);
  const std::vector<size_t> limits = {static_cast<size_t>(c10d::kDefaultFirstBucketBytes),
                                      static_cast<size_t>(options.bucket_bytes)};
  auto [bucket_indices, per_bucket_limits] =
      c10d::compute_bucket_assignment_by_size(replicated_, limits, dense);
  // As DDP: the backward pass produces gradients roughly from the last
  // parameter to the first, so the last bucket is reduced first.
  std::reverse(bucket_indices.begin(), bucket_indices.end());
  std::reverse(per_bucket_limits.begin(), per_bucket_limits.end());
  reducer_ = std::make_unique<c10d::Reducer>(
      replicated_, std::move(bucket_indices), std::move(per_bucket_limits), groups.world(), dense,
      options.bucket_bytes, /*find_unused_parameters=*/false, /*gradient_as_bucket_view=*/false,
      std::unordered_map<size_t, std::string>{},
      static_cast<int64_t>(c10d::kDefaultFirstBucketBytes));
  reducer_->register_comm_hook(
      std::make_unique<TimedAllReduceHook>(groups.world(), all_reduce_ns_));
}

DataParallel::~DataParallel() = default;

std::string DataParallel::DescribeFailure(const std::exception& error) {
  if (dynamic_cast<const CollectiveError*>(&error) != nullptr) return error.what();
  return absl::StrCat(ExceptionMessage(error), "; ", groups_.DescribeFailure());
}

int64_t DataParallel::replicated_bytes() const {
  int64_t bytes = 0;
  for (const at::Tensor& p : replicated_) bytes += p.nbytes();
  return bytes;
}

CommunicationTimes DataParallel::communication_times() const {
  return CommunicationTimes{.gradient_all_reduce_s = *all_reduce_ns_ * 1e-9,
                            .blocking_s = *blocking_ns_ * 1e-9};
}

absl::Status DataParallel::SyncInitialState(const std::vector<at::Tensor>& buffers) {
  try {
    c10d::verify_params_across_processes(groups_.world(), replicated_, c10::nullopt);
  } catch (const std::exception& e) {
    return absl::FailedPreconditionError(
        absl::StrCat("rank ", groups_.rank(),
                     ": the ranks built models with different parameters (same spec and source "
                     "revision on every rank?): ",
                     ExceptionMessage(e)));
  }
  try {
    torch::NoGradGuard no_grad;
    std::vector<at::Tensor> state = replicated_;
    state.insert(state.end(), buffers.begin(), buffers.end());
    c10d::broadcast_coalesced(groups_.world(), state, kBroadcastBucketBytes, /*rank=*/0);
    if (groups_.expert_replicas() && !expert_sharded_.empty()) {
      c10d::broadcast_coalesced(groups_.expert_replicas(), expert_sharded_, kBroadcastBucketBytes,
                                /*rank=*/0);
    }
  } catch (const std::exception& e) {
    return absl::UnavailableError(absl::StrCat(
        "rank ", groups_.rank(), ": copying rank 0's parameters failed: ", ExceptionMessage(e),
        "; ", groups_.DescribeFailure()));
  }
  return absl::OkStatus();
}

void DataParallel::PrepareForForward() { reducer_->rebuild_buckets(); }

void DataParallel::PrepareForBackward() { reducer_->prepare_for_backward({}); }

absl::Status DataParallel::FinishBackward() {
  if (expert_sharded_.empty()) return absl::OkStatus();
  torch::NoGradGuard no_grad;
  // Every replica must sum tensors of the same sizes: a gradient the
  // backward pass did not produce counts as zeros.
  std::vector<at::Tensor> grads;
  for (at::Tensor& p : expert_sharded_) {
    if (!p.grad().defined()) p.mutable_grad() = at::zeros_like(p);
    grads.push_back(p.grad());
  }
  ScopedNanoseconds timer(*blocking_ns_);
  if (absl::Status s = SumCoalesced(grads, groups_.expert_replicas(), groups_,
                                    "the expert gradients' all-reduce");
      !s.ok()) {
    return s;
  }
  // The loss is the mean of the ranks' shard means: each expert gradient
  // now holds the sum over every rank's tokens of their shard-mean loss.
  for (at::Tensor& g : grads) g.div_(groups_.world_size());
  return absl::OkStatus();
}

absl::StatusOr<at::Tensor> DataParallel::MeanOverRanks(const at::Tensor& values) {
  ScopedNanoseconds timer(*blocking_ns_);
  std::vector<at::Tensor> tensors{values.to(at::kDouble).contiguous().clone()};
  if (absl::Status s =
          WaitForCollective(groups_.world()->allreduce(tensors), groups_, "the loss all-reduce");
      !s.ok()) {
    return s;
  }
  return tensors[0].div_(groups_.world_size());
}

absl::StatusOr<double> DataParallel::GradientNormSquared() {
  double replicated = 0;
  for (const at::Tensor& p : replicated_) {
    if (p.grad().defined()) replicated += p.grad().to(at::kDouble).pow(2).sum().item<double>();
  }
  at::Tensor experts = at::zeros({1}, at::kDouble);
  for (const at::Tensor& p : expert_sharded_) {
    if (p.grad().defined()) experts += p.grad().to(at::kDouble).pow(2).sum();
  }
  if (groups_.experts()) {
    ScopedNanoseconds timer(*blocking_ns_);
    std::vector<at::Tensor> tensors{experts};
    if (absl::Status s = WaitForCollective(groups_.experts()->allreduce(tensors), groups_,
                                           "the gradient norm's all-reduce");
        !s.ok()) {
      return s;
    }
  }
  return replicated + experts.item<double>();
}

Batch ShardOf(const Batch& batch, int shard, int shards) {
  const int64_t rows = batch.inputs.size(0) / shards;
  return Batch{.inputs = batch.inputs.slice(0, shard * rows, (shard + 1) * rows),
               .targets = batch.targets.slice(0, shard * rows, (shard + 1) * rows)};
}

}  // namespace moelab
