#include "experiments/table_rows.h"

#include <algorithm>
#include <filesystem>
#include <set>

#include "absl/strings/str_cat.h"
#include "core/atomic_file.h"
#include "core/layer_metric.h"
#include "core/paths.h"
#include "core/spec.h"
#include "experiments/table_report.h"
#include "google/protobuf/text_format.h"

namespace moelab {
namespace {

// Empty, or a registered per-layer metric; errors start with `prefix` (the
// claim, or "selection.") and name the field.
absl::Status CheckRegisteredMetric(const std::string& name, absl::string_view prefix,
                                   absl::string_view field) {
  if (name.empty()) return absl::OkStatus();
  absl::StatusOr<const LayerMetricRegistration*> metric = LayerMetricRegistry().Find(name);
  if (metric.ok()) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(prefix, field, ": ", metric.status().message()));
}

// Exactly one of a column and a registered metric names what is compared.
absl::Status CheckMeasure(Column column, const std::string& layer_metric, absl::string_view prefix,
                          absl::string_view column_field, absl::string_view metric_field) {
  if (column == COLUMN_UNSPECIFIED && layer_metric.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(prefix, column_field, ": unset (or name a registered ", metric_field, ")"));
  }
  if (column != COLUMN_UNSPECIFIED && !layer_metric.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(prefix, column_field, ": set it or ", metric_field, ", not both"));
  }
  return CheckRegisteredMetric(layer_metric, prefix, metric_field);
}

}  // namespace

absl::StatusOr<std::vector<std::string>> TableNames() {
  const std::filesystem::path dir = WorkspacePath(kTablesDirectory);
  std::vector<std::string> names;
  std::error_code error;
  for (const auto& entry : std::filesystem::directory_iterator(dir, error)) {
    if (entry.path().extension() == ".pbtxt") names.push_back(entry.path().stem());
  }
  if (error) {
    return absl::NotFoundError(absl::StrCat("cannot list ", dir.string(), ": ", error.message()));
  }
  std::sort(names.begin(), names.end());
  return names;
}

absl::StatusOr<TableSpec> LoadTable(const std::string& name) {
  const std::string path = WorkspacePath(absl::StrCat(kTablesDirectory, "/", name, ".pbtxt"));
  absl::StatusOr<std::string> text = ReadFile(path);
  if (!text.ok()) {
    return absl::NotFoundError(
        absl::StrCat("--table: no table '", name, "' (", path, "); --list shows the tables"));
  }
  TableSpec table;
  if (!google::protobuf::TextFormat::ParseFromString(*text, &table)) {
    return absl::InvalidArgumentError(absl::StrCat("cannot parse ", path));
  }
  if (table.rows_size() == 0) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": rows: the table has no rows"));
  }
  if (absl::Status s = ValidateClaims(table); !s.ok()) {
    return absl::Status(s.code(), absl::StrCat(path, ": ", s.message()));
  }
  if (absl::Status s = ValidateSelection(table); !s.ok()) {
    return absl::Status(s.code(), absl::StrCat(path, ": ", s.message()));
  }
  return table;
}

