#include "experiments/table_report.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <optional>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/strip.h"
#include "core/layer_metric.h"
#include "core/provenance.h"
#include "core/routing_metrics.h"
#include "core/statistics.h"

namespace moelab {
namespace {

const PaperValue* FindPaperValue(const TableRow& row, Column column) {
  for (const PaperValue& p : row.paper()) {
    if (p.column() == column) return &p;
  }
  return nullptr;
}

const RowRuns* FindRow(const std::vector<RowRuns>& rows, const std::string& label) {
  for (const RowRuns& r : rows) {
    if (r.row->label() == label) return &r;
  }
  return nullptr;
}

bool IsPercent(Column c) {
  return c == VALID_ACCURACY || c == TEST_ACCURACY || c == FLUCTUATION_TOP1 ||
         c == FLUCTUATION_TOPK || c == CORRUPTION_EXPERT_CHANGE || c == HEAD_CHANGE;
}

// Decimals shown for a column's values: whole seconds, one decimal for
// percentages, three where the third matters (a self-weight of 0.995 is
// the identity, 0.95 is not; a leak of 0.004 nats/token), two otherwise,
// and for expert GFLOPs (a CPU-scale model spends ~0.0003 per token)
// enough for three significant digits.
// Decimals for a value of `measure`: a registered metric gets 3, or as
// many as show two significant digits of a smaller mean.
int DecimalsFor(const Measure& measure, double mean) {
  if (!measure.layer_metric.empty()) {
    if (mean > 0 && mean < 0.01)
      return std::min(9, 1 - static_cast<int>(std::floor(std::log10(mean))));
    return 3;
  }
  const Column column = measure.column;
  if (column == WALL_TIME_S) return 0;
  if (IsPercent(column)) return 1;
  if (column == AGGREGATION_SELF_WEIGHT || column == LEAK_NLL_GAP) return 3;
  if (column == EXPERT_GFLOPS_PER_TOKEN && mean > 0 && mean < 1) {
    return std::min(9, 2 - static_cast<int>(std::floor(std::log10(mean))));
  }
  return 2;
}

// Mean of `field` over `layers`, skipping those without `has` (when given);
// false when no layer counts.
bool LayerMean(const google::protobuf::RepeatedPtrField<LayerRoutingMetrics>& layers,
               double (LayerRoutingMetrics::*field)() const,
               bool (LayerRoutingMetrics::*has)() const, double* mean) {
  double sum = 0;
  int n = 0;
  for (const LayerRoutingMetrics& l : layers) {
    if (has != nullptr && !(l.*has)()) continue;
    sum += (l.*field)();
    ++n;
  }
  if (n == 0) return false;
  *mean = sum / n;
  return true;
}

bool LastEpochLayerMean(const RunResult& run, double (LayerRoutingMetrics::*field)() const,
                        bool (LayerRoutingMetrics::*has)() const, double* mean) {
  if (run.epochs_size() == 0) return false;
  return LayerMean(run.epochs(run.epochs_size() - 1).layers(), field, has, mean);
}

// The routing at the end, for every column that does not compare epochs:
// the final evaluation's layers, over the whole validation split (training-
// free runs have no epochs). Results without them, written before the final
// evaluation recorded its layers, fall back to the last epoch's, which
// cover only the evaluation.max_eval_batches batches of that epoch's
// evaluation.
const google::protobuf::RepeatedPtrField<LayerRoutingMetrics>& EndOfTrainingLayers(
    const RunResult& run) {
  if (run.final().layers_size() > 0 || run.epochs_size() == 0) return run.final().layers();
  return run.epochs(run.epochs_size() - 1).layers();
}

}  // namespace

bool ColumnValue(const RunResult& run, Column column, double* value) {
  const FinalMetrics& f = run.final();
  // A task that reports perplexity (language modelling) is judged on it, any
  // other on accuracy; valid_perplexity is set exactly when the task has it.
  const bool language = f.valid_perplexity() > 0;
  using L = LayerRoutingMetrics;
  switch (column) {
    case VALID_PERPLEXITY:
      *value = f.valid_perplexity();
      return language;
    case TEST_PERPLEXITY:
      *value = f.test_perplexity();
      return language && f.test_perplexity() > 0;
    case GENERATION_PERPLEXITY:
      // Measured on the same validation subset for every router (0 in
      // results written before causal routers reported it: n/a, not the
      // full-set figure, which would not compare).
      *value = f.generation_perplexity();
      return language && f.generation_perplexity() > 0;
    case VALID_ACCURACY:
      *value = 100 * f.valid_accuracy();
      return !language;
    case TEST_ACCURACY:
      *value = 100 * f.test_accuracy();
      return !language && f.test_accuracy() > 0;
    case FLUCTUATION_TOP1:
      if (!LastEpochLayerMean(run, &L::fluctuation_top1, &L::has_fluctuation, value)) {
        return false;
      }
      *value *= 100;
      return true;
    case FLUCTUATION_TOPK:
      if (!LastEpochLayerMean(run, &L::fluctuation_topk, &L::has_fluctuation, value)) {
        return false;
      }
      *value *= 100;
      return true;
    // Entropies, load and aggregation describe the same tokens
    // (EndOfTrainingLayers), so a within-row claim such as H(p) < H(r)
    // compares like with like.
    case GATE_ENTROPY:
    case AGGREGATED_ENTROPY:
    case AGGREGATION_SELF_WEIGHT:
    case AGGREGATION_EFFECTIVE_NEIGHBOURS:
      return LayerMetricValue(run, ColumnMetric(column), value);
    case LOAD_CV:
      return LayerMean(EndOfTrainingLayers(run), &L::load_cv, nullptr, value);
    case EXPERTS_PER_TOKEN:
      *value = f.experts_per_token();
      return true;
    case CORRUPTED_METRIC: {
      if (f.corrupted_size() == 0) return false;
      double sum = 0;
      for (const CorruptedMetrics& c : f.corrupted()) {
        sum += language ? c.perplexity() : 100 * c.accuracy();
      }
      *value = sum / f.corrupted_size();
      return true;
    }
    case CORRUPTION_EXPERT_CHANGE: {
      double sum = 0;
      int n = 0;
      for (const CorruptedMetrics& c : f.corrupted()) {
        if (c.expert_change() >= 0) {
          sum += c.expert_change();
          ++n;
        }
      }
      if (n == 0) return false;
      *value = 100 * sum / n;
      return true;
    }
    case WALL_TIME_S:
      *value = run.wall_time_s();
      return true;
    case EXPERT_GFLOPS_PER_TOKEN:
      *value = f.expert_flops_per_token() / 1e9;
      return true;
    // Head change, like fluctuation, compares two epochs' probe routing.
    case HEAD_CHANGE:
      if (!LastEpochLayerMean(run, &L::head_change, &L::has_head_change, value)) return false;
      *value *= 100;
      return true;
    case LEAK_NLL_GAP:
      *value = f.leak_nll_gap();
      return f.leak_sequences() > 0;
    default:
      return false;
  }
}

namespace {

Stat StatOf(const std::vector<double>& values) {
  Stat s;
  s.n = values.size();
  if (values.empty()) return s;
  for (double v : values) s.mean += v;
  s.mean /= values.size();
  if (values.size() > 1) {
    double sq = 0;
    for (double v : values) sq += (v - s.mean) * (v - s.mean);
    s.std = std::sqrt(sq / (values.size() - 1));
  }
  return s;
}

double LayerMetricScale(const std::string& name) {
  absl::StatusOr<const LayerMetricRegistration*> metric = LayerMetricRegistry().Find(name);
  return metric.ok() ? (*metric)->table_scale : 1;
}

std::string LayerMetricTitle(const std::string& name) {
  absl::StatusOr<const LayerMetricRegistration*> metric = LayerMetricRegistry().Find(name);
  return metric.ok() && !(*metric)->title.empty() ? (*metric)->title : name;
}

}  // namespace

std::string ColumnMetric(Column column) {
  switch (column) {
    case GATE_ENTROPY:
      return kGateEntropyMetric;
    case AGGREGATED_ENTROPY:
      return kAggregatedEntropyMetric;
    case AGGREGATION_SELF_WEIGHT:
      return kAggregationSelfWeightMetric;
    case AGGREGATION_EFFECTIVE_NEIGHBOURS:
      return kAggregationEffectiveNeighboursMetric;
    default:
      return "";
  }
}

bool Measure::operator==(const Measure& other) const {
  auto metric = [](const Measure& m) {
    return m.layer_metric.empty() ? ColumnMetric(m.column) : m.layer_metric;
  };
  if (!metric(*this).empty() || !metric(other).empty()) return metric(*this) == metric(other);
  return column == other.column;
}

Stat MeasureStat(const RowRuns& row, const Measure& measure) {
  std::vector<double> values;
  for (const RunResult& run : row.runs) {
    double v;
    if (MeasureValue(run, measure, &v)) values.push_back(v);
  }
  return StatOf(values);
}

bool MeasureValue(const RunResult& run, const Measure& measure, double* value) {
  return measure.layer_metric.empty() ? ColumnValue(run, measure.column, value)
                                      : LayerMetricValue(run, measure.layer_metric, value);
}

std::string MeasureTitle(const Measure& measure) {
  return measure.layer_metric.empty() ? ColumnTitle(measure.column)
                                      : LayerMetricTitle(measure.layer_metric);
}

Measure ClaimMeasureA(const Claim& claim) {
  return claim.layer_metric().empty() ? Measure(claim.column())
                                      : Measure::LayerMetric(claim.layer_metric());
}

Measure ClaimMeasureB(const Claim& claim) {
  if (claim.column_b() != COLUMN_UNSPECIFIED) return claim.column_b();
  if (!claim.layer_metric_b().empty()) return Measure::LayerMetric(claim.layer_metric_b());
  return ClaimMeasureA(claim);
}

Measure SelectionMeasure(const Selection& selection) {
  return selection.layer_metric().empty() ? Measure(selection.column())
                                          : Measure::LayerMetric(selection.layer_metric());
}

Stat ColumnStat(const RowRuns& row, Column column) {
  std::vector<double> values;
  for (const RunResult& run : row.runs) {
    double v;
    if (ColumnValue(run, column, &v)) values.push_back(v);
  }
  return StatOf(values);
}

bool LayerMetricValue(const RunResult& run, const std::string& name, double* value) {
  const auto& layers = EndOfTrainingLayers(run);
  double sum = 0;
  int n = 0;
  for (const LayerRoutingMetrics& layer : layers) {
    const auto found = layer.values().find(name);
    if (found == layer.values().end()) continue;
    sum += found->second;
    ++n;
  }
  if (n == 0) return false;
  *value = LayerMetricScale(name) * sum / n;
  return true;
}

Stat LayerMetricStat(const RowRuns& row, const std::string& name) {
  std::vector<double> values;
  for (const RunResult& run : row.runs) {
    double v;
    if (LayerMetricValue(run, name, &v)) values.push_back(v);
  }
  return StatOf(values);
}

absl::Status ValidateLayerMetrics(const TableSpec& table) {
  for (const std::string& name : table.layer_metrics()) {
    absl::StatusOr<const LayerMetricRegistration*> metric = LayerMetricRegistry().Find(name);
    if (!metric.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("layer_metrics: ", metric.status().message()));
    }
  }
  return absl::OkStatus();
}

