#ifndef MOELAB_CORE_TRAIN_STEP_H_
#define MOELAB_CORE_TRAIN_STEP_H_

// One optimisation step, shared by the trainer and the benchmarks so that what
// the benchmarks time is exactly what training runs.

#include <torch/optim/optimizer.h>

#include <exception>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "core/dataset.h"
#include "core/model.h"
#include "proto/experiment.pb.h"

namespace moelab {

// Intra-op threads a run uses: runtime.threads, or every core when it is 0.
int ThreadsFor(const RuntimeSpec& runtime);

// The optimizer `training` names, over all of the model's parameters.
std::unique_ptr<torch::optim::Optimizer> MakeOptimizer(const TrainingSpec& training, Model& model);

// What a step shares with the other processes of a data-parallel job
// (core/distributed/data_parallel.h implements it); null in one process.
class StepSynchronizer {
 public:
  virtual ~StepSynchronizer() = default;
  // The mean over ranks of each entry of `values` ([n] float64, CPU).
  virtual absl::StatusOr<at::Tensor> MeanOverRanks(const at::Tensor& values) = 0;
  virtual void PrepareForForward() = 0;
  virtual void PrepareForBackward() = 0;
  // After the backward pass: every gradient is then the whole batch's.
  virtual absl::Status FinishBackward() = 0;
  // The squared L2 norm of the whole model's gradient, over every rank's
  // share of it.
  virtual absl::StatusOr<double> GradientNormSquared() = 0;
  // A collective inside the backward pass threw `error`: its message, and
  // which rank stopped answering.
  virtual std::string DescribeFailure(const std::exception& error) = 0;
};

struct StepLosses {
  double loss = 0;      // the task loss
  double aux_loss = 0;  // the routers' weighted auxiliary losses
};

// Forward, backward of loss + aux loss, gradient clipping when
// grad_clip_norm > 0, optimizer step. A non-finite loss returns a
// DataLossError before the backward pass, leaving the parameters untouched.
// With a `synchronizer`, `batch` is this rank's shard, the losses returned
// are the means over ranks, and every rank agrees on the non-finite check.
absl::StatusOr<StepLosses> TrainStep(Model& model, torch::optim::Optimizer& optimizer,
                                     const Batch& batch, double grad_clip_norm,
                                     StepSynchronizer* synchronizer = nullptr);

}  // namespace moelab

#endif  // MOELAB_CORE_TRAIN_STEP_H_
