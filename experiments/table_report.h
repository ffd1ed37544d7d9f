#ifndef MOELAB_EXPERIMENTS_TABLE_REPORT_H_
#define MOELAB_EXPERIMENTS_TABLE_REPORT_H_

// Turns the runs of a paper table into its report: per-row mean and standard
// deviation over seeds beside the paper's numbers, the claims judged on
// per-seed paired differences, the code revision the runs come from, and
// the data behind the pictures. Pure functions of RunResults, so they are
// tested without training anything.

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "core/statistics.h"
#include "proto/result.pb.h"
#include "proto/table.pb.h"

namespace moelab {

// One row's runs, one per seed, in seed order.
struct RowRuns {
  const TableRow* row = nullptr;
  std::vector<RunResult> runs;
};

// The value of `column` in one run; false when the run does not have it
// (e.g. perplexity of a vision run, fluctuation after a single epoch,
// aggregation diagnostics of a router that does not aggregate). The routing
// columns that describe the end of training (entropies, load CV,
// aggregation) come from the final whole-validation-split evaluation
// (final.layers), so one row's columns describe the same tokens; only
// results without final layers (written before they were recorded) fall
// back to the last epoch's. Fluctuation and head change compare epochs and
// come from the last epoch.
bool ColumnValue(const RunResult& run, Column column, double* value);

struct Stat {
  double mean = 0;
  double std = 0;  // sample standard deviation (n - 1); 0 for one run
  int n = 0;
};

Stat ColumnStat(const RowRuns& row, Column column);

// A registered layer metric's value in a run (TableSpec.layer_metrics): the
// mean over MoE layers of LayerRoutingMetrics.values[name] at the final
// evaluation (the last epoch's when the final one has no layers), times the
// metric's table_scale; false when no layer has it.
bool LayerMetricValue(const RunResult& run, const std::string& name, double* value);
Stat LayerMetricStat(const RowRuns& row, const std::string& name);

// Each of table.layer_metrics must be a registered layer metric; the error
// names the unknown one and the registered ones.
absl::Status ValidateLayerMetrics(const TableSpec& table);

// "Perplexity (valid)", "Fluctuation top-1 (%)", ...
std::string ColumnTitle(Column column);

// The registered layer metric a built-in column reads (GATE_ENTROPY:
// "gate_entropy"); empty for a column that reads none.
std::string ColumnMetric(Column column);

// What a claim or a sweep's selection compares in each run: a built-in
// column, or a registered per-layer metric as LayerMetricValue reads it.
// A Column converts to one.
struct Measure {
  Measure(Column column) : column(column) {}  // NOLINT(runtime/explicit)
  static Measure LayerMetric(std::string name) {
    Measure m(COLUMN_UNSPECIFIED);
    m.layer_metric = std::move(name);
    return m;
  }
  // The same quantity: a column that reads a registered metric
  // (GATE_ENTROPY reads "gate_entropy") equals that metric.
  bool operator==(const Measure& other) const;