std::string ColumnTitle(Column column) {
  switch (column) {
    case VALID_PERPLEXITY:
      return "Perplexity (valid)";
    case TEST_PERPLEXITY:
      return "Perplexity (test)";
    case GENERATION_PERPLEXITY:
      return "Perplexity (generation-time, valid subset)";
    case VALID_ACCURACY:
      return "Top-1 acc. (valid, %)";
    case TEST_ACCURACY:
      return "Top-1 acc. (test, %)";
    case FLUCTUATION_TOP1:
      return "Fluctuation top-1 (%)";
    case FLUCTUATION_TOPK:
      return "Fluctuation top-k set (%)";
    case GATE_ENTROPY:
      return "Entropy H(r) (nats)";
    case AGGREGATED_ENTROPY:
      return "Entropy H(p) (nats)";
    case LOAD_CV:
      return "Load CV";
    case EXPERTS_PER_TOKEN:
      return "Experts/token";
    case CORRUPTED_METRIC:
      return "Under corruption";
    case CORRUPTION_EXPERT_CHANGE:
      return "Experts changed by corruption (%)";
    case WALL_TIME_S:
      return "Wall time (s)";
    case EXPERT_GFLOPS_PER_TOKEN:
      return "Expert GFLOPs/token";
    case AGGREGATION_SELF_WEIGHT:
      return "Aggregation self-weight W_ii";
    case AGGREGATION_EFFECTIVE_NEIGHBOURS:
      return "Aggregation neighbours exp(H(W_i))";
    case HEAD_CHANGE:
      return "Head change (%)";
    case LEAK_NLL_GAP:
      return "Leak: generation-time minus teacher-forced NLL (nats/token)";
    default:
      return Column_Name(column);
  }
}

