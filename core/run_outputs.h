#ifndef MOELAB_CORE_RUN_OUTPUTS_H_
#define MOELAB_CORE_RUN_OUTPUTS_H_

// The output stage of a run: result.json and metrics.csv in the run
// directory, written atomically, and what the run prints (one line per
// epoch, a summary at the end). Every figure comes from the RunResult; the
// task (core/task.h) names and formats its own.

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/task.h"
#include "proto/result.pb.h"

namespace moelab {

// result.json: the RunResult as JSON with proto field names, every field
// printed.
std::string JsonOf(const RunResult& result);

// Reads a result.json, also one written before entropies, experts per
// token, drops and the aggregation diagnostics became registered metrics:
// their old LayerRoutingMetrics fields move into `values` under the
// metrics' names, so every reader sees one form. Unknown fields are an
// error unless `ignore_unknown_fields`; errors name `source`.
absl::StatusOr<RunResult> ParseRunResultJson(const std::string& json, const std::string& source,
                                             bool ignore_unknown_fields = false);

// metrics.csv: one row per epoch, the task-free columns then per MoE layer
// the fluctuation, load and head-change columns ("l0_fluct_top1", ...) and
// one per registered layer metric the run has ("l0_gate_entropy",
// "l0_gate_margin", core/layer_metric.h), in name order; a metric a layer
// does not have (no fluctuation in epoch 1, no aggregation for token choice)
// is an empty cell.
std::string MetricsCsv(const RunResult& result);

// Writes <dir>/result.json and <dir>/metrics.csv, each atomically.
absl::Status WriteOutputs(const std::string& dir, const RunResult& result);

// The line a run prints after an epoch: "epoch 3: train loss 5.6329  valid
// ppl 412.0000  fluctuation 7.1%  9976 tokens/s" ("-" before there is a
// previous epoch to compare with).
std::string FormatEpochLine(const EpochMetrics& epoch, const Task& task);

// The human-readable summary printed at the end of a run.
std::string FormatRunSummary(const RunResult& result, const Task& task);

}  // namespace moelab

#endif  // MOELAB_CORE_RUN_OUTPUTS_H_
