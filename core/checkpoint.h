#ifndef MOELAB_CORE_CHECKPOINT_H_
#define MOELAB_CORE_CHECKPOINT_H_

// Checkpoints: model weights, optimizer state, and what a resumed run needs
// to continue exactly where it stopped. Written atomically, verified on load.
//
// File format: a LibTorch archive (a zip file whose "format" entry is
// "moelab-checkpoint-v2") followed by a 24-byte trailer: the 8 bytes
// "MOELABCK", the archive's length in bytes and the FNV-1a 64 hash of those
// bytes, both as little-endian uint64. The zip's own CRCs are not checked by
// LibTorch, so without the trailer a flipped byte inside a tensor loads
// silently. Loading checks the trailer first: a mismatch, or a v2 archive
// without a trailer (truncated, or bytes appended), is a DataLoss error that
// names the file. Files written before checksums existed
// ("moelab-checkpoint-v1", no trailer) still load, with a warning that they
// could not be verified.

#include <ATen/core/Tensor.h>
#include <torch/optim/optimizer.h>

#include <cstdint>
#include <exception>
#include <string>
#include <vector>

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

// Saves to `path` via a temporary file and a rename. A failed write (disk
// full: ResourceExhausted) removes the temporary and leaves an existing
// `path` as it was; the error names the file and the cause.
absl::Status SaveCheckpoint(const std::string& path, Model& model,
                            torch::optim::Optimizer& optimizer, const TrainingState& state);

// Restores everything SaveCheckpoint wrote into a model and optimizer built
// from the same spec. Errors name the file; a checksum mismatch is DataLoss.
// Warnings (a v1 checkpoint loaded unverified) go to `warnings`, or to
// stderr when it is null.
absl::Status LoadCheckpoint(const std::string& path, Model& model,
                            torch::optim::Optimizer& optimizer, TrainingState* state,
                            std::vector<std::string>* warnings = nullptr);

// Loads only the weights, by parameter name, into `model`.
//
// With `not_loaded` null every parameter and buffer of the model must be in
// the checkpoint. With `not_loaded` set, the model may use a different
// router than the run that wrote the checkpoint (the training-free setting):
// the checkpoint must still hold every parameter and buffer outside the
// model's routers (Model::Routers()), with the same shape; router tensors it
// lacks keep their initial values and are listed in `not_loaded`. So a
// checkpoint of another model (a ViT's into a language model) is an error
// that lists what is missing, not a warning. A shape mismatch on a shared
// name is always an error. The model is changed only when the whole
// checkpoint fits.
//
// A checkpoint of an expert-parallel run (core/distributed/) is consolidated
// on the way: rank 0's `checkpoint.pt` holds its 1/n of each MoE layer's
// experts and the replicated rest, `checkpoint.rank<r>.pt` beside it rank
// r's share; a model of all E experts reads each expert tensor from ranks
// 0..n-1 in order (n from the shapes), and a note says so.
absl::Status LoadWeights(const std::string& path, Model& model,
                         std::vector<std::string>* not_loaded,
                         std::vector<std::string>* warnings = nullptr);

// The expert-parallel shards beside a `checkpoint.pt`: checkpoint.rank1.pt,
// checkpoint.rank2.pt ... as long as they exist; empty for other names.
std::vector<std::string> ExpertShardPaths(const std::string& path);

// The one-line message of an exception: for a c10::Error (TORCH_CHECK,
// LibTorch's own checks) the first line of what_without_backtrace(), not the
// multi-line C++ backtrace what() carries.
std::string ExceptionMessage(const std::exception& e);

}  // namespace moelab

#endif  // MOELAB_CORE_CHECKPOINT_H_
