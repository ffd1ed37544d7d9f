#include <filesystem>
#include <set>
#include <string>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "core/spec.h"
#include "experiments/table_rows.h"

namespace moelab {
namespace {

std::vector<std::string> TableNames() {
  std::vector<std::string> names;
  for (const auto& entry : std::filesystem::directory_iterator(kTablesDirectory)) {
    if (entry.path().extension() == ".pbtxt") names.push_back(entry.path().stem());
  }
  return names;
}

class TableTest : public ::testing::TestWithParam<std::string> {};

TEST_P(TableTest, ParsesAndEveryRowBuildsAValidSpec) {
  absl::StatusOr<TableSpec> table = LoadTable(GetParam());
  ASSERT_TRUE(table.ok()) << table.status();
  EXPECT_EQ(table->name(), GetParam());
  EXPECT_FALSE(table->paper().empty());
  EXPECT_FALSE(table->paper_setting().empty());
  EXPECT_FALSE(table->our_setting().empty());
  EXPECT_FALSE(table->paper_scale_base_spec().empty());
  std::set<std::string> labels, names;
  for (const TableRow& row : table->rows()) {
    EXPECT_TRUE(labels.insert(row.label()).second) << "duplicate row " << row.label();
    absl::StatusOr<ExperimentSpec> spec = RowSpec(*table, row, /*paper_scale=*/false);
    ASSERT_TRUE(spec.ok()) << row.label() << ": " << spec.status();
    EXPECT_TRUE(names.insert(spec->name()).second)
        << "rows '" << row.label() << "' and another share the run name " << spec->name();
    if (!row.init_from_row().empty()) {
      EXPECT_TRUE(labels.count(row.init_from_row())) << row.init_from_row();
    }
    // The paper-scale set resolves too (its data is not here, so it is not
    // validated against the file system).
    absl::StatusOr<ExperimentSpec> paper =
        RowSpec(*table, row, /*paper_scale=*/true, /*validate=*/false);
    ASSERT_TRUE(paper.ok()) << row.label() << ": " << paper.status();
    EXPECT_EQ(paper->router().name(), spec->router().name());
  }
  for (const Claim& claim : table->claims()) {
    EXPECT_TRUE(labels.count(claim.row_a())) << claim.row_a();
    EXPECT_TRUE(labels.count(claim.row_b())) << claim.row_b();
    EXPECT_NE(claim.expect(), EXPECTATION_UNSPECIFIED) << claim.text();
  }
}

INSTANTIATE_TEST_SUITE_P(AllTables, TableTest, ::testing::ValuesIn(TableNames()),
                         [](const auto& info) { return info.param; });

TEST(TablesTest, TheFivePaperTablesExist) {
  EXPECT_THAT(TableNames(), ::testing::IsSupersetOf(
                                {"graph_of_tokens_lm", "graph_of_tokens_vision",
                                 "usmoe_pretraining_lm", "usmoe_pretraining_vision",
                                 "usmoe_training_free", "entropy_vs_fluctuation"}));
}

}  // namespace
}  // namespace moelab