absl::Status ValidateClaims(const TableSpec& table) {
  std::set<std::string> labels;
  for (const TableRow& row : table.rows()) labels.insert(row.label());
  for (int i = 0; i < table.claims_size(); ++i) {
    const Claim& claim = table.claims(i);
    const std::string where = absl::StrCat("claims[", i, "] ('", claim.text(), "')");
    if (!labels.count(claim.row_a())) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": row_a: no row '", claim.row_a(), "' in the table"));
    }
    if (!claim.row_b().empty() && !labels.count(claim.row_b())) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": row_b: no row '", claim.row_b(), "' in the table"));
    }
    if (absl::Status s = CheckMeasure(claim.column(), claim.layer_metric(),
                                      absl::StrCat(where, ": "), "column", "layer_metric");
        !s.ok()) {
      return s;
    }
    if (claim.column_b() != COLUMN_UNSPECIFIED && !claim.layer_metric_b().empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": set column_b or layer_metric_b, not both"));
    }
    if (absl::Status s = CheckRegisteredMetric(claim.layer_metric_b(), absl::StrCat(where, ": "),
                                               "layer_metric_b");
        !s.ok()) {
      return s;
    }
    if (claim.expect() == EXPECTATION_UNSPECIFIED) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": expect: unset (A_LOWER or A_HIGHER)"));
    }
    const bool within_row = claim.row_b().empty() || claim.row_b() == claim.row_a();
    if (within_row && ClaimMeasureA(claim) == ClaimMeasureB(claim)) {
      return absl::InvalidArgumentError(absl::StrCat(
          where, ": a claim within row '", claim.row_a(),
          "' compares a column with itself; set column_b or layer_metric_b (or row_b)"));
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateSelection(const TableSpec& table) {
  std::string grouped_row;
  for (const TableRow& row : table.rows()) {
    if (!row.group().empty()) {
      grouped_row = row.label();
      break;
    }
  }
  if (!table.has_selection()) {
    if (grouped_row.empty()) return absl::OkStatus();
    return absl::InvalidArgumentError(
        absl::StrCat("rows: row '", grouped_row,
                     "' has a group but the table has no selection; a sweep needs its rule "
                     "(selection { column expect }) fixed in the table before running"));
  }
  const Selection& rule = table.selection();
  if (absl::Status s =
          CheckMeasure(rule.column(), rule.layer_metric(), "selection.", "column", "layer_metric");
      !s.ok()) {
    return s;
  }
  if (rule.expect() == EXPECTATION_UNSPECIFIED) {
    return absl::InvalidArgumentError(
        "selection.expect: unset (A_LOWER: the lowest wins, A_HIGHER: the highest wins)");
  }
  if (grouped_row.empty()) {
    return absl::InvalidArgumentError(
        "selection: no row has a group, so there is nothing to select from");
  }
  return absl::OkStatus();
}

// The row's spec file with its overrides merged in, resolved and validated.
absl::StatusOr<ExperimentSpec> RowSpec(const TableSpec& table, const TableRow& row,
                                       bool paper_scale, bool validate) {
  const std::string& base = paper_scale ? table.paper_scale_base_spec() : table.base_spec();
  const std::string path = WorkspacePath(row.spec().empty() ? base : row.spec());
  if (path.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("no spec: the row has no `spec` and the table no ",
                     paper_scale ? "paper_scale_base_spec" : "base_spec"));
  }
  absl::StatusOr<ExperimentSpec> spec = ReadSpecFile(path);
  if (!spec.ok()) return spec.status();
  const bool base_overridden =
      !paper_scale && row.spec().empty() && !table.base_spec_overrides().empty();
  if (base_overridden) {
    absl::StatusOr<ExperimentSpec> overrides =
        ParseSpec(table.base_spec_overrides(), "base_spec_overrides");
    if (!overrides.ok()) return overrides.status();
    spec->MergeFrom(*overrides);
  }
  if (!row.spec_overrides().empty()) {
    absl::StatusOr<ExperimentSpec> overrides =
        ParseSpec(row.spec_overrides(), absl::StrCat(row.label(), ".spec_overrides"));
    if (!overrides.ok()) return overrides.status();
    if (overrides->has_router()) spec->clear_router();
    spec->MergeFrom(*overrides);
  }
  // Where the spec's fields come from, for errors.
  std::string source = path;
  if (base_overridden) absl::StrAppend(&source, " with the table's base_spec_overrides");
  if (!row.spec_overrides().empty()) {
    absl::StrAppend(&source, " with the spec_overrides of row '", row.label(), "'");
  }
  if (absl::Status s = ResolveSpec(&*spec); !s.ok()) {
    return absl::Status(s.code(), absl::StrCat(source, ": ", s.message()));
  }
  if (!validate) return spec;
  if (absl::Status s = ValidateSpec(*spec); !s.ok()) {
    return absl::Status(s.code(), absl::StrCat(source, ": ", s.message()));
  }
  return spec;
}

}  // namespace moelab
