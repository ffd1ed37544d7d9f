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

// How an expert-parallel run split its experts: over `degree` ranks, E/degree
// each in order, and which share (`shard`) a file holds. Every checkpoint
// records one; degree 1 (the default, and what files without a record mean)
// is one process holding every expert.
struct ExpertLayout {
  int32_t degree = 1;
  int32_t shard = 0;
};

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
// `layout`: the experts `model` holds (under expert parallelism, rank 0's
// share; the other shares are SaveExpertShard's files).
absl::Status SaveCheckpoint(const std::string& path, Model& model,
                            torch::optim::Optimizer& optimizer, const TrainingState& state,
                            const ExpertLayout& layout = {});

// An expert-parallel set of checkpoints holds the replicated state once, in
// rank 0's `checkpoint.pt` (SaveCheckpoint with layout {n, 0}, which records
// the epoch), and each other share's experts in a file of their own:
// `expert_sharded` (the model's tensors this rank holds; by name) and their
// optimizer state, written to ExpertShardPath(checkpoint.pt, shard, epoch).
// Shares are named by epoch so that rank 0's file, written last, is the one
// rename that commits a set: a worker killed in between leaves the previous
// set whole.
absl::Status SaveExpertShard(const std::string& path, Model& model,
                             torch::optim::Optimizer& optimizer,
                             const std::vector<at::Tensor>& expert_sharded,
                             const ExpertLayout& layout, int32_t epochs_done);

// The file of share `shard` of the set whose rank-0 file is `checkpoint`
// (".../checkpoint.pt"), written after `epochs_done` epochs:
// ".../checkpoint.rank<shard>.epoch<epochs_done>.pt".
std::string ExpertShardPath(const std::string& checkpoint, int shard, int epochs_done);

// Restores everything SaveCheckpoint wrote into a model and optimizer built
// from the same spec. Errors name the file; a checksum mismatch is DataLoss.
// Warnings (a v1 checkpoint loaded unverified) go to `warnings`, or to
// stderr when it is null.
//
// `layout` is the resuming rank's: the file must record the same degree (a
// run resumes on the layout it was written with; FailedPrecondition
// otherwise). A rank of another share than 0 then replaces rank 0's experts
// and their optimizer state with its own share's, from the set's file of the
// checkpoint's epoch.
absl::Status LoadCheckpoint(const std::string& path, Model& model,
                            torch::optim::Optimizer& optimizer, TrainingState* state,
                            std::vector<std::string>* warnings = nullptr,
                            const ExpertLayout& layout = {});

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
// on the way: rank 0's `checkpoint.pt` records the layout (n shares) and
// holds share 0 of each expert tensor with the replicated rest; a model of
// all E experts reads each expert tensor from shares 0..n-1 in order (the
// files ExpertShardPath names for the recorded epoch), and a note says so.
absl::Status LoadWeights(const std::string& path, Model& model,
                         std::vector<std::string>* not_loaded,
                         std::vector<std::string>* warnings = nullptr);

// The one-line message of an exception: for a c10::Error (TORCH_CHECK,
// LibTorch's own checks) the first line of what_without_backtrace(), not the
// multi-line C++ backtrace what() carries.
std::string ExceptionMessage(const std::exception& e);

}  // namespace moelab

#endif  // MOELAB_CORE_CHECKPOINT_H_
