#ifndef MOELAB_CORE_TRAIN_STEP_H_
#define MOELAB_CORE_TRAIN_STEP_H_

// One optimisation step, shared by the trainer and the benchmarks so that what
// the benchmarks time is exactly what training runs.

#include <torch/optim/optimizer.h>

#include <memory>

#include "absl/status/statusor.h"
#include "core/dataset.h"
#include "core/model.h"
#include "proto/experiment.pb.h"

namespace moelab {

// Intra-op threads a run uses: runtime.threads, or every core when it is 0.
int ThreadsFor(const RuntimeSpec& runtime);

// The optimizer `training` names, over all of the model's parameters.
std::unique_ptr<torch::optim::Optimizer> MakeOptimizer(const TrainingSpec& training, Model& model);

struct StepLosses {
  double loss = 0;      // the task loss
  double aux_loss = 0;  // the routers' weighted auxiliary losses
};

// Forward, backward of loss + aux loss, gradient clipping when
// grad_clip_norm > 0, optimizer step. A non-finite loss returns a
// DataLossError before the backward pass, leaving the parameters untouched.
absl::StatusOr<StepLosses> TrainStep(Model& model, torch::optim::Optimizer& optimizer,
                                     const Batch& batch, double grad_clip_norm);

}  // namespace moelab

#endif  // MOELAB_CORE_TRAIN_STEP_H_
