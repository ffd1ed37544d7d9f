#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <map>
#include <set>
#include <string>

#include "core/spec.h"
#include "experiments/table_rows.h"
#include "google/protobuf/text_format.h"

namespace moelab {
namespace {

using ::testing::HasSubstr;

std::vector<std::string> AllTableNames() {
  absl::StatusOr<std::vector<std::string>> names = TableNames();
  EXPECT_TRUE(names.ok()) << names.status();
  return names.ok() ? *names : std::vector<std::string>{};
}

// Whether the router aggregates over tokens; an ablated one (p = r) does not.
bool Aggregates(const RouterSpec& router) {
  if (router.name() == "similarity_aware") return !router.similarity_aware().ablate_aggregation();
  if (router.name() == "attention_aware") return !router.attention_aware().ablate_aggregation();
  return false;
}

// Whether the router keeps only one expert per token and renormalises its
// weight to 1, which leaves the gate no gradient from the task loss.
bool RenormalisedTopOne(const RouterSpec& router) {
  if (router.top_k() != 1) return false;
  if (router.name() == "token_choice") return router.token_choice().renormalize();
  if (router.name() == "similarity_aware") return router.similarity_aware().renormalize();
  if (router.name() == "attention_aware") return router.attention_aware().renormalize();
  return false;
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
  EXPECT_THAT(table->our_setting(), ::testing::Not(HasSubstr("authors' default")));
  std::set<std::string> labels, names;
  for (const TableRow& row : table->rows()) {
    EXPECT_TRUE(labels.insert(row.label()).second) << "duplicate row " << row.label();
    absl::StatusOr<ExperimentSpec> spec = RowSpec(*table, row, /*paper_scale=*/false);
    ASSERT_TRUE(spec.ok()) << row.label() << ": " << spec.status();
    EXPECT_TRUE(names.insert(spec->name()).second)
        << "rows '" << row.label() << "' and another share the run name " << spec->name();
    EXPECT_FALSE(RenormalisedTopOne(spec->router()))
        << row.label() << ": a renormalised top-1 router gives the gate no gradient; "
        << "use renormalize: false (Switch-style)";
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
    if (!claim.row_b().empty()) {
      EXPECT_TRUE(labels.count(claim.row_b())) << claim.row_b();
    }
    EXPECT_NE(claim.expect(), EXPECTATION_UNSPECIFIED) << claim.text();
  }
}

// Proposition 1 (H(p) < H(r)) is checked within each aggregating row of a
// table that shows H(p): token choice has no p to compare with.
TEST_P(TableTest, EveryAggregatingRowHasAWithinRowEntropyClaim) {
  absl::StatusOr<TableSpec> table = LoadTable(GetParam());
  ASSERT_TRUE(table.ok()) << table.status();
  bool shows_aggregated_entropy = false;
  for (int c : table->columns()) shows_aggregated_entropy |= c == AGGREGATED_ENTROPY;
  // A sweep table chooses a setting and claims nothing.
  if (!shows_aggregated_entropy || table->has_selection()) return;
  for (const TableRow& row : table->rows()) {
    absl::StatusOr<ExperimentSpec> spec = RowSpec(*table, row, /*paper_scale=*/false);
    ASSERT_TRUE(spec.ok()) << row.label() << ": " << spec.status();
    if (!Aggregates(spec->router())) continue;
    bool found = false;
    for (const Claim& claim : table->claims()) {
      found |= claim.row_a() == row.label() && claim.row_b().empty() &&
               claim.column() == AGGREGATED_ENTROPY && claim.column_b() == GATE_ENTROPY &&
               claim.expect() == A_LOWER;
    }
    EXPECT_TRUE(found) << row.label() << ": no within-row H(p) < H(r) claim";
  }
}

// A claim that an aggregating router beats a non-aggregating baseline on
// some column needs its control: the same claim against the same router
// with the aggregation ablated (p = r), so that "the aggregation did it" is
// tested rather than assumed (anything else in the router could move the
// metric). Within-row and sweep tables are exempt.
TEST_P(TableTest, EveryAggregatingClaimAgainstABaselineHasItsAblationClaim) {
  absl::StatusOr<TableSpec> table = LoadTable(GetParam());
  ASSERT_TRUE(table.ok()) << table.status();
  if (table->has_selection()) return;
  std::map<std::string, RouterSpec> routers;
  for (const TableRow& row : table->rows()) {
    if (!row.init_from_row().empty()) continue;
    absl::StatusOr<ExperimentSpec> spec = RowSpec(*table, row, /*paper_scale=*/false);
    ASSERT_TRUE(spec.ok()) << row.label() << ": " << spec.status();
    routers[row.label()] = spec->router();
  }
  const auto ablation_of = [&](const std::string& label) -> std::string {
    RouterSpec ablated = routers.at(label);
    if (ablated.name() == "similarity_aware") {
      ablated.mutable_similarity_aware()->set_ablate_aggregation(true);
    } else {
      ablated.mutable_attention_aware()->set_ablate_aggregation(true);
    }
    for (const auto& [other, router] : routers) {
      if (router.SerializeAsString() == ablated.SerializeAsString()) return other;
    }
    return "";
  };
  for (const Claim& claim : table->claims()) {
    if (claim.row_b().empty() || !routers.count(claim.row_a()) || !routers.count(claim.row_b())) {
      continue;
    }
    if (!Aggregates(routers.at(claim.row_a())) || Aggregates(routers.at(claim.row_b()))) continue;
    // The paper's literal settings are p = r on layer-normed states (marked ‡
    // when measured so): their own ablation would be the same run twice.
    if (claim.row_a().find("literal") != std::string::npos) continue;
    const std::string ablation = ablation_of(claim.row_a());
    if (claim.row_b() == ablation) continue;
    ASSERT_FALSE(ablation.empty()) << claim.row_a() << ": no ablation row (ablate_aggregation)";
    bool controlled = false;
    for (const Claim& other : table->claims()) {
      controlled |= other.row_a() == claim.row_a() && other.row_b() == ablation &&
                    other.column() == claim.column() && other.expect() == claim.expect();
    }
    EXPECT_TRUE(controlled) << "'" << claim.text() << "' has no claim against " << ablation;
  }
}

INSTANTIATE_TEST_SUITE_P(AllTables, TableTest, ::testing::ValuesIn(AllTableNames()),
                         [](const auto& info) { return info.param; });

TEST(TablesTest, TheFivePaperTablesExist) {
  EXPECT_THAT(AllTableNames(),
              ::testing::IsSupersetOf({"graph_of_tokens_lm", "graph_of_tokens_vision",
                                       "usmoe_pretraining_lm", "usmoe_pretraining_vision",
                                       "usmoe_training_free", "entropy_vs_fluctuation"}));
}

// Tables share runs through the cache when their rows resolve to the same
// spec; a run name used in two tables must mean the same spec in both, or
// the tables would read one name two ways.
TEST(TablesTest, ARunNameMeansOneSpecAcrossTables) {
  std::map<std::string, std::pair<std::string, std::string>> first;  // name -> (hash, where)
  for (const std::string& name : AllTableNames()) {
    absl::StatusOr<TableSpec> table = LoadTable(name);
    ASSERT_TRUE(table.ok()) << table.status();
    for (const TableRow& row : table->rows()) {
      if (!row.init_from_row().empty()) continue;  // its checkpoint path is set at run time
      absl::StatusOr<ExperimentSpec> spec = RowSpec(*table, row, /*paper_scale=*/false);
      ASSERT_TRUE(spec.ok()) << name << " row " << row.label() << ": " << spec.status();
      const std::string where = name + " row '" + row.label() + "'";
      auto [it, inserted] = first.try_emplace(spec->name(), SpecHash(*spec), where);
      EXPECT_TRUE(inserted || it->second.first == SpecHash(*spec))
          << "run name " << spec->name() << ": " << it->second.second << " and " << where
          << " resolve to different specs";
    }
  }
  // The tables that say they share runs do.
  EXPECT_TRUE(first.count("lm_similarity_literal_k2"));
  EXPECT_THAT(first.at("lm_token_choice_k2").second, HasSubstr("entropy_vs_fluctuation"));
}

TableSpec ParseTable(const std::string& text) {
  TableSpec table;
  EXPECT_TRUE(google::protobuf::TextFormat::ParseFromString(text, &table)) << text;
  return table;
}

TEST(TablesTest, ClaimsAreChecked) {
  const std::string rows = R"pb(rows { label: "a" }
                                rows { label: "b" })pb";
  EXPECT_TRUE(ValidateClaims(ParseTable(rows + R"pb(
                claims { text: "x" column: VALID_PERPLEXITY row_a: "a" row_b: "b" expect: A_LOWER }
                claims {
                  text: "H(p) < H(r)"
                  column: AGGREGATED_ENTROPY
                  column_b: GATE_ENTROPY
                  row_a: "a"
                  expect: A_LOWER
                })pb"))
                  .ok());
  absl::Status s = ValidateClaims(ParseTable(rows + R"pb(
    claims { text: "x" column: VALID_PERPLEXITY row_a: "a" row_b: "c" expect: A_LOWER })pb"));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("claims[0] ('x'): row_b: no row 'c'"));
  s = ValidateClaims(ParseTable(rows + R"pb(
    claims { text: "x" column: VALID_PERPLEXITY row_a: "a" row_b: "b" expect: A_LOWER }
    claims { text: "y" column: GATE_ENTROPY row_a: "a" expect: A_LOWER })pb"));
  EXPECT_THAT(s.message(), HasSubstr("claims[1] ('y'): a claim within row 'a' compares a "
                                     "column with itself; set column_b"));
  s = ValidateClaims(ParseTable(rows + R"pb(
    claims { text: "z" column: VALID_PERPLEXITY row_a: "a" row_b: "b" })pb"));
  EXPECT_THAT(s.message(), HasSubstr("claims[0] ('z'): expect: unset"));
}

}  // namespace
}  // namespace moelab
