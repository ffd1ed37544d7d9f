#ifndef MOELAB_CORE_TRAINER_H_
#define MOELAB_CORE_TRAINER_H_

// Runs an experiment end to end: trains as the spec says, evaluates every
// epoch, records routing analytics, checkpoints, and writes the run's
// outputs (spec.pbtxt, result.json, metrics.csv, checkpoint.pt) into
// <output.directory>/<name>/.

#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "proto/experiment.pb.h"
#include "proto/result.pb.h"

namespace moelab {

struct RunOptions {
  // Replaces spec.output.directory when non-empty.
  std::string output_directory;
  // Continue from the run directory's checkpoint when there is one.
  bool resume = false;
  // Stop (as if killed) after this many epochs of this invocation; 0 = run
  // to the end. For testing kill-and-resume.
  int stop_after_epochs = 0;
  // Print progress and the final summary to stderr/stdout.
  bool verbose = true;
  // The code revision to record; unset: CurrentSourceRevision().
  std::optional<SourceRevision> source;
};

// `spec` must be resolved and valid (core/spec.h LoadSpec). Returns the
// final RunResult; a run stopped by a non-finite loss returns an error that
// says so, after writing result.json with that status and keeping the last
// good checkpoint.
absl::StatusOr<RunResult> RunExperiment(const ExperimentSpec& spec,
                                        const RunOptions& options);

// The human-readable summary printed at the end of a run.
std::string FormatRunSummary(const RunResult& result);

// Records in result->identity_aggregation_layers the MoE layers whose final
// aggregation (result->final().layers()) is effectively the identity, mean
// self-weight above kIdentityAggregationSelfWeight, adds a warning naming
// them and returns it; returns "" when there are none.
std::string FlagIdentityAggregation(RunResult* result);

// The run's output directory for `spec` under `options`.
std::string RunDirectory(const ExperimentSpec& spec, const RunOptions& options);

}  // namespace moelab

#endif  // MOELAB_CORE_TRAINER_H_