namespace {

// "duplicate seed 3 in row 'sim'" for each seed the row has more than one
// run of.
void FindDuplicateSeeds(const RowRuns& row, std::vector<std::string>* duplicates) {
  std::map<uint64_t, int> runs_per_seed;
  for (const RunResult& run : row.runs) ++runs_per_seed[run.spec().seed()];
  for (const auto& [seed, count] : runs_per_seed) {
    if (count > 1) {
      duplicates->push_back(absl::StrCat("duplicate seed ", seed, " in row '",
                                         row.row == nullptr ? "" : row.row->label(), "'"));
    }
  }
}

}  // namespace

PairedDifference PairedDifferences(const RowRuns& a, const Measure& measure_a, const RowRuns& b,
                                   const Measure& measure_b) {
  PairedDifference d;
  // Two runs of one seed: which pairs with which is undefined, so nothing is
  // paired and the claim says why.
  std::vector<std::string> duplicates;
  FindDuplicateSeeds(a, &duplicates);
  if (&b != &a) FindDuplicateSeeds(b, &duplicates);
  if (!duplicates.empty()) {
    d.duplicate = absl::StrJoin(duplicates, "; ");
    d.lo = -std::numeric_limits<double>::infinity();
    d.hi = std::numeric_limits<double>::infinity();
    return d;
  }
  std::map<uint64_t, double> b_by_seed;
  for (const RunResult& run : b.runs) {
    double v;
    if (MeasureValue(run, measure_b, &v)) b_by_seed[run.spec().seed()] = v;
  }
  std::map<uint64_t, double> differences;
  for (const RunResult& run : a.runs) {
    double v;
    auto other = b_by_seed.find(run.spec().seed());
    if (other == b_by_seed.end() || !MeasureValue(run, measure_a, &v)) continue;
    differences[run.spec().seed()] = v - other->second;
  }
  std::vector<double> values;
  for (const auto& [seed, difference] : differences) {
    d.seeds.push_back(seed);
    values.push_back(difference);
  }
  const MeanInterval interval = MeanWithInterval95(values);
  d.n = interval.n;
  d.mean = interval.mean;
  d.lo = interval.low();
  d.hi = interval.high();
  return d;
}

ClaimJudgement JudgeClaim(const Claim& claim, const std::vector<RowRuns>& rows) {
  ClaimJudgement judgement;
  const RowRuns* a = FindRow(rows, claim.row_a());
  const RowRuns* b = claim.row_b().empty() ? a : FindRow(rows, claim.row_b());
  if (a == nullptr || b == nullptr) {
    judgement.verdict = "n/a (row missing)";
    return judgement;
  }
  judgement.difference = PairedDifferences(*a, ClaimMeasureA(claim), *b, ClaimMeasureB(claim));
  const PairedDifference& d = judgement.difference;
  if (!d.duplicate.empty()) {
    judgement.verdict = absl::StrCat("n/a (", d.duplicate, ")");
    return judgement;
  }
  // Which side of 0 the interval lies on, if it excludes 0: -1 below, +1 above.
  const int side = d.n < 2 ? 0 : d.hi < 0 ? -1 : d.lo > 0 ? 1 : 0;
  const int expected = claim.expect() == A_LOWER ? -1 : claim.expect() == A_HIGHER ? 1 : 0;
  judgement.verdict = side == 0 || expected == 0 ? "inconclusive"
                      : side == expected         ? "yes"
                                                 : "opposite";
  return judgement;
}

std::string RunRevision(const RunResult& run) {
  const SourceRevision& source = run.source();
  if (!run.has_source() || (source.revision().empty() && source.commit().empty())) {
    return kRevisionBeforeProvenance;
  }
  return source.revision().empty() ? RevisionLabel(source) : source.revision();
}

std::vector<std::string> RowRevisions(const RowRuns& row) {
  std::set<std::string> revisions;
  for (const RunResult& run : row.runs) revisions.insert(RunRevision(run));
  return {revisions.begin(), revisions.end()};
}

absl::Status CheckSingleRevision(const TableSpec& table, const std::vector<RowRuns>& rows) {
  std::set<std::string> all;
  for (const RowRuns& row : rows) {
    for (const RunResult& run : row.runs) all.insert(RunRevision(run));
  }
  if (all.size() <= 1) return absl::OkStatus();
  std::vector<std::string> lines;
  for (const RowRuns& row : rows) {
    std::map<std::string, std::vector<uint64_t>> seeds_by_revision;
    for (const RunResult& run : row.runs) {
      seeds_by_revision[RunRevision(run)].push_back(run.spec().seed());
    }
    std::vector<std::string> parts;
    for (const auto& [revision, seeds] : seeds_by_revision) {
      parts.push_back(absl::StrCat(revision, " (seed", seeds.size() > 1 ? "s " : " ",
                                   absl::StrJoin(seeds, ", "), ")"));
    }
    lines.push_back(absl::StrCat("  row '", row.row->label(), "': ", absl::StrJoin(parts, "; "),
                                 row.row->init_from_row().empty()
                                     ? ""
                                     : absl::StrCat(" (evaluating the checkpoints of row '",
                                                    row.row->init_from_row(), "')")));
  }
  return absl::FailedPreconditionError(
      absl::StrCat("table '", table.name(), "': its runs come from ", all.size(),
                   " code revisions (", absl::StrJoin(all, ", "),
                   "), and numbers from different code "
                   "do not compare:\n",
                   absl::StrJoin(lines, "\n"),
                   "\nRe-run the stale runs with --rerun_stale, or render anyway with "
                   "--allow_mixed_revisions."));
}

