#ifndef MOELAB_CORE_CHECKPOINT_H_
#define MOELAB_CORE_CHECKPOINT_H_

// Checkpoints: model weights, optimizer state, and what a resumed run needs
// to continue exactly where it stopped. Written atomically.

#include <cstdint>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>
#include <torch/optim/optimizer.h>

#include "absl/status/status.h"
#include "core/model.h"
#include "core/routing_metrics.h"
#include "proto/result.pb.h"

namespace moelab {

struct TrainingState {
  // Epochs finished; training continues with epoch `epochs_done`.
  int32_t epochs_done = 0;
  int64_t step = 0;
  // Everything the run has recorded so far.
  RunResult result;
  // Probe routing at the end of the last finished epoch, one per MoE layer.
  std::vector<ProbeAssignment> probe;
  // The CPU generator's state (dropout, jitter, random routing).
  at::Tensor rng_state;
};

// Saves to `path` via a temporary file and a rename.
absl::Status SaveCheckpoint(const std::string& path, Model& model,
                            torch::optim::Optimizer& optimizer,
                            const TrainingState& state);

// Restores everything SaveCheckpoint wrote into a model and optimizer built
// from the same spec. Errors name the file.
absl::Status LoadCheckpoint(const std::string& path, Model& model,
                            torch::optim::Optimizer& optimizer,
                            TrainingState* state);

// Loads only the weights, by parameter name, into a model that may use a
// different router (the training-free setting): parameters the checkpoint
// lacks keep their initial values and are listed in `not_loaded`. A shape
// mismatch on a shared name is an error.
absl::Status LoadWeights(const std::string& path, Model& model,
                         std::vector<std::string>* not_loaded);

}  // namespace moelab

#endif  // MOELAB_CORE_CHECKPOINT_H_
