#include "experiments/table_report.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"

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
         c == FLUCTUATION_TOPK || c == CORRUPTION_EXPERT_CHANGE;
}

// Decimals shown for a column's values: whole seconds, one decimal for
// percentages, two otherwise, and for expert GFLOPs (a CPU-scale model
// spends ~0.0003 per token) enough for three significant digits.
int DecimalsFor(Column column, double mean) {
  if (column == WALL_TIME_S) return 0;
  if (IsPercent(column)) return 1;
  if (column == EXPERT_GFLOPS_PER_TOKEN && mean > 0 && mean < 1) {
    return std::min(9, 2 - static_cast<int>(std::floor(std::log10(mean))));
  }
  return 2;
}

double LastEpochLayerMean(const RunResult& run,
                          double (LayerRoutingMetrics::*field)() const,
                          bool needs_fluctuation, bool* ok) {
  *ok = false;
  if (run.epochs_size() == 0) return 0;
  const EpochMetrics& last = run.epochs(run.epochs_size() - 1);
  double sum = 0;
  int n = 0;
  for (const LayerRoutingMetrics& l : last.layers()) {
    if (needs_fluctuation && !l.has_fluctuation()) continue;
    sum += (l.*field)();
    ++n;
  }
  if (n == 0) return 0;
  *ok = true;
  return sum / n;
}

}  // namespace

bool ColumnValue(const RunResult& run, Column column, double* value) {
  const FinalMetrics& f = run.final();
  const bool language = f.unigram_perplexity() > 0;
  bool ok = true;
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
      *value = 100 * LastEpochLayerMean(run, &LayerRoutingMetrics::fluctuation_top1,
                                        true, &ok);
      return ok;
    case FLUCTUATION_TOPK:
      *value = 100 * LastEpochLayerMean(run, &LayerRoutingMetrics::fluctuation_topk,
                                        true, &ok);
      return ok;
    case GATE_ENTROPY:
      *value = LastEpochLayerMean(run, &LayerRoutingMetrics::gate_entropy, false, &ok);
      return ok;
    case AGGREGATED_ENTROPY:
      *value = LastEpochLayerMean(run, &LayerRoutingMetrics::aggregated_entropy,
                                  false, &ok);
      return ok && *value > 0;
    case LOAD_CV:
      *value = LastEpochLayerMean(run, &LayerRoutingMetrics::load_cv, false, &ok);
      return ok;
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
    default:
      return false;
  }
}