std::string SourceRunIdentity(const RunResult& source) {
  const int64_t step =
      source.epochs_size() == 0 ? 0 : source.epochs(source.epochs_size() - 1).step();
  // 12 significant digits: a repeated run that trained differently differs
  // far earlier, and the loss survives result.json's round trip.
  return absl::StrFormat("spec_hash=%s revision=%s epochs=%d step=%d valid_loss=%.12g",
                         source.spec_hash(), RunRevision(source), source.epochs_size(), step,
                         source.final().valid_loss());
}

std::string TrainingFreeRerunReason(const std::string& source_row,
                                    const std::optional<std::string>& recorded,
                                    const std::string& current) {
  if (!recorded.has_value()) {
    return absl::StrCat("it records no run of row '", source_row, "' (no ", kSourceRunRecord,
                        "), so which checkpoint it evaluated is unknown");
  }
  const absl::string_view then = absl::StripAsciiWhitespace(*recorded);
  if (then == absl::StripAsciiWhitespace(current)) return "";
  return absl::StrCat("it evaluated another run of row '", source_row, "' (", then,
                      ") than the one there now (", current, ")");
}

std::vector<std::pair<double, double>> EntropyFluctuationPoints(const RowRuns& row) {
  std::vector<std::pair<double, double>> points;
  for (const RunResult& run : row.runs) {
    if (run.epochs_size() == 0) continue;
    for (const LayerRoutingMetrics& l : run.epochs(run.epochs_size() - 1).layers()) {
      if (!l.has_fluctuation()) continue;
      // Routers that aggregate select on p, so p's entropy is the one that matters.
      std::optional<double> h = LayerValue(l, kAggregatedEntropyMetric);
      if (!h) h = LayerValue(l, kGateEntropyMetric);
      if (h) points.emplace_back(*h, 100 * l.fluctuation_top1());
    }
  }
  return points;
}

namespace {

// "0.873" or "–" when fewer than 3 points (two points always give ±1).
std::string FormatCorrelation(const std::vector<std::pair<double, double>>& points) {
  if (points.size() < 3) return "–";
  std::vector<double> x, y;
  for (const auto& [entropy, fluctuation] : points) {
    x.push_back(entropy);
    y.push_back(fluctuation);
  }
  return absl::StrFormat("%.3f", PearsonCorrelation(x, y));
}

}  // namespace

std::string RenderEntropyVsFluctuation(const std::vector<RowRuns>& rows) {
  std::string md =
      "\n## Entropy vs fluctuation per layer (last epoch)\n\n"
      "One point per MoE layer and seed: the entropy of the distribution the router selects "
      "on (H(p) for routers that aggregate, H(r) otherwise) against the top-1 fluctuation. "
      "*Within the row* is the Pearson r over one router's points; *pooled over all rows* "
      "mixes the routers, whose points form separate clusters, so it also measures that the "
      "routers differ, not only that entropy and fluctuation go together within a router. "
      "r is not given below 3 points.\n\n"
      "| Row | Scope | n (layers × seeds) | Pearson r (entropy, fluctuation) |\n"
      "| --- | --- | --- | --- |\n";
  std::vector<std::pair<double, double>> pooled;
  for (const RowRuns& row : rows) {
    const std::vector<std::pair<double, double>> points = EntropyFluctuationPoints(row);
    pooled.insert(pooled.end(), points.begin(), points.end());
    absl::StrAppend(&md, "| ", row.row->label(), " | within the row | ", points.size(), " | ",
                    FormatCorrelation(points), " |\n");
  }
  absl::StrAppend(&md, "| all rows | pooled over all rows | ", pooled.size(), " | ",
                  FormatCorrelation(pooled), " |\n");
  return md;
}

