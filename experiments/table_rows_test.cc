#include "experiments/table_rows.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "google/protobuf/text_format.h"

namespace moelab {
namespace {

using ::testing::HasSubstr;

TableSpec Parse(const std::string& text) {
  TableSpec table;
  EXPECT_TRUE(google::protobuf::TextFormat::ParseFromString(absl::StrCat(R"pb(
                                                                           name: "sweep"
                                                                           rows { label: "smoe" }
                                                                         )pb",
                                                                         text),
                                                            &table))
      << text;
  return table;
}

TEST(ValidateSelectionTest, ACompleteRuleWithCandidatesPasses) {
  EXPECT_TRUE(ValidateSelection(Parse(R"pb(
                rows { label: "sim 0.1" group: "similarity" }
                rows { label: "sim 1" group: "similarity" }
                selection { column: VALID_PERPLEXITY expect: A_LOWER }
              )pb"))
                  .ok());
  // Neither groups nor a rule: an ordinary table.
  EXPECT_TRUE(ValidateSelection(Parse("")).ok());
}

TEST(ValidateSelectionTest, GroupsWithoutARuleAreRefused) {
  const absl::Status status =
      ValidateSelection(Parse(R"pb(rows { label: "sim 0.1" group: "similarity" })pb"));
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("row 'sim 0.1' has a group but the table has no "
                                          "selection"));
}

TEST(ValidateSelectionTest, AnIncompleteRuleIsRefused) {
  EXPECT_THAT(ValidateSelection(Parse(R"pb(
                rows { label: "sim" group: "similarity" }
                selection { expect: A_LOWER }
              )pb"))
                  .message(),
              HasSubstr("selection.column: unset"));
  EXPECT_THAT(ValidateSelection(Parse(R"pb(
                rows { label: "sim" group: "similarity" }
                selection { column: VALID_PERPLEXITY }
              )pb"))
                  .message(),
              HasSubstr("selection.expect: unset"));
  EXPECT_THAT(
      ValidateSelection(Parse("selection { column: VALID_PERPLEXITY expect: A_LOWER }")).message(),
      HasSubstr("no row has a group"));
}

TEST(ValidateSelectionTest, ARuleOverARegisteredMetricMustNameOne) {
  EXPECT_TRUE(ValidateSelection(Parse(R"pb(
                rows { label: "sim" group: "similarity" }
                selection { layer_metric: "gate_margin" expect: A_HIGHER }
              )pb"))
                  .ok());
  EXPECT_THAT(ValidateSelection(Parse(R"pb(
                rows { label: "sim" group: "similarity" }
                selection { layer_metric: "gate_margn" expect: A_HIGHER }
              )pb"))
                  .message(),
              HasSubstr("selection.layer_metric: unknown layer metric 'gate_margn'"));
  EXPECT_THAT(ValidateSelection(Parse(R"pb(
                rows { label: "sim" group: "similarity" }
                selection { column: VALID_PERPLEXITY layer_metric: "gate_margin" expect: A_LOWER }
              )pb"))
                  .message(),
              HasSubstr("not both"));
}

TEST(ValidateClaimsTest, AClaimNamesExactlyOneColumnOrRegisteredMetricPerSide) {
  const std::string rows = R"pb(rows { label: "a" }
                                rows { label: "b" })pb";
  auto status = [&](const std::string& claim) {
    return ValidateClaims(Parse(
        absl::StrCat(rows, " claims { text: \"c\" row_a: \"a\" ", claim, " expect: A_LOWER }")));
  };
  EXPECT_TRUE(status(R"(row_b: "b" layer_metric: "gate_margin")").ok());
  EXPECT_TRUE(status(R"(column: GATE_ENTROPY layer_metric_b: "gate_margin")").ok());
  EXPECT_THAT(status(R"(row_b: "b")").message(),
              HasSubstr("claims[0] ('c'): column: unset (or name a registered layer_metric)"));
  EXPECT_THAT(status(R"(row_b: "b" layer_metric: "no_such")").message(),
              HasSubstr("claims[0] ('c'): layer_metric: unknown layer metric 'no_such'"));
  EXPECT_THAT(status(R"(row_b: "b" column: LOAD_CV layer_metric: "gate_margin")").message(),
              HasSubstr("not both"));
  EXPECT_THAT(status(R"(layer_metric: "gate_margin")").message(),
              HasSubstr("compares a column with itself"));
  // GATE_ENTROPY is the registered gate_entropy: the same quantity.
  EXPECT_THAT(status(R"(column: GATE_ENTROPY layer_metric_b: "gate_entropy")").message(),
              HasSubstr("compares a column with itself"));
  EXPECT_THAT(
      status(R"(column: GATE_ENTROPY column_b: LOAD_CV layer_metric_b: "gate_margin")").message(),
      HasSubstr("set column_b or layer_metric_b, not both"));
}

// A base spec on disk: the CPU-scale LM base in miniature.
std::string WriteBaseSpec() {
  const std::string path = absl::StrCat(::testing::TempDir(), "/base.pbtxt");
  std::ofstream(path) << R"pb(
    name: "lm"
    dataset {
      name: "sotu_lm"
      train_subset_examples: 2560
      sotu { sequence_length: 64 }
    }
    model { name: "moe_transformer_lm" preset: "cpu_tiny" }
    router { name: "token_choice" top_k: 2 }
    training { epochs: 10 batch_size: 16 }
  )pb";
  return path;
}

TEST(RowSpecTest, BaseSpecOverridesApplyBeforeTheRowsOwn) {
  TableSpec table = Parse(R"pb(
    rows { label: "tc k1" spec_overrides: 'router { name: "token_choice" top_k: 1 }' }
    base_spec_overrides: 'dataset { train_subset_examples: 1600 } training { epochs: 12 }'
  )pb");
  table.set_base_spec(WriteBaseSpec());
  table.set_paper_scale_base_spec(table.base_spec());
  absl::StatusOr<ExperimentSpec> spec =
      RowSpec(table, table.rows(1), /*paper_scale=*/false, /*validate=*/false);
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->dataset().train_subset_examples(), 1600);
  EXPECT_EQ(spec->dataset().sotu().sequence_length(), 64);  // merged, not replaced
  EXPECT_EQ(spec->training().epochs(), 12);
  EXPECT_EQ(spec->training().batch_size(), 16);
  EXPECT_EQ(spec->router().top_k(), 1);  // the row's own overrides still win
  // The paper-scale base is sized for its own budget: left as written.
  absl::StatusOr<ExperimentSpec> paper =
      RowSpec(table, table.rows(1), /*paper_scale=*/true, /*validate=*/false);
  ASSERT_TRUE(paper.ok()) << paper.status();
  EXPECT_EQ(paper->dataset().train_subset_examples(), 2560);
  EXPECT_EQ(paper->training().epochs(), 10);
}

TEST(RowSpecTest, BadBaseSpecOverridesNameTheField) {
  TableSpec table = Parse(R"pb(base_spec_overrides: 'dataset { no_such_field: 1 }')pb");
  table.set_base_spec(WriteBaseSpec());
  absl::StatusOr<ExperimentSpec> spec =
      RowSpec(table, table.rows(0), /*paper_scale=*/false, /*validate=*/false);
  EXPECT_EQ(spec.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(spec.status().message(), HasSubstr("base_spec_overrides"));
}

}  // namespace
}  // namespace moelab
