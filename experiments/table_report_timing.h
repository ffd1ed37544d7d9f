#ifndef MOELAB_EXPERIMENTS_TABLE_REPORT_TIMING_H_
#define MOELAB_EXPERIMENTS_TABLE_REPORT_TIMING_H_

// The measured wall time of a paper table, from its runs' own records: the
// real time from the earliest run start to the latest run end, the sum of
// the runs' wall times, how many runs, on which CPUs and from which code.
// reproduce writes it into the report and into a sidecar,
// results/NAME.timing.pbtxt (TableTiming, proto/table.proto), which
// `reproduce --list` reads, so a reader sees what a table costs before
// running it.
//
// What counts: every run behind the report. A training-free row's runs
// (evaluations of another row's checkpoints) count as runs, and are also
// counted apart, since they take seconds where training takes hours. A run
// another table has too (the same spec hits the same cache entry, e.g.
// entropy_vs_fluctuation renders graph_of_tokens_lm's runs) counts in both
// tables with the time it took when it ran; the timing names the other
// tables, so such a table's time is not read as time added on top.

#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "experiments/table_report.h"
#include "proto/result.pb.h"
#include "proto/table.pb.h"

namespace moelab {

// The part of a run's directory under the cache's runs/: "<spec hash>/<run
// name>". Two tables whose rows resolve to the same spec at the same seed
// share it, and so the run.
std::string RunCacheKey(const RunResult& run);

// `shared_with`: for a RunCacheKey, the other tables whose runs include it
// (keys absent: none). `rendered_unix_s`: now.
TableTiming MeasureTableTiming(const TableSpec& table, const std::vector<RowRuns>& rows,
                               const std::map<std::string, std::vector<std::string>>& shared_with,
                               double rendered_unix_s);

// The report's Markdown section "Wall time (measured)".
std::string RenderTableTiming(const TableTiming& timing);

// The sidecar beside a report whose files start with `base`
// ("results/graph_of_tokens_lm"): base + ".timing.pbtxt".
std::string TimingSidecarPath(const std::string& base);

// Text format, written atomically (a reader sees the old sidecar or the new).
absl::Status WriteTableTiming(const std::string& path, const TableTiming& timing);

// NotFound when there is no sidecar (the table has not been measured);
// DataLoss when it does not parse.
absl::StatusOr<TableTiming> ReadTableTiming(const std::string& path);

// `reproduce --list`'s entry for one table: its name and description on the
// first line, and on the second what its sidecar says ("measured: ...") or
// "not yet measured" when there is none.
std::string FormatListEntry(const std::string& name, const std::string& description,
                            const absl::StatusOr<TableTiming>& timing);

}  // namespace moelab

#endif  // MOELAB_EXPERIMENTS_TABLE_REPORT_TIMING_H_