namespace {

// Decimals for a paired difference: the column's own, or more so that the
// interval's half-width shows two significant digits.
int DifferenceDecimals(const Measure& measure, const PairedDifference& d) {
  int digits = DecimalsFor(measure, std::abs(d.mean));
  const double half_width = 0.5 * (d.hi - d.lo);
  if (std::isfinite(half_width) && half_width > 0) {
    digits = std::max(digits, 1 - static_cast<int>(std::floor(std::log10(half_width))));
  }
  return std::min(digits, 9);
}

// What a claim compares: "A − B, Column", or "A: Column − Column_b" within a
// row, or "A, Column − B, Column_b".
std::string ClaimComparison(const Claim& claim) {
  const Measure a = ClaimMeasureA(claim), b = ClaimMeasureB(claim);
  const bool within_row = claim.row_b().empty() || claim.row_b() == claim.row_a();
  if (within_row) {
    return absl::StrCat(claim.row_a(), ": ", MeasureTitle(a), " − ", MeasureTitle(b));
  }
  if (a == b) return absl::StrCat(claim.row_a(), " − ", claim.row_b(), ", ", MeasureTitle(a));
  return absl::StrCat(claim.row_a(), ", ", MeasureTitle(a), " − ", claim.row_b(), ", ",
                      MeasureTitle(b));
}

std::string RenderClaims(const TableSpec& table, const std::vector<RowRuns>& rows) {
  std::string md =
      "\n## Claims\n\n"
      "Each claim is judged on per-seed paired differences a − b (runs with the same seed "
      "share data order and initialisation; only seeds both sides have are paired): their "
      "mean, the 95% two-sided Student-t interval of the mean (n − 1 degrees of freedom) and "
      "the number of pairs n. *yes*: the interval excludes 0 in the paper's direction; "
      "*opposite*: it excludes 0 the other way; *inconclusive*: it contains 0, or n < 2.\n\n"
      "| The paper says | a − b | Paper expects | Mean a − b | 95% interval | n | Verdict |\n"
      "| --- | --- | --- | --- | --- | --- | --- |\n";
  for (const Claim& claim : table.claims()) {
    const ClaimJudgement j = JudgeClaim(claim, rows);
    const PairedDifference& d = j.difference;
    const int digits = DifferenceDecimals(ClaimMeasureA(claim), d);
    const std::string mean = d.n == 0 ? "–" : absl::StrFormat("%.*f", digits, d.mean);
    const std::string interval =
        d.n < 2 ? "–" : absl::StrFormat("[%.*f, %.*f]", digits, d.lo, digits, d.hi);
    absl::StrAppend(&md, "| ", claim.text(), " | ", ClaimComparison(claim), " | ",
                    claim.expect() == A_LOWER    ? "< 0"
                    : claim.expect() == A_HIGHER ? "> 0"
                                                 : "?",
                    " | ", mean, " | ", interval, " | ", d.n, " | ", j.verdict, " |\n");
  }
  return md;
}

bool RowIsNonCausal(const RowRuns& row) {
  for (const RunResult& run : row.runs) {
    if (run.non_causal_router_in_causal_model()) return true;
  }
  return false;
}

// Whether the row's router is an aggregation ablation (p = r on purpose).
bool AblatesAggregation(const RowRuns& row) {
  for (const RunResult& run : row.runs) {
    const RouterSpec& router = run.spec().router();
    if (router.similarity_aware().ablate_aggregation() ||
        router.attention_aware().ablate_aggregation()) {
      return true;
    }
  }
  return false;
}

// For a row whose aggregation is the identity in some run, each flagged
// layer with its own self-weight from the final evaluation (final.layers,
// where the flag comes from), the mean over the seeds that flag it:
// "MoE layer 0: self-weight 0.9970 in 2 of 3 seeds; MoE layer 1: ...".
// Empty when no run flags a layer.
std::string IdentityAggregation(const RowRuns& row) {
  struct Flagged {
    int seeds = 0;
    double self_weight_sum = 0;
    int self_weights = 0;
  };
  std::map<int, Flagged> layers;
  for (const RunResult& run : row.runs) {
    const std::set<int> flagged(run.identity_aggregation_layers().begin(),
                                run.identity_aggregation_layers().end());
    for (int layer : flagged) {
      Flagged& f = layers[layer];
      ++f.seeds;
      for (const LayerRoutingMetrics& l : run.final().layers()) {
        const std::optional<double> self_weight = LayerValue(l, kAggregationSelfWeightMetric);
        if (l.layer() == layer && self_weight) {
          f.self_weight_sum += *self_weight;
          ++f.self_weights;
          break;
        }
      }
    }
  }
  std::vector<std::string> parts;
  for (const auto& [layer, f] : layers) {
    const std::string seeds =
        absl::StrCat(f.seeds, " of ", row.runs.size(), row.runs.size() > 1 ? " seeds" : " seed");
    parts.push_back(
        f.self_weights == 0
            ? absl::StrCat("MoE layer ", layer, " in ", seeds, " (self-weight not recorded)")
            : absl::StrFormat("MoE layer %d: self-weight %.4f in %s", layer,
                              f.self_weight_sum / f.self_weights, seeds));
  }
  return absl::StrJoin(parts, "; ");
}

}  // namespace

bool RowHasIdentityAggregation(const RowRuns& row) {
  for (const RunResult& run : row.runs) {
    if (run.identity_aggregation_layers_size() > 0) return true;
  }
  return false;
}

bool HasFluctuationColumn(const TableSpec& table) {
  for (int c : table.columns()) {
    if (c == FLUCTUATION_TOP1 || c == FLUCTUATION_TOPK) return true;
  }
  return false;
}

bool EpochFluctuation(const EpochMetrics& epoch, bool top_k, double* percent) {
  using L = LayerRoutingMetrics;
  if (!LayerMean(epoch.layers(), top_k ? &L::fluctuation_topk : &L::fluctuation_top1,
                 &L::has_fluctuation, percent)) {
    return false;
  }
  *percent *= 100;
  return true;
}

std::vector<FluctuationCurve> FluctuationCurves(const std::vector<RowRuns>& rows, bool top_k) {
  std::vector<FluctuationCurve> curves;
  for (const RowRuns& row : rows) {
    std::map<int, std::vector<double>> per_epoch;
    for (const RunResult& run : row.runs) {
      for (const EpochMetrics& epoch : run.epochs()) {
        double percent;
        if (EpochFluctuation(epoch, top_k, &percent)) per_epoch[epoch.epoch()].push_back(percent);
      }
    }
    if (per_epoch.empty()) continue;
    FluctuationCurve curve{&row, {}};
    for (const auto& [epoch, values] : per_epoch) {
      curve.cells.push_back({epoch, MeanWithInterval95(values)});
    }
    curves.push_back(std::move(curve));
  }
  return curves;
}

int LastFluctuationEpoch(const std::vector<FluctuationCurve>& curves) {
  int last = 0;
  for (const FluctuationCurve& curve : curves) {
    if (!curve.cells.empty()) last = std::max(last, curve.cells.back().epoch);
  }
  return last;
}

namespace {

// A CSV field: quoted, with quotes doubled (RFC 4180).
std::string CsvField(const std::string& text) {
  return absl::StrCat("\"", absl::StrReplaceAll(text, {{"\"", "\"\""}}), "\"");
}

// The n most cells have, stated once above the table; cells with another n
// say theirs.
int CommonCount(const std::vector<FluctuationCurve>& curves) {
  std::map<int, int> cells_per_n;
  for (const FluctuationCurve& curve : curves) {
    for (const FluctuationCell& cell : curve.cells) ++cells_per_n[cell.interval.n];
  }
  int common = 0, most = 0;
  for (const auto& [n, cells] : cells_per_n) {
    if (cells > most) {
      common = n;
      most = cells;
    }
  }
  return common;
}

// "12.3 ± 1.1"; "12.3" when the interval is undefined (one seed); the
// cell's n in brackets when it is not the table's `common_n`.
std::string FluctuationCellText(const MeanInterval& interval, int common_n) {
  std::string text = std::isfinite(interval.half_width)
                         ? absl::StrFormat("%.1f ± %.1f", interval.mean, interval.half_width)
                         : absl::StrFormat("%.1f", interval.mean);
  if (interval.n != common_n) absl::StrAppend(&text, " (n = ", interval.n, ")");
  return text;
}

// One Markdown table: a line per curve, a column per epoch 2..last, the
// last column bold (the paper's figure).
std::string FluctuationTable(const std::vector<FluctuationCurve>& curves, int common_n) {
  int first = std::numeric_limits<int>::max();
  const int last = LastFluctuationEpoch(curves);
  for (const FluctuationCurve& curve : curves) first = std::min(first, curve.cells.front().epoch);
  std::vector<std::string> header = {"Row"};
  for (int e = first; e <= last; ++e) {
    header.push_back(e == last ? absl::StrCat("**e = ", e, ": the paper's figure**")
                               : absl::StrCat("e = ", e));
  }
  std::string md = absl::StrCat("| ", absl::StrJoin(header, " | "), " |\n| --- |");
  for (int e = first; e <= last; ++e) md += " ---: |";
  md += "\n";
  for (const FluctuationCurve& curve : curves) {
    std::vector<std::string> cells = {curve.row->row->label()};
    for (int e = first; e <= last; ++e) {
      auto cell = std::find_if(curve.cells.begin(), curve.cells.end(),
                               [e](const FluctuationCell& c) { return c.epoch == e; });
      if (cell == curve.cells.end()) {
        cells.push_back("–");
        continue;
      }
      const std::string text = FluctuationCellText(cell->interval, common_n);
      cells.push_back(e == last ? absl::StrCat("**", text, "**") : text);
    }
    absl::StrAppend(&md, "| ", absl::StrJoin(cells, " | "), " |\n");
  }
  return md;
}

}  // namespace