  Column column = COLUMN_UNSPECIFIED;
  std::string layer_metric;  // set exactly when column is unspecified
};

bool MeasureValue(const RunResult& run, const Measure& measure, double* value);
Stat MeasureStat(const RowRuns& row, const Measure& measure);
// ColumnTitle, or the metric's registered title.
std::string MeasureTitle(const Measure& measure);

// A claim's two sides: row_a's (column or layer_metric) and row_b's
// (column_b or layer_metric_b; with neither, row_a's).
Measure ClaimMeasureA(const Claim& claim);
Measure ClaimMeasureB(const Claim& claim);
// A sweep's rule: selection.column or selection.layer_metric.
Measure SelectionMeasure(const Selection& selection);

// Per-seed paired differences a - b: the runs of `a` and `b` with the same
// spec.seed() that both have a value (a's in `column_a`, b's in
// `measure_b`), their mean, and its 95% two-sided Student-t interval
// mean ± t(0.975, n - 1) * sd / sqrt(n). With n < 2 the interval is
// unknown (lo = -inf, hi = +inf). A row with two runs of one seed leaves
// the pairing undefined: then `duplicate` says so ("duplicate seed 3 in row
// 'sim'") and nothing is paired (n = 0).
struct PairedDifference {
  std::vector<uint64_t> seeds;  // the paired seeds, ascending
  int n = 0;
  double mean = 0;
  double lo = 0;
  double hi = 0;
  std::string duplicate;
};

PairedDifference PairedDifferences(const RowRuns& a, const Measure& measure_a, const RowRuns& b,
                                   const Measure& measure_b);

// A claim judged on its paired differences (see proto/table.proto Claim).
struct ClaimJudgement {
  // "yes" (the interval excludes 0 in the expected direction), "opposite"
  // (it excludes 0 the other way), "inconclusive" (it contains 0, or fewer
  // than 2 pairs), "n/a (row missing)", or "n/a (duplicate seed S in row
  // 'X')" (PairedDifference::duplicate).
  std::string verdict;
  PairedDifference difference;
};

ClaimJudgement JudgeClaim(const Claim& claim, const std::vector<RowRuns>& rows);

// The code revision a run comes from (RunResult.source): its `revision`,
// "unknown" when it was not run from a git checkout, and
// kRevisionBeforeProvenance for runs written before sources were recorded.
inline constexpr char kRevisionBeforeProvenance[] = "unknown (before provenance)";
std::string RunRevision(const RunResult& run);

// The distinct revisions of a row's runs, sorted.
std::vector<std::string> RowRevisions(const RowRuns& row);

// OK when every run of every row (training-free rows' source runs are rows
// of the table too) comes from one code revision; otherwise
// FailedPreconditionError listing each row's revisions and seeds.
absl::Status CheckSingleRevision(const TableSpec& table, const std::vector<RowRuns>& rows);

// A training-free row evaluates the checkpoints of another row's runs. What
// identifies such a source run, independent of the file system (copying,
// rsync or a checkout reorders file times) and of wall-clock fields: its
// spec hash, code revision, number of epochs, last step and final
// validation loss (which also tells a run repeated with other threads, not
// part of the spec hash, from the first). One line. reproduce writes it to
// kSourceRunRecord beside a training-free run's result.json when it makes
// the run.
inline constexpr char kSourceRunRecord[] = "source_run.txt";
std::string SourceRunIdentity(const RunResult& source);

// Why a cached training-free run must be made again, "" when it stands:
// `recorded` is what its kSourceRunRecord holds (nullopt when it has none:
// made before reproduce recorded it, or interrupted before it did) and
// `current` the SourceRunIdentity of the completed run of row `source_row`
// now. Surrounding whitespace in `recorded` does not count.
std::string TrainingFreeRerunReason(const std::string& source_row,
                                    const std::optional<std::string>& recorded,
                                    const std::string& current);

// One point per MoE layer and seed of the row's runs (last epoch, layers
// that have a fluctuation): x the entropy of the distribution the router
// selects on (H(p) for routers that aggregate, H(r) otherwise, nats), y the
// top-1 fluctuation (%).
std::vector<std::pair<double, double>> EntropyFluctuationPoints(const RowRuns& row);

// The Markdown section on entropy vs fluctuation: Pearson r and n within
// each row (one router), and pooled over all rows, labelled as such.
std::string RenderEntropyVsFluctuation(const std::vector<RowRuns>& rows);

// Whether the row's aggregation is effectively the identity in some run
// (RunResult.identity_aggregation_layers): the rows the report marks ‡ and
// a selection with exclude_identity_aggregation leaves out.
bool RowHasIdentityAggregation(const RowRuns& row);

// --- Fluctuation per epoch -------------------------------------------------
//
// The graph-of-tokens paper's headline is the fluctuation "at the late
// stage of training", between its last two epochs; the curve over all
// epochs shows whether that last figure is a plateau or a point on a slope.

// Whether the table reports fluctuation (a FLUCTUATION_TOP1 or
// FLUCTUATION_TOPK column): then the report has a "Fluctuation per epoch"
// section.
bool HasFluctuationColumn(const TableSpec& table);

// The fluctuation of one epoch in percent: the share of probe tokens whose
// top-1 expert (`top_k` false) or selected expert set (`top_k` true) changed
// since the previous epoch, mean over the MoE layers that have one
// (has_fluctuation). False for an epoch without (the first epoch).
bool EpochFluctuation(const EpochMetrics& epoch, bool top_k, double* percent);

struct FluctuationCell {
  int epoch = 0;  // the change from epoch - 1 to epoch
  // Over the row's seeds that have this epoch: mean and the half-width of
  // its 95% Student-t interval (MeanWithInterval95, the claims' helper;
  // +infinity for one seed), in percent.
  MeanInterval interval;
};

struct FluctuationCurve {
  const RowRuns* row = nullptr;
  std::vector<FluctuationCell> cells;  // ascending epoch
};

// One curve per row that has per-epoch fluctuation (training-free rows
// have no epochs and no curve), in row order.
std::vector<FluctuationCurve> FluctuationCurves(const std::vector<RowRuns>& rows, bool top_k);

// The last epoch any curve reaches (the paper's figure compares it with the
// one before); 0 when there is none.
int LastFluctuationEpoch(const std::vector<FluctuationCurve>& curves);

// Long format, one line per row, seed and epoch with a fluctuation, values
// in percent: row,seed,epoch,top1,topk
std::string RenderFluctuationCsv(const std::vector<RowRuns>& rows);

// Where the section's picture and data are, for its links; empty: not there
// (the picture could not be drawn, or no data file was written).
struct FluctuationFiles {
  std::string png;
  std::string csv;
};

// The Markdown section "Fluctuation per epoch" (top-1; also top-k set when
// the table has a FLUCTUATION_TOPK column); "" when no row has per-epoch
// fluctuation.
std::string RenderFluctuationPerEpoch(const TableSpec& table, const std::vector<RowRuns>& rows,
                                      const FluctuationFiles& files);

// --- Selection in sweep tables -------------------------------------------

struct SelectionCandidate {
  const RowRuns* row = nullptr;
  Stat stat;  // the selection column over the row's seeds
  // Eligible rows compete; `why_not` says why a row does not.
  bool eligible = false;
  std::string why_not;
};

struct GroupSelection {
  std::string group;
  // Eligible rows best first (ties keep table order), then the others in
  // table order.
  std::vector<SelectionCandidate> candidates;
  // The first candidate when it is eligible; nullptr when none is.
  const RowRuns* chosen = nullptr;
};

// Applies the table's selection rule (TableSpec.selection) within each
// group (TableRow.group), groups in order of first appearance; empty
// without a selection.
std::vector<GroupSelection> SelectRows(const TableSpec& table, const std::vector<RowRuns>& rows);

// The Markdown section "Selection (rule fixed in the table spec before
// running)"; "" without a selection.
std::string RenderSelection(const TableSpec& table, const std::vector<RowRuns>& rows);

// The Markdown report: settings (with the code revision), table with ours
// (mean ± std over seeds) and the paper's values labelled as the paper's,
// claims judged on paired differences, notes on non-causal rows and rows
// whose aggregation is the identity, the fluctuation per epoch (tables
// with a fluctuation column), the selection (sweep tables), pictures.
std::string RenderMarkdown(const TableSpec& table, const std::vector<RowRuns>& rows,
                           const std::vector<std::string>& pictures,
                           const FluctuationFiles& fluctuation_files = {});

// row,column,mean,std,n,paper_value,revisions
std::string RenderCsv(const TableSpec& table, const std::vector<RowRuns>& rows);

}  // namespace moelab

#endif  // MOELAB_EXPERIMENTS_TABLE_REPORT_H_