Stat ColumnStat(const RowRuns& row, Column column) {
  std::vector<double> values;
  for (const RunResult& run : row.runs) {
    double v;
    if (ColumnValue(run, column, &v)) values.push_back(v);
  }
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

std::string ColumnTitle(Column column) {
  switch (column) {
    case VALID_PERPLEXITY: return "Perplexity (valid)";
    case TEST_PERPLEXITY: return "Perplexity (test)";
    case GENERATION_PERPLEXITY: return "Perplexity (generation-time, valid subset)";
    case VALID_ACCURACY: return "Top-1 acc. (valid, %)";
    case TEST_ACCURACY: return "Top-1 acc. (test, %)";
    case FLUCTUATION_TOP1: return "Fluctuation top-1 (%)";
    case FLUCTUATION_TOPK: return "Fluctuation top-k set (%)";
    case GATE_ENTROPY: return "Entropy H(r) (nats)";
    case AGGREGATED_ENTROPY: return "Entropy H(p) (nats)";
    case LOAD_CV: return "Load CV";
    case EXPERTS_PER_TOKEN: return "Experts/token";
    case CORRUPTED_METRIC: return "Under corruption";
    case CORRUPTION_EXPERT_CHANGE: return "Experts changed by corruption (%)";
    case WALL_TIME_S: return "Wall time (s)";
    case EXPERT_GFLOPS_PER_TOKEN: return "Expert GFLOPs/token";
    default: return Column_Name(column);
  }
}

std::string ClaimVerdict(const Claim& claim, const std::vector<RowRuns>& rows) {
  const RowRuns* a = FindRow(rows, claim.row_a());
  const RowRuns* b = FindRow(rows, claim.row_b());
  if (a == nullptr || b == nullptr) return "n/a (row missing)";
  const Stat sa = ColumnStat(*a, claim.column());
  const Stat sb = ColumnStat(*b, claim.column());
  if (sa.n == 0 || sb.n == 0) return "n/a (no value)";
  const bool a_lower = sa.mean < sb.mean;
  const bool holds = (claim.expect() == A_LOWER) == a_lower;
  const bool within_noise = std::abs(sa.mean - sb.mean) <= std::max(sa.std, sb.std);
  return absl::StrCat(holds ? "yes" : "no", within_noise ? " (within noise)" : "");
}

std::string RenderMarkdown(const TableSpec& table, const std::vector<RowRuns>& rows,
                           const std::vector<std::string>& pictures) {
  std::string md = absl::StrCat("# ", table.title(), "\n\n");
  absl::StrAppend(&md, "- Paper: ", table.paper(), "\n");
  absl::StrAppend(&md, "- The paper's setting: ", table.paper_setting(), "\n");
  absl::StrAppend(&md, "- Our setting: ", table.our_setting(), "\n");
  int seeds = 0;
  for (const RowRuns& r : rows) seeds = std::max<int>(seeds, r.runs.size());
  absl::StrAppend(&md, "- Ours: mean ± std over ", seeds,
                  " seeds. Columns marked *paper* are the paper's published numbers, "
                  "from its setting, not ours.\n\n");
  std::vector<std::string> header = {"Row"};
  for (int c : table.columns()) {
    const Column column = static_cast<Column>(c);
    header.push_back(ColumnTitle(column));
    bool any_paper = false;
    for (const TableRow& row : table.rows()) any_paper |= FindPaperValue(row, column) != nullptr;
    if (any_paper) header.push_back(absl::StrCat(ColumnTitle(column), " *paper*"));
  }
  absl::StrAppend(&md, "| ", absl::StrJoin(header, " | "), " |\n|");
  for (size_t i = 0; i < header.size(); ++i) md += " --- |";
  md += "\n";
  bool any_non_causal = false;
  for (const RowRuns& r : rows) {
    bool non_causal = false;
    for (const RunResult& run : r.runs) non_causal |= run.non_causal_router_in_causal_model();
    any_non_causal |= non_causal;
    std::vector<std::string> cells = {absl::StrCat(r.row->label(), non_causal ? " †" : "")};
    for (int c : table.columns()) {
      const Column column = static_cast<Column>(c);
      const Stat s = ColumnStat(r, column);
      const int digits = DecimalsFor(column, s.mean);
      cells.push_back(s.n == 0 ? "–"
                      : s.n == 1 ? absl::StrFormat("%.*f", digits, s.mean)
                                 : absl::StrFormat("%.*f ± %.*f", digits, s.mean, digits, s.std));
      bool any_paper = false;
      for (const TableRow& row : table.rows()) any_paper |= FindPaperValue(row, column) != nullptr;
      if (any_paper) {
        const PaperValue* p = FindPaperValue(*r.row, column);
        cells.push_back(p == nullptr ? "" : absl::StrFormat("%g", p->value()));
      }
    }
    absl::StrAppend(&md, "| ", absl::StrJoin(cells, " | "), " |\n");
  }
  if (any_non_causal) {
    md += "\n† The router is not causal: in a causal language model a token's experts "
          "depend on later tokens of its sequence, so teacher-forced perplexity sees the "
          "future. The generation-time perplexity routes each position with only its "
          "prefix visible; every row reports it on the same validation sequences "
          "(evaluation.generation_eval_sequences), where a causal router's equals its "
          "teacher-forced perplexity.\n";
  }
  std::vector<std::string> notes;
  for (const TableRow& row : table.rows()) {
    for (const PaperValue& p : row.paper()) {
      if (!p.note().empty()) {
        notes.push_back(absl::StrCat("- *paper* ", row.label(), ", ", ColumnTitle(p.column()),
                                     ": ", p.note()));
      }
    }
  }
  if (!notes.empty()) absl::StrAppend(&md, "\nSources of the paper's numbers:\n", absl::StrJoin(notes, "\n"), "\n");
  if (table.claims_size() > 0) {
    md += "\n## Claims\n\n| The paper says | Column | Our runs point the same way? |\n| --- | --- | --- |\n";
    for (const Claim& claim : table.claims()) {
      absl::StrAppend(&md, "| ", claim.text(), " | ", ColumnTitle(claim.column()), " | ",
                      ClaimVerdict(claim, rows), " |\n");
    }
  }
  if (!pictures.empty()) {
    md += "\n## Pictures\n\n";
    for (const std::string& p : pictures) absl::StrAppend(&md, "![", p, "](", p, ")\n\n");
  }
  if (!table.paper_scale_base_spec().empty()) {
    absl::StrAppend(&md, "\nThe same table at the paper's scale (GPU and data needed): `reproduce --table=",
                    table.name(), " --paper_scale` (base spec ", table.paper_scale_base_spec(), ").\n");
  }
  return md;
}

std::string RenderCsv(const TableSpec& table, const std::vector<RowRuns>& rows) {
  std::string csv = "row,column,mean,std,n,paper_value\n";
  for (const RowRuns& r : rows) {
    for (int c : table.columns()) {
      const Column column = static_cast<Column>(c);
      const Stat s = ColumnStat(r, column);
      const PaperValue* p = FindPaperValue(*r.row, column);
      absl::StrAppendFormat(&csv, "\"%s\",%s,%.6g,%.6g,%d,%s\n", r.row->label(),
                            Column_Name(column), s.mean, s.std, s.n,
                            p ? absl::StrFormat("%g", p->value()) : "");
    }
  }
  return csv;
}

}  // namespace moelab
