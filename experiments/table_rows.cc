#include "experiments/table_rows.h"

#include "absl/strings/str_cat.h"
#include "core/atomic_file.h"
#include "core/paths.h"
#include "core/spec.h"
#include "google/protobuf/text_format.h"

namespace moelab {

absl::StatusOr<TableSpec> LoadTable(const std::string& name) {
  const std::string path = WorkspacePath(absl::StrCat(kTablesDirectory, "/", name, ".pbtxt"));
  absl::StatusOr<std::string> text = ReadFile(path);
  if (!text.ok()) {
    return absl::NotFoundError(absl::StrCat("--table: no table '", name, "' (", path,
                                            "); --list shows the tables"));
  }
  TableSpec table;
  if (!google::protobuf::TextFormat::ParseFromString(*text, &table)) {
    return absl::InvalidArgumentError(absl::StrCat("cannot parse ", path));
  }
  if (table.rows_size() == 0) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": rows: the table has no rows"));
  }
  return table;
}

// The row's spec file with its overrides merged in, resolved and validated.
absl::StatusOr<ExperimentSpec> RowSpec(const TableSpec& table, const TableRow& row,
                                       bool paper_scale, bool validate) {
  const std::string& base = paper_scale ? table.paper_scale_base_spec() : table.base_spec();
  const std::string path = WorkspacePath(row.spec().empty() ? base : row.spec());
  if (path.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "no spec: the row has no `spec` and the table no ",
        paper_scale ? "paper_scale_base_spec" : "base_spec"));
  }
  absl::StatusOr<ExperimentSpec> spec = ReadSpecFile(path);
  if (!spec.ok()) return spec.status();
  if (!row.spec_overrides().empty()) {
    absl::StatusOr<ExperimentSpec> overrides =
        ParseSpec(row.spec_overrides(), absl::StrCat(row.label(), ".spec_overrides"));
    if (!overrides.ok()) return overrides.status();
    if (overrides->has_router()) spec->clear_router();
    spec->MergeFrom(*overrides);
  }
  if (absl::Status s = ResolveSpec(&*spec); !s.ok()) {
    return absl::Status(s.code(), absl::StrCat(path, ": ", s.message()));
  }
  if (!validate) return spec;
  if (absl::Status s = ValidateSpec(*spec); !s.ok()) {
    return absl::Status(s.code(), absl::StrCat(path, ": ", s.message()));
  }
  return spec;
}

}  // namespace moelab
