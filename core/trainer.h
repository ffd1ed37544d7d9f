#ifndef MOELAB_CORE_TRAINER_H_
#define MOELAB_CORE_TRAINER_H_

// Runs an experiment end to end: trains as the spec says, evaluates every
// epoch, records routing analytics, checkpoints, and writes the run's
// outputs (spec.pbtxt, result.json, metrics.csv, checkpoint.pt) into
// <output.directory>/<name>/.

#include <exception>
#include <functional>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "proto/experiment.pb.h"
#include "proto/result.pb.h"

namespace moelab {

class ProcessGroups;  // core/distributed/process_groups.h

struct RunOptions {
  // Replaces spec.output.directory when non-empty.
  std::string output_directory;
  // Continue from the run directory's checkpoint when there is one.
  bool resume = false;
  // Replace a run of another spec found in the run directory; without it
  // such a run is refused (FailedPrecondition naming the directory and both
  // spec hashes).
  bool overwrite = false;
  // Stop (as if killed) after this many epochs of this invocation; 0 = run
  // to the end. For testing kill-and-resume.
  int stop_after_epochs = 0;
  // Print progress and the final summary to stderr/stdout.
  bool verbose = true;
  // The code revision to record; unset: CurrentSourceRevision().
  std::optional<SourceRevision> source;
  // The job this process is a worker of (run --nproc_per_node, torchrun,
  // srun); null: a single process. Every worker trains on its shard of each
  // batch (data parallelism) and evaluates whole splits; rank 0 alone
  // writes the run's files.
  const ProcessGroups* groups = nullptr;
};

// `spec` must be resolved and valid (core/spec.h LoadSpec). Returns the
// final RunResult; a run stopped by a non-finite loss returns an error that
// says so, after writing result.json with that status and keeping the last
// good checkpoint.
//
// No exception escapes: an error LibTorch throws (a c10::Error, a failed
// allocation) becomes a Status through StatusFromException, named by what
// the run was doing. Once the run owns its directory (after the check for
// another spec's run there), any failure is recorded in result.json as
// status "FAILED" with the error in status_reason, written atomically.
absl::StatusOr<RunResult> RunExperiment(const ExperimentSpec& spec, const RunOptions& options);

// The Status for an exception that escaped while `doing` something
// ("building model 'vmoe_vit'"): ResourceExhausted "out of memory while
// <doing>: ..." for std::bad_alloc and LibTorch's allocation failures,
// Internal "<doing>: ..." otherwise; the message is one line (a c10::Error's
// backtrace is dropped, see ExceptionMessage).
absl::Status StatusFromException(const std::exception& e, absl::string_view doing);

// A binary's last resort, for what escapes outside RunExperiment (spec
// loading, printing): returns main()'s code, or prints one "error: ..." line
// and returns 1 when it throws.
int CallMainWithErrorBoundary(const std::function<int()>& main);

// Records in result->identity_aggregation_layers the MoE layers whose final
// aggregation (result->final().layers()) is effectively the identity, mean
// self-weight above kIdentityAggregationSelfWeight, adds a warning naming
// them and returns it; returns "" when there are none.
std::string FlagIdentityAggregation(RunResult* result);

// The run's output directory for `spec` under `options`.
std::string RunDirectory(const ExperimentSpec& spec, const RunOptions& options);

}  // namespace moelab

#endif  // MOELAB_CORE_TRAINER_H_