std::string RenderFluctuationCsv(const std::vector<RowRuns>& rows) {
  std::string csv = "row,seed,epoch,top1,topk\n";
  for (const RowRuns& row : rows) {
    for (const RunResult& run : row.runs) {
      for (const EpochMetrics& epoch : run.epochs()) {
        double top1, topk;
        if (!EpochFluctuation(epoch, /*top_k=*/false, &top1)) continue;
        const bool has_topk = EpochFluctuation(epoch, /*top_k=*/true, &topk);
        absl::StrAppendFormat(&csv, "%s,%d,%d,%.6g,%s\n", CsvField(row.row->label()),
                              run.spec().seed(), epoch.epoch(), top1,
                              has_topk ? absl::StrFormat("%.6g", topk) : "");
      }
    }
  }
  return csv;
}

std::string RenderFluctuationPerEpoch(const TableSpec& table, const std::vector<RowRuns>& rows,
                                      const FluctuationFiles& files) {
  const std::vector<FluctuationCurve> top1 = FluctuationCurves(rows, /*top_k=*/false);
  if (top1.empty()) return "";
  const int last = LastFluctuationEpoch(top1);
  const int common_n = CommonCount(top1);
  std::string md = absl::StrFormat(
      "\n## Fluctuation per epoch\n\n"
      "Column e: the share of probe tokens whose top-1 expert changed between epoch e − 1 and "
      "epoch e (%%), the mean over MoE layers, from each run's per-epoch metrics; each cell is "
      "the mean over seeds ± the half-width of its 95%% Student-t interval (n − 1 degrees of "
      "freedom, as for the claims), n = %d %s per cell unless a cell says otherwise%s. "
      "**The last column (epochs %d → %d) is the paper's figure**: the graph-of-tokens paper "
      "reports the fluctuation \"at the late stage of training\", between its last two "
      "epochs, and the table's fluctuation columns above are this same epoch.\n\n",
      common_n, common_n == 1 ? "seed" : "seeds", common_n == 1 ? " (one seed: no interval)" : "",
      last - 1, last);
  md += FluctuationTable(top1, common_n);
  bool topk_column = false;
  for (int c : table.columns()) topk_column |= c == FLUCTUATION_TOPK;
  if (topk_column) {
    const std::vector<FluctuationCurve> topk = FluctuationCurves(rows, /*top_k=*/true);
    if (!topk.empty()) {
      md +=
          "\nThe same for the selected expert set (top-k): the share of probe tokens whose set "
          "of experts changed.\n\n";
      md += FluctuationTable(topk, CommonCount(topk));
    }
  }
  std::vector<std::string> without;
  for (const RowRuns& row : rows) {
    if (std::none_of(top1.begin(), top1.end(),
                     [&](const FluctuationCurve& c) { return c.row == &row; })) {
      without.push_back(row.row->label());
    }
  }
  if (!without.empty()) {
    absl::StrAppend(&md, "\nRows without per-epoch fluctuation (no training epochs): ",
                    absl::StrJoin(without, "; "), ".\n");
  }
  if (!files.png.empty()) {
    absl::StrAppend(
        &md, "\n![Top-1 fluctuation per epoch](", files.png, ")\n\n",
        "*One line per row: the mean over seeds. Shaded: the 95% t-interval of that mean "
        "(the cells above) cut to 0-100%, not the range of single seeds, which widens with "
        "every seed added and estimates nothing. Dashed: the last epoch, the paper's "
        "figure.*\n");
  }
  if (!files.csv.empty()) {
    absl::StrAppend(&md, "\nEvery run's values (row, seed, epoch, top-1 and top-k in %): [",
                    files.csv, "](", files.csv, ").\n");
  }
  return md;
}

std::vector<GroupSelection> SelectRows(const TableSpec& table, const std::vector<RowRuns>& rows) {
  std::vector<GroupSelection> groups;
  if (!table.has_selection()) return groups;
  const Selection& rule = table.selection();
  for (const RowRuns& row : rows) {
    if (row.row->group().empty()) continue;
    auto group = std::find_if(groups.begin(), groups.end(),
                              [&](const GroupSelection& g) { return g.group == row.row->group(); });
    if (group == groups.end()) {
      groups.push_back({row.row->group(), {}, nullptr});
      group = groups.end() - 1;
    }
    SelectionCandidate candidate{&row, MeasureStat(row, SelectionMeasure(rule)), true, ""};
    if (candidate.stat.n == 0) {
      candidate.eligible = false;
      candidate.why_not = "no value";
    } else if (rule.exclude_identity_aggregation() && RowHasIdentityAggregation(row)) {
      candidate.eligible = false;
      candidate.why_not = "aggregation is the identity (‡)";
    }
    group->candidates.push_back(std::move(candidate));
  }
  const bool lower_wins = rule.expect() != A_HIGHER;
  for (GroupSelection& group : groups) {
    // Eligible first, best first; stable, so ties keep the table's order.
    std::stable_sort(group.candidates.begin(), group.candidates.end(),
                     [lower_wins](const SelectionCandidate& a, const SelectionCandidate& b) {
                       if (a.eligible != b.eligible) return a.eligible;
                       if (!a.eligible) return false;
                       return lower_wins ? a.stat.mean < b.stat.mean : a.stat.mean > b.stat.mean;
                     });
    if (!group.candidates.empty() && group.candidates.front().eligible) {
      group.chosen = group.candidates.front().row;
    }
  }
  return groups;
}

