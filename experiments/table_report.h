#ifndef MOELAB_EXPERIMENTS_TABLE_REPORT_H_
#define MOELAB_EXPERIMENTS_TABLE_REPORT_H_

// Turns the runs of a paper table into its report: per-row mean and standard
// deviation over seeds beside the paper's numbers, the claims checked, and
// the data behind the pictures. Pure functions of RunResults, so they are
// tested without training anything.

#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "proto/result.pb.h"
#include "proto/table.pb.h"

namespace moelab {

// One row's runs, one per seed, in seed order.
struct RowRuns {
  const TableRow* row = nullptr;
  std::vector<RunResult> runs;
};

// The value of `column` in one run; false when the run does not have it
// (e.g. perplexity of a vision run, fluctuation after a single epoch).
bool ColumnValue(const RunResult& run, Column column, double* value);

struct Stat {
  double mean = 0;
  double std = 0;  // sample standard deviation (n - 1); 0 for one run
  int n = 0;
};

Stat ColumnStat(const RowRuns& row, Column column);

// "Perplexity (valid)", "Fluctuation top-1 (%)", ...
std::string ColumnTitle(Column column);

// Whether our runs point the same way as the claim: "yes", "no", or
// "yes (within noise)" when the difference is below the larger std.
std::string ClaimVerdict(const Claim& claim, const std::vector<RowRuns>& rows);

// The Markdown report: settings, table with ours (mean ± std over seeds)
// and the paper's values labelled as the paper's, claims and verdicts,
// notes on non-causal rows, pictures.
std::string RenderMarkdown(const TableSpec& table, const std::vector<RowRuns>& rows,
                           const std::vector<std::string>& pictures);

// row,column,mean,std,n,paper_value
std::string RenderCsv(const TableSpec& table, const std::vector<RowRuns>& rows);

}  // namespace moelab

#endif  // MOELAB_EXPERIMENTS_TABLE_REPORT_H_
