#ifndef MOELAB_EXPERIMENTS_TABLE_ROWS_H_
#define MOELAB_EXPERIMENTS_TABLE_ROWS_H_

// Reading paper tables (experiments/tables/NAME.pbtxt) and building the
// resolved, validated spec of each row.

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "proto/experiment.pb.h"
#include "proto/table.pb.h"

namespace moelab {

inline constexpr char kTablesDirectory[] = "experiments/tables";

// The names of the tables in experiments/tables (from the workspace under
// `bazel run`), sorted.
absl::StatusOr<std::vector<std::string>> TableNames();

// Reads experiments/tables/<name>.pbtxt (from the workspace under `bazel run`)
// and checks its claims (ValidateClaims) and selection (ValidateSelection).
absl::StatusOr<TableSpec> LoadTable(const std::string& name);

// Every claim names rows of the table (row_a; row_b empty or a row), a
// column and a direction, and a claim within one row compares two
// different columns (column_b set).
absl::Status ValidateClaims(const TableSpec& table);

// A sweep's rule is complete (selection.column and selection.expect set)
// and has candidates (some row has a group), and no row has a group in a
// table without a rule: candidates whose rule is not fixed before running
// would be chosen after seeing the numbers.
absl::Status ValidateSelection(const TableSpec& table);

// The row's spec (its own `spec`, else the table's base or paper-scale base)
// with its spec_overrides merged in, resolved and validated. With
// `validate` false (paper-scale specs whose data is elsewhere) it is only
// resolved.
absl::StatusOr<ExperimentSpec> RowSpec(const TableSpec& table, const TableRow& row,
                                       bool paper_scale, bool validate = true);

}  // namespace moelab

#endif  // MOELAB_EXPERIMENTS_TABLE_ROWS_H_