std::string RenderSelection(const TableSpec& table, const std::vector<RowRuns>& rows) {
  if (!table.has_selection()) return "";
  const Selection& rule = table.selection();
  const Measure column = SelectionMeasure(rule);
  const bool lower_wins = rule.expect() != A_HIGHER;
  std::string md = absl::StrCat(
      "\n## Selection (rule fixed in the table spec before running)\n\n"
      "Rule (`selection` in experiments/tables/",
      table.name(),
      ".pbtxt, committed before the runs): within each group, the eligible row "
      "with the ",
      lower_wins ? "lowest" : "highest", " mean over seeds of *", MeasureTitle(column), "* wins");
  if (rule.exclude_identity_aggregation()) {
    absl::StrAppendFormat(&md,
                          "; rows whose aggregation is effectively the identity (‡: mean "
                          "self-weight above %g in some layer and seed) are not eligible",
                          kIdentityAggregationSelfWeight);
  }
  md +=
      ". The chosen row is then frozen into the main table by hand: that table's setting "
      "(our_setting) cites this report. Nothing here changes another table.\n";
  for (const GroupSelection& group : SelectRows(table, rows)) {
    absl::StrAppend(&md, "\n### Group \"", group.group, "\"\n\n| Rank | Row | ",
                    MeasureTitle(column),
                    ": mean ± std | n | |\n| --- | --- | --- | --- | --- |\n");
    int rank = 0;
    for (const SelectionCandidate& c : group.candidates) {
      const int digits = DecimalsFor(column, c.stat.mean);
      const std::string value =
          c.stat.n == 0   ? "–"
          : c.stat.n == 1 ? absl::StrFormat("%.*f", digits, c.stat.mean)
                          : absl::StrFormat("%.*f ± %.*f", digits, c.stat.mean, digits, c.stat.std);
      const std::string label =
          absl::StrCat(c.row->row->label(), RowHasIdentityAggregation(*c.row) ? " ‡" : "");
      const std::string verdict = !c.eligible             ? "not eligible: " + c.why_not
                                  : c.row == group.chosen ? "**chosen**"
                                                          : "";
      absl::StrAppend(&md, "| ", c.eligible ? absl::StrCat(++rank) : "–", " | ", label, " | ",
                      value, " | ", c.stat.n, " | ", verdict, " |\n");
    }
    if (group.chosen == nullptr) {
      md += "\nNo row of this group is eligible: nothing is chosen.\n";
      continue;
    }
    absl::StrAppend(&md, "\nChosen: **", group.chosen->row->label(), "**.");
    if (group.candidates.size() > 1 && group.candidates[1].eligible) {
      // How far apart the winner and the runner-up are, on the same seeds:
      // the rule picks the better mean even when the two are not told apart.
      const RowRuns& runner_up = *group.candidates[1].row;
      const PairedDifference d = PairedDifferences(*group.chosen, column, runner_up, column);
      const int digits = DifferenceDecimals(column, d);
      if (d.n >= 2) {
        const bool apart = d.hi < 0 || d.lo > 0;
        absl::StrAppendFormat(
            &md,
            " Chosen − runner-up (%s), paired by seed: %.*f, 95%% interval [%.*f, %.*f], n = %d%s",
            runner_up.row->label(), digits, d.mean, digits, d.lo, digits, d.hi, d.n,
            apart ? "."
                  : " (the interval contains 0: the rule still picks the better mean, "
                    "but at this n the two are not told apart).");
      } else {
        absl::StrAppend(&md, " Chosen − runner-up (", runner_up.row->label(),
                        "), paired by seed: fewer than 2 pairs, no interval.");
      }
    }
    md += "\n";
  }
  return md;
}

std::string RenderMarkdown(const TableSpec& table, const std::vector<RowRuns>& rows,
                           const std::vector<std::string>& pictures,
                           const FluctuationFiles& fluctuation_files) {
  std::string md = absl::StrCat("# ", table.title(), "\n\n");
  std::set<std::string> revisions;
  for (const RowRuns& r : rows) {
    for (const std::string& revision : RowRevisions(r)) revisions.insert(revision);
  }
  const bool mixed_revisions = revisions.size() > 1;
  if (mixed_revisions) {
    absl::StrAppend(&md, "> **Warning: the runs of this table come from ", revisions.size(),
                    " different code revisions** (", absl::StrJoin(revisions, ", "),
                    "), rendered with `--allow_mixed_revisions`. Numbers from different code "
                    "may not compare; each row's revision is in the *Code revision* column.\n\n");
  }
  absl::StrAppend(&md, "- Paper: ", table.paper(), "\n");
  absl::StrAppend(&md, "- The paper's setting: ", table.paper_setting(), "\n");
  absl::StrAppend(&md, "- Our setting: ", table.our_setting(), "\n");
  int seeds = 0;
  for (const RowRuns& r : rows) seeds = std::max<int>(seeds, r.runs.size());
  absl::StrAppend(&md, "- Ours: mean ± std over ", seeds,
                  " seeds. Columns marked *paper* are the paper's published numbers, "
                  "from its setting, not ours.\n");
  if (!revisions.empty()) {
    absl::StrAppend(
        &md, mixed_revisions ? "- Code revisions (mixed): " : "- Code revision of every run: ",
        absl::StrJoin(
            revisions, ", ",
            [](std::string* out, const std::string& r) { absl::StrAppend(out, "`", r, "`"); }),
        "\n");
  }
  md += "\n";
  std::vector<bool> any_paper;
  std::vector<std::string> header = {"Row"};
  for (int c : table.columns()) {
    const Column column = static_cast<Column>(c);
    header.push_back(ColumnTitle(column));
    bool paper = false;
    for (const TableRow& row : table.rows()) paper |= FindPaperValue(row, column) != nullptr;
    any_paper.push_back(paper);
    if (paper) header.push_back(absl::StrCat(ColumnTitle(column), " *paper*"));
  }
  for (const std::string& name : table.layer_metrics()) header.push_back(LayerMetricTitle(name));
  if (mixed_revisions) header.push_back("Code revision");
  absl::StrAppend(&md, "| ", absl::StrJoin(header, " | "), " |\n|");
  for (size_t i = 0; i < header.size(); ++i) md += " --- |";
  md += "\n";
  bool any_non_causal = false;
  std::vector<std::string> identity_rows;
  for (const RowRuns& r : rows) {
    const bool non_causal = RowIsNonCausal(r);
    any_non_causal |= non_causal;
    const std::string identity = IdentityAggregation(r);
    if (!identity.empty()) {
      identity_rows.push_back(absl::StrCat(
          "- ", r.row->label(), AblatesAggregation(r) ? " (the ablation row: p = r by design)" : "",
          ": ", identity));
    }
    std::vector<std::string> cells = {
        absl::StrCat(r.row->label(), non_causal ? " †" : "", identity.empty() ? "" : " ‡")};
    for (int i = 0; i < table.columns_size(); ++i) {
      const Column column = static_cast<Column>(table.columns(i));
      const Stat s = ColumnStat(r, column);
      const int digits = DecimalsFor(column, s.mean);
      cells.push_back(s.n == 0   ? "–"
                      : s.n == 1 ? absl::StrFormat("%.*f", digits, s.mean)
                                 : absl::StrFormat("%.*f ± %.*f", digits, s.mean, digits, s.std));
      if (any_paper[i]) {
        const PaperValue* p = FindPaperValue(*r.row, column);
        cells.push_back(p == nullptr ? "" : absl::StrFormat("%g", p->value()));
      }
    }
    for (const std::string& name : table.layer_metrics()) {
      const Stat s = LayerMetricStat(r, name);
      cells.push_back(s.n == 0   ? "–"
                      : s.n == 1 ? absl::StrFormat("%.3g", s.mean)
                                 : absl::StrFormat("%.3g ± %.2g", s.mean, s.std));
    }
    if (mixed_revisions) {
      std::string cell = absl::StrJoin(RowRevisions(r), ", ");
      const RowRuns* source =
          r.row->init_from_row().empty() ? nullptr : FindRow(rows, r.row->init_from_row());
      if (source != nullptr) {
        absl::StrAppend(&cell, " (checkpoints: ", absl::StrJoin(RowRevisions(*source), ", "), ")");
      }
      cells.push_back(cell);
    }
    absl::StrAppend(&md, "| ", absl::StrJoin(cells, " | "), " |\n");
  }
  if (any_non_causal) {
    md +=
        "\n† The router is not causal: in a causal language model a token's experts "
        "depend on later tokens of its sequence, so teacher-forced perplexity sees the "
        "future. The generation-time perplexity routes each position with only its "
        "prefix visible; every row reports it on the same validation sequences "
        "(evaluation.generation_eval_sequences), where a causal router's equals its "
        "teacher-forced perplexity.\n";
  }
  if (!identity_rows.empty()) {
    absl::StrAppend(
        &md,
        absl::StrFormat(
            "\n‡ The aggregation is effectively the identity: in these MoE layers the mean "
            "weight W_ii a token keeps on itself is above %g (kIdentityAggregationSelfWeight, "
            "core/routing_metrics.h), so p = r and the router selects as token choice does. "
            "Unless it is an ablation row (ablate_aggregation, the control an aggregating "
            "row is paired with), the row is token choice under another name, not a test of "
            "the paper's mechanism. Each flagged layer's self-weight is from the final "
            "evaluation, the mean over the seeds that flag it.\n",
            kIdentityAggregationSelfWeight),
        absl::StrJoin(identity_rows, "\n"), "\n");
  }
  std::vector<std::string> notes;
  for (const TableRow& row : table.rows()) {
    for (const PaperValue& p : row.paper()) {
      if (!p.note().empty()) {
        notes.push_back(
            absl::StrCat("- *paper* ", row.label(), ", ", ColumnTitle(p.column()), ": ", p.note()));
      }
    }
  }
  if (!notes.empty()) {
    absl::StrAppend(&md, "\nSources of the paper's numbers:\n", absl::StrJoin(notes, "\n"), "\n");
  }
  if (table.claims_size() > 0) md += RenderClaims(table, rows);
  if (HasFluctuationColumn(table)) md += RenderFluctuationPerEpoch(table, rows, fluctuation_files);
  if (table.has_selection()) md += RenderSelection(table, rows);
  if (!pictures.empty()) {
    md += "\n## Pictures\n\n";
    for (const std::string& p : pictures) absl::StrAppend(&md, "![", p, "](", p, ")\n\n");
  }
  if (!table.paper_scale_base_spec().empty()) {
    absl::StrAppend(
        &md, "\nThe same table at the paper's scale (GPU and data needed): `reproduce --table=",
        table.name(), " --paper_scale` (base spec ", table.paper_scale_base_spec(), ").\n");
  }
  return md;
}

std::string RenderCsv(const TableSpec& table, const std::vector<RowRuns>& rows) {
  std::string csv = "row,column,mean,std,n,paper_value,revisions\n";
  for (const RowRuns& r : rows) {
    const std::string revisions = absl::StrJoin(RowRevisions(r), ";");
    for (int c : table.columns()) {
      const Column column = static_cast<Column>(c);
      const Stat s = ColumnStat(r, column);
      const PaperValue* p = FindPaperValue(*r.row, column);
      absl::StrAppendFormat(&csv, "\"%s\",%s,%.6g,%.6g,%d,%s,\"%s\"\n", r.row->label(),
                            Column_Name(column), s.mean, s.std, s.n,
                            p ? absl::StrFormat("%g", p->value()) : "", revisions);
    }
    for (const std::string& name : table.layer_metrics()) {
      const Stat s = LayerMetricStat(r, name);
      absl::StrAppendFormat(&csv, "\"%s\",%s,%.6g,%.6g,%d,,\"%s\"\n", r.row->label(), name, s.mean,
                            s.std, s.n, revisions);
    }
  }
  return csv;
}

}  // namespace moelab
