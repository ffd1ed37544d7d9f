#include "experiments/table_report.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <array>
#include <cmath>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "core/routing_metrics.h"
#include "google/protobuf/text_format.h"

namespace moelab {
namespace {

using ::testing::DoubleNear;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::Pair;

RunResult LmRun(double ppl, std::vector<double> fluctuation, bool non_causal = false,
                uint64_t seed = 1) {
  RunResult run;
  run.mutable_spec()->set_seed(seed);
  run.mutable_final()->set_valid_perplexity(ppl);
  run.mutable_final()->set_unigram_perplexity(900);
  run.set_non_causal_router_in_causal_model(non_causal);
  for (int e = 1; e <= 2; ++e) {
    EpochMetrics* epoch = run.add_epochs();
    epoch->set_epoch(e);
    for (double f : fluctuation) {
      LayerRoutingMetrics* layer = epoch->add_layers();
      layer->set_has_fluctuation(e > 1);
      layer->set_fluctuation_top1(f);
    }
  }
  return run;
}

// A run whose last epoch has one layer with these entropies.
RunResult EntropyRun(uint64_t seed, double gate_entropy, double aggregated_entropy) {
  RunResult run = LmRun(50, {0.1}, false, seed);
  LayerRoutingMetrics* layer = run.mutable_epochs(1)->mutable_layers(0);
  (*layer->mutable_values())["gate_entropy"] = gate_entropy;
  (*layer->mutable_values())["aggregated_entropy"] = aggregated_entropy;
  return run;
}

TableSpec Table() {
  TableSpec table;
  google::protobuf::TextFormat::ParseFromString(
      R"pb(
        name: "t"
        title: "T"
        paper: "P"
        paper_setting: "S"
        our_setting: "O"
        columns: [ VALID_PERPLEXITY, FLUCTUATION_TOP1 ]
        rows {
          label: "smoe"
          spec: "a.pbtxt"
          paper { column: FLUCTUATION_TOP1 value: 33 note: "Figure 3" }
        }
        rows {
          label: "sim"
          spec: "b.pbtxt"
          paper { column: FLUCTUATION_TOP1 value: 19 }
        }
        claims {
          text: "sim fluctuates less"
          column: FLUCTUATION_TOP1
          row_a: "sim"
          row_b: "smoe"
          expect: A_LOWER
        }
        claims {
          text: "sim has lower perplexity"
          column: VALID_PERPLEXITY
          row_a: "sim"
          row_b: "smoe"
          expect: A_LOWER
        }
        claims {
          text: "sim fluctuates more"
          column: FLUCTUATION_TOP1
          row_a: "sim"
          row_b: "smoe"
          expect: A_HIGHER
        }
      )pb",
      &table);
  return table;
}

// Seeds 1..3: smoe fluctuates 30, 34, 32%, sim 15, 17, 18%; perplexities
// 50, 52, 51 and 51, 53, 49.
std::vector<RowRuns> ThreeSeedRows(const TableSpec& table) {
  return {{&table.rows(0),
           {LmRun(50, {0.30}, false, 1), LmRun(52, {0.34}, false, 2), LmRun(51, {0.32}, false, 3)}},
          {&table.rows(1),
           {LmRun(51, {0.15}, true, 1), LmRun(53, {0.17}, true, 2), LmRun(49, {0.18}, true, 3)}}};
}

TEST(TableReportTest, ColumnValuesComeFromTheLastEpoch) {
  double v = 0;
  RunResult run = LmRun(50, {0.2, 0.4});
  ASSERT_TRUE(ColumnValue(run, FLUCTUATION_TOP1, &v));
  EXPECT_NEAR(v, 30, 1e-9);  // mean over layers, in percent
  ASSERT_TRUE(ColumnValue(run, VALID_PERPLEXITY, &v));
  EXPECT_EQ(v, 50);
  EXPECT_FALSE(ColumnValue(run, VALID_ACCURACY, &v));  // an LM run has no accuracy
  // Generation-time perplexity is measured on a validation subset; a result
  // without it is n/a rather than the full-set figure, which would not
  // compare with the other rows'.
  EXPECT_FALSE(ColumnValue(run, GENERATION_PERPLEXITY, &v));
  run.mutable_final()->set_generation_perplexity(61);
  ASSERT_TRUE(ColumnValue(run, GENERATION_PERPLEXITY, &v));
  EXPECT_EQ(v, 61);
}

TEST(TableReportTest, AggregationDiagnosticsPreferTheFinalEvaluation) {
  RunResult run = LmRun(50, {0.2, 0.4});
  double v = 0;
  // A router that does not aggregate has no self-weight.
  EXPECT_FALSE(ColumnValue(run, AGGREGATION_SELF_WEIGHT, &v));
  EXPECT_FALSE(ColumnValue(run, AGGREGATION_EFFECTIVE_NEIGHBOURS, &v));
  for (LayerRoutingMetrics& l : *run.mutable_epochs(1)->mutable_layers()) {
    (*l.mutable_values())["aggregation_self_weight"] = 0.9;
    (*l.mutable_values())["aggregation_effective_neighbours"] = 1.5;
  }
  // No final layers: the last epoch's.
  ASSERT_TRUE(ColumnValue(run, AGGREGATION_SELF_WEIGHT, &v));
  EXPECT_NEAR(v, 0.9, 1e-12);
  ASSERT_TRUE(ColumnValue(run, AGGREGATION_EFFECTIVE_NEIGHBOURS, &v));
  EXPECT_NEAR(v, 1.5, 1e-12);
  // With the final whole-split evaluation's layers: those, and only the
  // layers that aggregate.
  for (double w : {0.5, 0.7}) {
    LayerRoutingMetrics* l = run.mutable_final()->add_layers();
    (*l->mutable_values())["aggregation_self_weight"] = w;
    (*l->mutable_values())["aggregation_effective_neighbours"] = 10 * w;
  }
  run.mutable_final()->add_layers();  // a layer without aggregation
  ASSERT_TRUE(ColumnValue(run, AGGREGATION_SELF_WEIGHT, &v));
  EXPECT_NEAR(v, 0.6, 1e-12);
  ASSERT_TRUE(ColumnValue(run, AGGREGATION_EFFECTIVE_NEIGHBOURS, &v));
  EXPECT_NEAR(v, 6, 1e-12);
}

// Each routing column that describes the end of training reads the final
// whole-split evaluation, also when the last epoch's (capped) evaluation
// says otherwise; fluctuation and head change, which compare epochs, read
// the last epoch.
TEST(TableReportTest, EndOfTrainingRoutingColumnsReadTheFinalEvaluation) {
  RunResult run = LmRun(50, {0.2, 0.4});
  for (LayerRoutingMetrics& l : *run.mutable_epochs(1)->mutable_layers()) {
    (*l.mutable_values())["gate_entropy"] = 2.0;
    (*l.mutable_values())["aggregated_entropy"] = 1.0;
    l.set_load_cv(0.5);
    (*l.mutable_values())["aggregation_self_weight"] = 0.9;
    (*l.mutable_values())["aggregation_effective_neighbours"] = 1.5;
    l.set_has_head_change(true);
    l.set_head_change(0.25);
  }
  double v = 0;
  // Without final layers (results written before they were recorded): the
  // last epoch's.
  ASSERT_TRUE(ColumnValue(run, GATE_ENTROPY, &v));
  EXPECT_NEAR(v, 2.0, 1e-12);
  ASSERT_TRUE(ColumnValue(run, AGGREGATED_ENTROPY, &v));
  EXPECT_NEAR(v, 1.0, 1e-12);
  ASSERT_TRUE(ColumnValue(run, LOAD_CV, &v));
  EXPECT_NEAR(v, 0.5, 1e-12);
  // The final evaluation's layers differ from the last epoch's.
  for (int i = 0; i < 2; ++i) {
    LayerRoutingMetrics* l = run.mutable_final()->add_layers();
    l->set_layer(i);
    (*l->mutable_values())["gate_entropy"] = i == 0 ? 1.2 : 1.4;
    (*l->mutable_values())["aggregated_entropy"] = i == 0 ? 1.5 : 1.7;
    l->set_load_cv(i == 0 ? 0.1 : 0.3);
    (*l->mutable_values())["aggregation_self_weight"] = i == 0 ? 0.3 : 0.5;
    (*l->mutable_values())["aggregation_effective_neighbours"] = i == 0 ? 4 : 6;
    // The final evaluation compares no epochs; these must not be read.
    l->set_has_fluctuation(true);
    l->set_fluctuation_top1(0.9);
    l->set_has_head_change(true);
    l->set_head_change(0.9);
  }
  ASSERT_TRUE(ColumnValue(run, GATE_ENTROPY, &v));
  EXPECT_NEAR(v, 1.3, 1e-12);
  ASSERT_TRUE(ColumnValue(run, AGGREGATED_ENTROPY, &v));
  EXPECT_NEAR(v, 1.6, 1e-12);
  ASSERT_TRUE(ColumnValue(run, LOAD_CV, &v));
  EXPECT_NEAR(v, 0.2, 1e-12);
  ASSERT_TRUE(ColumnValue(run, AGGREGATION_SELF_WEIGHT, &v));
  EXPECT_NEAR(v, 0.4, 1e-12);
  ASSERT_TRUE(ColumnValue(run, AGGREGATION_EFFECTIVE_NEIGHBOURS, &v));
  EXPECT_NEAR(v, 5, 1e-12);
  ASSERT_TRUE(ColumnValue(run, FLUCTUATION_TOP1, &v));
  EXPECT_NEAR(v, 30, 1e-9);  // the last epoch's 0.2 and 0.4
  ASSERT_TRUE(ColumnValue(run, HEAD_CHANGE, &v));
  EXPECT_NEAR(v, 25, 1e-9);
}

// A one-row table ("sim") claiming Proposition 1, H(p) < H(r), within the
// row; its columns are the two entropies and `extra_column` if given.
TableSpec Proposition1Table(const std::string& extra_column = "") {
  TableSpec table;
  const std::string columns = absl::StrCat("GATE_ENTROPY, AGGREGATED_ENTROPY",
                                           extra_column.empty() ? "" : ", ", extra_column);
  EXPECT_TRUE(google::protobuf::TextFormat::ParseFromString(
      absl::StrCat("name: \"t\" title: \"T\" columns: [ ", columns, " ]", R"pb(
        rows { label: "sim" }
        claims {
          text: "H(p) < H(r) (Proposition 1)"
          column: AGGREGATED_ENTROPY
          column_b: GATE_ENTROPY
          row_a: "sim"
          expect: A_LOWER
        }
      )pb"),
      &table));
  return table;
}

// The within-row claim H(p) < H(r) compares the final evaluation's
// entropies: here the last epoch's say H(p) < H(r) and the final ones the
// opposite, and the verdict follows the final ones.
TEST(TableReportTest, WithinRowEntropyClaimUsesTheFinalEvaluation) {
  const TableSpec table = Proposition1Table("AGGREGATION_SELF_WEIGHT");
  RowRuns row{&table.rows(0), {}};
  for (uint64_t seed : {1, 2, 3}) {
    RunResult run = EntropyRun(seed, 1.5, 1.0);  // last epoch: H(p) - H(r) = -0.5
    LayerRoutingMetrics* l = run.mutable_final()->add_layers();
    (*l->mutable_values())["gate_entropy"] = 1.0;
    (*l->mutable_values())["aggregated_entropy"] = 1.2 + 0.01 * seed;  // final: H(p) - H(r) > 0
    (*l->mutable_values())["aggregation_self_weight"] = 0.25;
    row.runs.push_back(run);
  }
  const ClaimJudgement j = JudgeClaim(table.claims(0), {row});
  EXPECT_EQ(j.verdict, "opposite");
  EXPECT_NEAR(j.difference.mean, 0.22, 1e-9);
  const std::string md = RenderMarkdown(table, {row}, {});
  EXPECT_THAT(md, HasSubstr("| sim | 1.00 ± 0.00 | 1.22 ± 0.01 | 0.250 ± 0.000 |"));
}

TEST(TableReportTest, RegisteredLayerMetricsBecomeColumns) {
  TableSpec table = Table();
  table.add_layer_metrics("gate_margin");
  ASSERT_TRUE(ValidateLayerMetrics(table).ok());
  RowRuns row;
  row.row = &table.rows(0);
  for (const double margin : {0.2, 0.4}) {
    RunResult run = LmRun(50, {0.1}, false, row.runs.size() + 1);
    // The final evaluation's two layers; the mean over layers is the value.
    for (const double offset : {-0.1, 0.1}) {
      (*run.mutable_final()->add_layers()->mutable_values())["gate_margin"] = margin + offset;
    }
    row.runs.push_back(run);
  }
  double v = 0;
  ASSERT_TRUE(LayerMetricValue(row.runs[0], "gate_margin", &v));
  EXPECT_NEAR(v, 0.2, 1e-12);
  EXPECT_FALSE(LayerMetricValue(row.runs[0], "no_such_metric", &v));
  const Stat s = LayerMetricStat(row, "gate_margin");
  EXPECT_EQ(s.n, 2);
  EXPECT_NEAR(s.mean, 0.3, 1e-12);
  const std::string md = RenderMarkdown(table, {row}, {});
  EXPECT_THAT(md, HasSubstr("Gate margin r(1) − r(2)"));
  EXPECT_THAT(md, HasSubstr("0.3 ± 0.14 |"));
  EXPECT_THAT(RenderCsv(table, {row}), HasSubstr(",gate_margin,0.3,"));

  table.add_layer_metrics("no_such_metric");
  const absl::Status unknown = ValidateLayerMetrics(table);
  EXPECT_FALSE(unknown.ok());
  EXPECT_THAT(unknown.message(), HasSubstr("no_such_metric"));
  EXPECT_THAT(unknown.message(), HasSubstr("gate_margin"));
}

TEST(TableReportTest, HeadChangeAndLeak) {
  RunResult run = LmRun(50, {0.2, 0.4, 0.1});
  double v = 0;
  EXPECT_FALSE(ColumnValue(run, HEAD_CHANGE, &v));
  auto* layers = run.mutable_epochs(1)->mutable_layers();
  layers->Mutable(0)->set_has_head_change(true);
  layers->Mutable(0)->set_head_change(0.1);
  layers->Mutable(1)->set_has_head_change(true);
  layers->Mutable(1)->set_head_change(0.3);
  layers->Mutable(2)->set_head_change(0.9);  // no head change recorded: skipped
  ASSERT_TRUE(ColumnValue(run, HEAD_CHANGE, &v));
  EXPECT_NEAR(v, 20, 1e-9);  // percent
  // The leak is there only when it was measured on some sequences.
  EXPECT_FALSE(ColumnValue(run, LEAK_NLL_GAP, &v));
  run.mutable_final()->set_leak_nll_gap(0.042);
  EXPECT_FALSE(ColumnValue(run, LEAK_NLL_GAP, &v));
  run.mutable_final()->set_leak_sequences(32);
  ASSERT_TRUE(ColumnValue(run, LEAK_NLL_GAP, &v));
  EXPECT_EQ(v, 0.042);
  EXPECT_EQ(ColumnTitle(LEAK_NLL_GAP),
            "Leak: generation-time minus teacher-forced NLL (nats/token)");
}

TEST(TableReportTest, MeanAndSampleStdOverSeeds) {
  TableSpec table = Table();
  RowRuns row{&table.rows(0), {LmRun(10, {0.1}), LmRun(20, {0.3}), LmRun(30, {0.5})}};
  Stat s = ColumnStat(row, VALID_PERPLEXITY);
  EXPECT_EQ(s.n, 3);
  EXPECT_DOUBLE_EQ(s.mean, 20);
  EXPECT_DOUBLE_EQ(s.std, 10);
}

TEST(TableReportTest, ClaimsAreJudgedOnPairedDifferences) {
  TableSpec table = Table();
  const std::vector<RowRuns> rows = ThreeSeedRows(table);
  // Fluctuation, sim - smoe per seed: -15, -17, -14; mean -15.333, sample sd
  // sqrt(7/3) = 1.5275, t(0.975, 2) = 4.3027: -15.333 ± 3.7946.
  ClaimJudgement fluctuation = JudgeClaim(table.claims(0), rows);
  EXPECT_EQ(fluctuation.verdict, "yes");
  EXPECT_EQ(fluctuation.difference.n, 3);
  EXPECT_THAT(fluctuation.difference.seeds, ElementsAre(1, 2, 3));
  EXPECT_NEAR(fluctuation.difference.mean, -46.0 / 3, 1e-9);
  EXPECT_NEAR(fluctuation.difference.lo, -19.128, 1e-3);
  EXPECT_NEAR(fluctuation.difference.hi, -11.539, 1e-3);
  // The same data against the opposite expectation.
  EXPECT_EQ(JudgeClaim(table.claims(2), rows).verdict, "opposite");
  // Perplexity differences 1, 1, -2: mean 0, sd sqrt(3), standard error 1,
  // so the interval is ±t(0.975, 2) = ±4.3027 and contains 0.
  ClaimJudgement perplexity = JudgeClaim(table.claims(1), rows);
  EXPECT_EQ(perplexity.verdict, "inconclusive");
  EXPECT_NEAR(perplexity.difference.mean, 0, 1e-12);
  EXPECT_NEAR(perplexity.difference.lo, -4.30265, 1e-4);
  EXPECT_NEAR(perplexity.difference.hi, 4.30265, 1e-4);
}

TEST(TableReportTest, ClaimsPairRunsBySeedNotByPosition) {
  TableSpec table = Table();
  // smoe has seeds 1, 2, 3; sim has 3, 2 and 4 (in that order): only seeds
  // 2 and 3 pair. Seed 1's 100 would swing the mean if it were used.
  const std::vector<RowRuns> rows = {
      {&table.rows(0),
       {LmRun(100, {0.3}, false, 1), LmRun(11, {0.3}, false, 2), LmRun(12, {0.3}, false, 3)}},
      {&table.rows(1),
       {LmRun(14, {0.3}, false, 3), LmRun(10, {0.3}, false, 2), LmRun(0, {0.3}, false, 4)}}};
  // Differences sim - smoe: seed 2: -1, seed 3: 2. Mean 0.5, sd 2.1213,
  // standard error 1.5, t(0.975, 1) = 12.7062: 0.5 ± 19.0593.
  const ClaimJudgement j = JudgeClaim(table.claims(1), rows);
  EXPECT_THAT(j.difference.seeds, ElementsAre(2, 3));
  EXPECT_EQ(j.difference.n, 2);
  EXPECT_NEAR(j.difference.mean, 0.5, 1e-12);
  EXPECT_NEAR(j.difference.lo, 0.5 - 19.0593, 1e-3);
  EXPECT_NEAR(j.difference.hi, 0.5 + 19.0593, 1e-3);
  EXPECT_EQ(j.verdict, "inconclusive");
}

// Two runs of one seed in a row leave the pairing undefined: the claim says
// so instead of keeping one of them.
TEST(TableReportTest, DuplicateSeedsMakeAClaimNotApplicable) {
  TableSpec table = Table();
  std::vector<RowRuns> rows = ThreeSeedRows(table);
  rows[1].runs.push_back(LmRun(40, {0.9}, false, 2));  // sim: a second seed 2
  const ClaimJudgement j = JudgeClaim(table.claims(0), rows);
  EXPECT_EQ(j.verdict, "n/a (duplicate seed 2 in row 'sim')");
  EXPECT_EQ(j.difference.duplicate, "duplicate seed 2 in row 'sim'");
  EXPECT_EQ(j.difference.n, 0);
  EXPECT_TRUE(j.difference.seeds.empty());
  // Both sides with duplicates name both.
  rows[0].runs.push_back(LmRun(40, {0.9}, false, 1));
  EXPECT_EQ(PairedDifferences(rows[1], FLUCTUATION_TOP1, rows[0], FLUCTUATION_TOP1).duplicate,
            "duplicate seed 2 in row 'sim'; duplicate seed 1 in row 'smoe'");
  const std::string md = RenderMarkdown(table, rows, {});
  EXPECT_THAT(md, HasSubstr("| sim fluctuates less | sim − smoe, Fluctuation top-1 (%) | < 0 | "
                            "– | – | 0 | n/a (duplicate seed 2 in row 'sim'; duplicate seed 1 "
                            "in row 'smoe') |"));
  // A within-row claim reports a row's duplicate once.
  Claim within;
  within.set_row_a("sim");
  within.set_column(AGGREGATED_ENTROPY);
  within.set_column_b(GATE_ENTROPY);
  within.set_expect(A_LOWER);
  EXPECT_EQ(JudgeClaim(within, rows).verdict, "n/a (duplicate seed 2 in row 'sim')");
}

// A claim may compare a registered per-layer metric (Claim.layer_metric):
// each run's final-evaluation mean over layers, paired by seed.
TEST(TableReportTest, AClaimOverARegisteredLayerMetric) {
  TableSpec table = Table();
  auto run = [](uint64_t seed, std::vector<double> margins) {
    RunResult r = LmRun(50, {0.1}, false, seed);
    for (double m : margins)
      (*r.mutable_final()->add_layers()->mutable_values())["gate_margin"] = m;
    return r;
  };
  // sim - smoe per seed: (0.3 + 0.5) / 2 - 0.2 = 0.2, 0.25 - 0.1 = 0.15,
  // 0.45 - 0.2 = 0.25; mean 0.2, sd 0.05, half-width 4.3027 * 0.05 / sqrt(3).
  const std::vector<RowRuns> rows = {
      {&table.rows(0), {run(1, {0.2, 0.2}), run(2, {0.1}), run(3, {0.2})}},
      {&table.rows(1), {run(1, {0.3, 0.5}), run(2, {0.25}), run(3, {0.45})}}};
  Claim claim;
  claim.set_text("sim routes with larger margins");
  claim.set_layer_metric("gate_margin");
  claim.set_row_a("sim");
  claim.set_row_b("smoe");
  claim.set_expect(A_HIGHER);
  const ClaimJudgement j = JudgeClaim(claim, rows);
  EXPECT_EQ(j.difference.n, 3);
  EXPECT_NEAR(j.difference.mean, 0.2, 1e-12);
  EXPECT_NEAR(j.difference.lo, 0.2 - 4.302653 * 0.05 / std::sqrt(3.0), 1e-5);
  EXPECT_EQ(j.verdict, "yes");
  *table.add_claims() = claim;
  EXPECT_THAT(RenderMarkdown(table, rows, {}),
              HasSubstr("| sim routes with larger margins | sim − smoe, Gate margin r(1) − r(2) | "
                        "> 0 | 0.200 |"));
  // Within a row, a metric against a column: H(r) as a column, the margin
  // as a metric (a nonsense claim, but a well-formed one).
  Claim mixed;
  mixed.set_row_a("sim");
  mixed.set_column(GATE_ENTROPY);
  mixed.set_layer_metric_b("gate_margin");
  EXPECT_FALSE(ClaimMeasureA(mixed) == ClaimMeasureB(mixed));
  EXPECT_EQ(ClaimMeasureB(mixed).layer_metric, "gate_margin");
}

TEST(TableReportTest, OnePairIsInconclusiveHoweverLarge) {
  TableSpec table = Table();
  const std::vector<RowRuns> rows = {{&table.rows(0), {LmRun(50, {0.9}, false, 1)}},
                                     {&table.rows(1), {LmRun(50, {0.1}, false, 1)}}};
  const ClaimJudgement j = JudgeClaim(table.claims(0), rows);
  EXPECT_EQ(j.difference.n, 1);
  EXPECT_NEAR(j.difference.mean, -80, 1e-9);
  EXPECT_EQ(j.verdict, "inconclusive");
  EXPECT_EQ(JudgeClaim(table.claims(0), {rows[0]}).verdict, "n/a (row missing)");
}

TEST(TableReportTest, WithinRowClaimComparesTwoColumnsOfTheSameRuns) {
  const TableSpec table = Proposition1Table();
  // H(p) - H(r) per seed: -0.5, -0.5, -0.55; mean -0.51667, sd 0.028868,
  // standard error 0.016667, half-width 4.3027 * 0.016667 = 0.071711.
  const std::vector<RowRuns> rows = {
      {&table.rows(0),
       {EntropyRun(1, 1.5, 1.0), EntropyRun(2, 1.6, 1.1), EntropyRun(3, 1.45, 0.9)}}};
  const ClaimJudgement j = JudgeClaim(table.claims(0), rows);
  EXPECT_EQ(j.verdict, "yes");
  EXPECT_EQ(j.difference.n, 3);
  EXPECT_NEAR(j.difference.mean, -0.516667, 1e-6);
  EXPECT_NEAR(j.difference.hi, -0.516667 + 0.071711, 1e-5);
  const std::string md = RenderMarkdown(table, rows, {});
  EXPECT_THAT(md, HasSubstr("| H(p) < H(r) (Proposition 1) | sim: Entropy H(p) (nats) − "
                            "Entropy H(r) (nats) | < 0 | -0.517 | [-0.588, -0.445] | 3 | yes |"));
}

TEST(TableReportTest, SmallExpertGflopsKeepThreeSignificantDigits) {
  // A CPU-scale model spends ~0.0003 expert GFLOPs per token: two decimals
  // would print 0.00 for every router.
  TableSpec table = Table();
  table.clear_columns();
  table.add_columns(EXPERT_GFLOPS_PER_TOKEN);
  table.add_columns(VALID_PERPLEXITY);
  RunResult a = LmRun(50, {0.3}), b = LmRun(50, {0.3});
  a.mutable_final()->set_expert_flops_per_token(262144);
  b.mutable_final()->set_expert_flops_per_token(393216);
  const std::vector<RowRuns> rows = {{&table.rows(0), {a, b}}};
  EXPECT_THAT(RenderMarkdown(table, rows, {}),
              HasSubstr("| smoe | 0.000328 ± 0.000093 | 50.00 ± 0.00 |"));
}

TEST(TableReportTest, ClaimsAndMarkdown) {
  TableSpec table = Table();
  const std::vector<RowRuns> rows = ThreeSeedRows(table);
  const std::string md = RenderMarkdown(table, rows, {"t_fluctuation.png"});
  EXPECT_THAT(md, HasSubstr("| smoe | 51.00 ± 1.00 | 32.0 ± 2.0 | 33 |"));
  EXPECT_THAT(md, HasSubstr("| sim † |"));
  EXPECT_THAT(md, HasSubstr("Fluctuation top-1 (%) *paper*"));
  EXPECT_THAT(md, HasSubstr("*paper* smoe, Fluctuation top-1 (%): Figure 3"));
  EXPECT_THAT(md, HasSubstr("![t_fluctuation.png]"));
  EXPECT_THAT(md, HasSubstr("| sim fluctuates less | sim − smoe, Fluctuation top-1 (%) | < 0 | "
                            "-15.3 | [-19.1, -11.5] | 3 | yes |"));
  EXPECT_THAT(md, HasSubstr("| sim has lower perplexity | sim − smoe, Perplexity (valid) | < 0 | "
                            "0.00 | [-4.30, 4.30] | 3 | inconclusive |"));
  EXPECT_THAT(md, HasSubstr("| > 0 | -15.3 | [-19.1, -11.5] | 3 | opposite |"));
  // Runs written before provenance was recorded share one revision.
  EXPECT_THAT(md, HasSubstr("- Code revision of every run: `unknown (before provenance)`"));
  EXPECT_THAT(md, Not(HasSubstr("‡")));
  const std::string csv = RenderCsv(table, rows);
  EXPECT_THAT(csv, HasSubstr("row,column,mean,std,n,paper_value,revisions\n"));
  EXPECT_THAT(csv,
              HasSubstr("\"smoe\",FLUCTUATION_TOP1,32,2,3,33,\"unknown (before provenance)\""));
}

TEST(TableReportTest, IdentityAggregationIsMarked) {
  TableSpec table = Table();
  std::vector<RowRuns> rows = ThreeSeedRows(table);
  // Seed 1 flags layers 0 and 1, seed 3 layer 0 (listed twice); layer 2
  // aggregates but is not flagged, and its low self-weight must not enter
  // the footnote.
  for (int s : {0, 2}) {
    RunResult& run = rows[1].runs[s];
    run.add_identity_aggregation_layers(0);
    run.add_identity_aggregation_layers(s == 0 ? 1 : 0);
    const double weights[3] = {s == 0 ? 0.996 : 0.998, s == 0 ? 0.9925 : 0.97, 0.2};
    for (int l = 0; l < 3; ++l) {
      LayerRoutingMetrics* layer = run.mutable_final()->add_layers();
      layer->set_layer(l);
      (*layer->mutable_values())["aggregation_self_weight"] = weights[l];
    }
  }
  const std::string md = RenderMarkdown(table, rows, {});
  EXPECT_THAT(md, HasSubstr("| sim † ‡ |"));
  EXPECT_THAT(md, HasSubstr("| smoe |"));
  EXPECT_THAT(md, HasSubstr(absl::StrFormat(
                      "‡ The aggregation is effectively the identity: in these MoE layers the "
                      "mean weight W_ii a token keeps on itself is above %g",
                      kIdentityAggregationSelfWeight)));
  EXPECT_THAT(md, HasSubstr("token choice under another name"));
  EXPECT_THAT(md, HasSubstr("- sim: MoE layer 0: self-weight 0.9970 in 2 of 3 seeds; "
                            "MoE layer 1: self-weight 0.9925 in 1 of 3 seeds\n"));
}

TEST(TableReportTest, AnAblationRowIsMarkedAsPEqualsRByDesign) {
  TableSpec table = Table();
  std::vector<RowRuns> rows = ThreeSeedRows(table);
  for (RunResult& run : rows[1].runs) {
    run.mutable_spec()->mutable_router()->mutable_similarity_aware()->set_ablate_aggregation(true);
    run.add_identity_aggregation_layers(0);
    LayerRoutingMetrics* layer = run.mutable_final()->add_layers();
    layer->set_layer(0);
    (*layer->mutable_values())["aggregation_self_weight"] = 1.0;
  }
  const std::string md = RenderMarkdown(table, rows, {});
  EXPECT_THAT(md, HasSubstr("- sim (the ablation row: p = r by design): MoE layer 0: "
                            "self-weight 1.0000 in 3 of 3 seeds\n"));
  EXPECT_THAT(md, HasSubstr("Unless it is an ablation row"));
}

TEST(TableReportTest, EntropyVsFluctuationPerRowAndPooled) {
  TableSpec table = Table();
  auto run = [](uint64_t seed, std::vector<std::array<double, 3>> layers) {
    RunResult r;
    r.mutable_spec()->set_seed(seed);
    EpochMetrics* first = r.add_epochs();
    (*first->add_layers()->mutable_values())["gate_entropy"] = 9;  // not the last epoch: ignored
    EpochMetrics* last = r.add_epochs();
    for (const auto& [gate, aggregated, fluctuation] : layers) {
      LayerRoutingMetrics* l = last->add_layers();
      l->set_has_fluctuation(true);
      (*l->mutable_values())["gate_entropy"] = gate;
      if (aggregated > 0) (*l->mutable_values())["aggregated_entropy"] = aggregated;
      l->set_fluctuation_top1(fluctuation);
    }
    return r;
  };
  // smoe (H(r)): (1.0, 10), (1.2, 20), (1.1, 15): r = 1 within the row.
  // sim (H(p), not H(r) = 5): (2.0, 30), (2.1, 25), (2.2, 20): r = -1.
  const std::vector<RowRuns> rows = {
      {&table.rows(0), {run(1, {{1.0, 0, 0.10}, {1.2, 0, 0.20}}), run(2, {{1.1, 0, 0.15}})}},
      {&table.rows(1), {run(1, {{5, 2.0, 0.30}, {5, 2.1, 0.25}}), run(2, {{5, 2.2, 0.20}})}}};
  EXPECT_THAT(EntropyFluctuationPoints(rows[1]),
              ElementsAre(Pair(2.0, DoubleNear(30, 1e-9)), Pair(2.1, DoubleNear(25, 1e-9)),
                          Pair(2.2, DoubleNear(20, 1e-9))));
  // Pooled over the six points: means 1.6 and 20, Sxy = 15, Sxx = 1.54,
  // Syy = 250, r = 15 / sqrt(385) = 0.764.
  const std::string md = RenderEntropyVsFluctuation(rows);
  EXPECT_THAT(md, HasSubstr("| smoe | within the row | 3 | 1.000 |"));
  EXPECT_THAT(md, HasSubstr("| sim | within the row | 3 | -1.000 |"));
  EXPECT_THAT(md, HasSubstr("| all rows | pooled over all rows | 6 | 0.764 |"));
  // Two points always correlate perfectly: no r.
  const std::vector<RowRuns> two = {{&table.rows(0), {run(1, {{1.0, 0, 0.1}, {1.2, 0, 0.3}})}}};
  EXPECT_THAT(RenderEntropyVsFluctuation(two), HasSubstr("| smoe | within the row | 2 | – |"));
}

RunResult SourceRun() {
  RunResult run;
  run.set_spec_hash("0123abcd");
  run.mutable_source()->set_revision("aaaaaaaaaaaa");
  run.set_wall_time_s(100);
  for (int e = 1; e <= 3; ++e) {
    EpochMetrics* epoch = run.add_epochs();
    epoch->set_epoch(e);
    epoch->set_step(400 * e);
    epoch->set_epoch_wall_s(30);
  }
  run.mutable_final()->set_valid_loss(4.0123456789012345);
  return run;
}

TEST(TableReportTest, SourceRunIdentityIgnoresWallClockFields) {
  const RunResult run = SourceRun();
  EXPECT_EQ(SourceRunIdentity(run),
            "spec_hash=0123abcd revision=aaaaaaaaaaaa epochs=3 step=1200 "
            "valid_loss=4.0123456789");
  RunResult slower = run;
  slower.set_wall_time_s(900);
  slower.mutable_epochs(2)->set_epoch_wall_s(300);
  slower.mutable_epochs(2)->set_rss_mb(1000);
  EXPECT_EQ(SourceRunIdentity(slower), SourceRunIdentity(run));
  // What tells one run of a row from another.
  RunResult other_code = run;
  other_code.mutable_source()->set_revision("bbbbbbbbbbbb");
  RunResult other_spec = run;
  other_spec.set_spec_hash("4567ef01");
  RunResult longer = run;
  longer.add_epochs()->set_step(1600);
  RunResult retrained = run;  // e.g. again with other threads
  retrained.mutable_final()->set_valid_loss(4.0123456);
  for (const RunResult& other : {other_code, other_spec, longer, retrained}) {
    EXPECT_NE(SourceRunIdentity(other), SourceRunIdentity(run));
  }
}

TEST(TableReportTest, TrainingFreeRunIsMadeAgainWhenItsSourceRunChanged) {
  const std::string then = SourceRunIdentity(SourceRun());
  // The same run: it stands, whatever the file times (the record may end
  // with a newline).
  EXPECT_EQ(TrainingFreeRerunReason("smoe", then, then), "");
  EXPECT_EQ(TrainingFreeRerunReason("smoe", then + "\n", then), "");
  // The source row was run again, under other code.
  RunResult again = SourceRun();
  again.mutable_source()->set_revision("bbbbbbbbbbbb");
  const std::string now = SourceRunIdentity(again);
  const std::string reason = TrainingFreeRerunReason("smoe", then + "\n", now);
  EXPECT_THAT(reason, HasSubstr("it evaluated another run of row 'smoe'"));
  EXPECT_THAT(reason, HasSubstr("revision=aaaaaaaaaaaa"));
  EXPECT_THAT(reason, HasSubstr("revision=bbbbbbbbbbbb"));
  // Nothing recorded (made before reproduce recorded it): unknown, made again.
  EXPECT_THAT(TrainingFreeRerunReason("smoe", std::nullopt, now),
              HasSubstr("records no run of row 'smoe' (no source_run.txt)"));
}

TEST(TableReportTest, RevisionOfARun) {
  RunResult run;
  EXPECT_EQ(RunRevision(run), kRevisionBeforeProvenance);
  run.mutable_source();  // present but empty: still nothing recorded
  EXPECT_EQ(RunRevision(run), kRevisionBeforeProvenance);
  run.mutable_source()->set_revision("unknown");  // recorded, not from a git checkout
  EXPECT_EQ(RunRevision(run), "unknown");
  run.mutable_source()->set_revision("0123456789ab+ffeeddccbbaa");
  EXPECT_EQ(RunRevision(run), "0123456789ab+ffeeddccbbaa");
  // A source with its parts but no label gets the label from them.
  run.mutable_source()->clear_revision();
  run.mutable_source()->set_commit("0123456789abcdef0123456789abcdef01234567");
  EXPECT_EQ(RunRevision(run), "0123456789ab");
}

TEST(TableReportTest, MixedRevisionsAreRefusedAndNamed) {
  TableSpec table = Table();
  std::vector<RowRuns> rows = ThreeSeedRows(table);
  for (RowRuns& row : rows) {
    for (RunResult& run : row.runs) run.mutable_source()->set_revision("aaaaaaaaaaaa");
  }
  EXPECT_TRUE(CheckSingleRevision(table, rows).ok());
  EXPECT_THAT(RenderMarkdown(table, rows, {}),
              HasSubstr("- Code revision of every run: `aaaaaaaaaaaa`\n"));
  // sim's seed 2 is from other code, its seed 3 from before provenance.
  rows[1].runs[1].mutable_source()->set_revision("bbbbbbbbbbbb");
  rows[1].runs[2].clear_source();
  const absl::Status status = CheckSingleRevision(table, rows);
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(status.message(), HasSubstr("table 't': its runs come from 3 code revisions"));
  EXPECT_THAT(status.message(), HasSubstr("row 'smoe': aaaaaaaaaaaa (seeds 1, 2, 3)"));
  EXPECT_THAT(status.message(),
              HasSubstr("row 'sim': aaaaaaaaaaaa (seed 1); bbbbbbbbbbbb (seed 2); "
                        "unknown (before provenance) (seed 3)"));
  EXPECT_THAT(status.message(), HasSubstr("--rerun_stale"));
  EXPECT_THAT(status.message(), HasSubstr("--allow_mixed_revisions"));
  // Rendered anyway: a warning at the top and each row's revisions.
  const std::string md = RenderMarkdown(table, rows, {});
  EXPECT_THAT(md, HasSubstr("# T\n\n> **Warning: the runs of this table come from 3 different "
                            "code revisions**"));
  EXPECT_THAT(md, HasSubstr("| Code revision |"));
  EXPECT_THAT(md, HasSubstr("| smoe | 51.00 ± 1.00 | 32.0 ± 2.0 | 33 | aaaaaaaaaaaa |"));
  EXPECT_THAT(md, HasSubstr(" | aaaaaaaaaaaa, bbbbbbbbbbbb, unknown (before provenance) |"));
  EXPECT_THAT(RenderCsv(table, rows),
              HasSubstr(",\"aaaaaaaaaaaa;bbbbbbbbbbbb;unknown (before provenance)\"\n"));
}

TEST(TableReportTest, TrainingFreeRowsNameTheirCheckpointsRevisions) {
  TableSpec table = Table();
  TableRow* swapped = table.add_rows();
  swapped->set_label("swapped");
  swapped->set_init_from_row("smoe");
  std::vector<RowRuns> rows = ThreeSeedRows(table);
  rows.push_back({&table.rows(2), rows[0].runs});
  for (RowRuns& row : rows) {
    for (RunResult& run : row.runs) run.mutable_source()->set_revision("aaaaaaaaaaaa");
  }
  // The trained model's seed 3 comes from other code: the swapped row,
  // itself all from one revision, evaluated that checkpoint.
  rows[0].runs[2].mutable_source()->set_revision("cccccccccccc");
  const absl::Status status = CheckSingleRevision(table, rows);
  EXPECT_THAT(status.message(), HasSubstr("row 'smoe': aaaaaaaaaaaa (seeds 1, 2); "
                                          "cccccccccccc (seed 3)\n"));
  EXPECT_THAT(status.message(), HasSubstr("row 'swapped': aaaaaaaaaaaa (seeds 1, 2, 3) "
                                          "(evaluating the checkpoints of row 'smoe')"));
  EXPECT_THAT(RenderMarkdown(table, rows, {}),
              HasSubstr(" | aaaaaaaaaaaa (checkpoints: aaaaaaaaaaaa, cccccccccccc) |\n"));
}

// A run of `seed` whose epochs 2..N have top-1 fluctuation top1[e - 2] (a
// share) as the mean of two MoE layers (value ± 0.02) and top-k set
// fluctuation 0.1 above it; a third layer has no fluctuation (it must not
// count). Epoch 1 has none, as in the trainer.
RunResult CurveRun(uint64_t seed, const std::vector<double>& top1) {
  RunResult run;
  run.mutable_spec()->set_seed(seed);
  run.mutable_epochs()->Add()->set_epoch(1);
  for (size_t i = 0; i < top1.size(); ++i) {
    EpochMetrics* epoch = run.add_epochs();
    epoch->set_epoch(static_cast<int>(i) + 2);
    for (double offset : {-0.02, 0.02}) {
      LayerRoutingMetrics* layer = epoch->add_layers();
      layer->set_has_fluctuation(true);
      layer->set_fluctuation_top1(top1[i] + offset);
      layer->set_fluctuation_topk(top1[i] + offset + 0.1);
    }
    LayerRoutingMetrics* without = epoch->add_layers();
    without->set_fluctuation_top1(0.9);
    without->set_fluctuation_topk(0.9);
  }
  return run;
}

TableSpec CurveTable() {
  TableSpec table;
  google::protobuf::TextFormat::ParseFromString(
      R"pb(
        name: "curve"
        title: "Curve"
        columns: [ FLUCTUATION_TOP1, FLUCTUATION_TOPK ]
        rows { label: "smoe" }
        rows { label: "sim \"cos\"" }
      )pb",
      &table);
  return table;
}

// Two rows, three seeds, epochs 2-4 (in percent):
//   smoe  e2: 40 44 42   e3: 30 33 36   e4: 20 22 21
//   sim   e2: 20 22 24   e3: 15 15 15   e4: 10 13 10
std::vector<RowRuns> CurveRows(const TableSpec& table) {
  return {{&table.rows(0),
           {CurveRun(1, {0.40, 0.30, 0.20}), CurveRun(2, {0.44, 0.33, 0.22}),
            CurveRun(3, {0.42, 0.36, 0.21})}},
          {&table.rows(1),
           {CurveRun(1, {0.20, 0.15, 0.10}), CurveRun(2, {0.22, 0.15, 0.13}),
            CurveRun(3, {0.24, 0.15, 0.10})}}};
}

TEST(FluctuationPerEpochTest, CellsAreSeedMeansWithTIntervals) {
  const TableSpec table = CurveTable();
  const std::vector<RowRuns> rows = CurveRows(table);
  const std::vector<FluctuationCurve> curves = FluctuationCurves(rows, /*top_k=*/false);
  ASSERT_EQ(curves.size(), 2u);
  EXPECT_EQ(LastFluctuationEpoch(curves), 4);
  // By hand: mean and sample sd of the three seeds; the half-width is
  // t(0.975, 2) sd / sqrt(3) with t(0.975, 2) = 4.302652729911275 (tables).
  const double t = 4.302652729911275;
  struct Expected {
    int epoch;
    double mean, sd;
  };
  const std::vector<std::vector<Expected>> expected = {
      {{2, 42, 2}, {3, 33, 3}, {4, 21, 1}},
      {{2, 22, 2}, {3, 15, 0}, {4, 11, std::sqrt(3.0)}},
  };
  for (int r = 0; r < 2; ++r) {
    EXPECT_EQ(curves[r].row, &rows[r]);
    ASSERT_EQ(curves[r].cells.size(), 3u);
    for (int c = 0; c < 3; ++c) {
      const FluctuationCell& cell = curves[r].cells[c];
      SCOPED_TRACE(absl::StrCat("row ", r, " epoch ", cell.epoch));
      EXPECT_EQ(cell.epoch, expected[r][c].epoch);
      EXPECT_EQ(cell.interval.n, 3);
      EXPECT_NEAR(cell.interval.mean, expected[r][c].mean, 1e-9);
      EXPECT_NEAR(cell.interval.half_width, t * expected[r][c].sd / std::sqrt(3.0), 1e-6);
    }
  }
  // The paper's figure (the last column) is the main table's fluctuation.
  EXPECT_NEAR(ColumnStat(rows[0], FLUCTUATION_TOP1).mean, curves[0].cells.back().interval.mean,
              1e-9);
  // Top-k set: 10 points above, the same spread.
  const std::vector<FluctuationCurve> topk = FluctuationCurves(rows, /*top_k=*/true);
  ASSERT_EQ(topk.size(), 2u);
  EXPECT_NEAR(topk[1].cells[2].interval.mean, 21, 1e-9);
  EXPECT_NEAR(topk[1].cells[2].interval.half_width, t, 1e-6);
}

TEST(FluctuationPerEpochTest, MarkdownSection) {
  const TableSpec table = CurveTable();
  const std::vector<RowRuns> rows = CurveRows(table);
  const std::string md =
      RenderFluctuationPerEpoch(table, rows, {"curve_fluctuation.png", "curve_fluctuation.csv"});
  EXPECT_THAT(md, HasSubstr("\n## Fluctuation per epoch\n"));
  EXPECT_THAT(md, HasSubstr("n = 3 seeds per cell"));
  EXPECT_THAT(md, HasSubstr("**The last column (epochs 3 → 4) is the paper's figure**"));
  const std::string header =
      "| Row | e = 2 | e = 3 | **e = 4: the paper's figure** |\n| --- | ---: | ---: | ---: |\n";
  // Top-1, then the top-k set (the table has that column).
  EXPECT_THAT(md,
              HasSubstr(header + "| smoe | 42.0 ± 5.0 | 33.0 ± 7.5 | **21.0 ± 2.5** |\n"
                                 "| sim \"cos\" | 22.0 ± 5.0 | 15.0 ± 0.0 | **11.0 ± 4.3** |\n"));
  EXPECT_THAT(md, HasSubstr(header + "| smoe | 52.0 ± 5.0 | 43.0 ± 7.5 | **31.0 ± 2.5** |\n"));
  EXPECT_THAT(md, HasSubstr("![Top-1 fluctuation per epoch](curve_fluctuation.png)"));
  EXPECT_THAT(md, HasSubstr("Shaded: the 95% t-interval of that mean"));
  EXPECT_THAT(md, HasSubstr("[curve_fluctuation.csv](curve_fluctuation.csv)"));
  // Without the picture and data file, no links to them.
  const std::string bare = RenderFluctuationPerEpoch(table, rows, {});
  EXPECT_THAT(bare, Not(HasSubstr(".png")));
  EXPECT_THAT(bare, Not(HasSubstr(".csv")));
  // A table without a fluctuation column has no such section in its report.
  TableSpec perplexity_only = table;
  perplexity_only.clear_columns();
  perplexity_only.add_columns(VALID_PERPLEXITY);
  EXPECT_FALSE(HasFluctuationColumn(perplexity_only));
  EXPECT_THAT(RenderMarkdown(perplexity_only, rows, {}), Not(HasSubstr("Fluctuation per epoch")));
  EXPECT_THAT(RenderMarkdown(table, rows, {}), HasSubstr("Fluctuation per epoch"));
}

TEST(FluctuationPerEpochTest, CellsWithOtherCountsSayTheirN) {
  const TableSpec table = CurveTable();
  std::vector<RowRuns> rows = CurveRows(table);
  // sim's seed 3 stopped after epoch 3; a training-free row has no epochs.
  rows[1].runs[2] = CurveRun(3, {0.24, 0.15});
  TableSpec with_free = table;
  with_free.add_rows()->set_label("swapped");
  rows.push_back({&with_free.rows(2), {RunResult()}});
  const std::string md = RenderFluctuationPerEpoch(table, rows, {});
  EXPECT_THAT(md, HasSubstr("| sim \"cos\" | 22.0 ± 5.0 | 15.0 ± 0.0 | **11.5 ± 19.1 (n = 2)** |"));
  EXPECT_THAT(md, HasSubstr("Rows without per-epoch fluctuation (no training epochs): swapped."));
}

TEST(FluctuationPerEpochTest, CsvHasOneLinePerRowSeedAndEpoch) {
  const TableSpec table = CurveTable();
  std::vector<RowRuns> rows = CurveRows(table);
  rows[1].runs[0].mutable_epochs(3)->mutable_layers(0)->set_fluctuation_top1(0.085);
  const std::string csv = RenderFluctuationCsv(rows);
  const std::vector<std::string> lines = absl::StrSplit(csv, '\n', absl::SkipEmpty());
  ASSERT_EQ(lines.size(), 1u + 2 * 3 * 3);  // header, rows x seeds x epochs 2-4
  EXPECT_EQ(lines[0], "row,seed,epoch,top1,topk");
  EXPECT_EQ(lines[1], "\"smoe\",1,2,40,50");
  EXPECT_EQ(lines[2], "\"smoe\",1,3,30,40");
  EXPECT_EQ(lines[9], "\"smoe\",3,4,21,31");
  // Quotes in a label are doubled; the changed layer moves top-1 only.
  EXPECT_EQ(lines[12], "\"sim \"\"cos\"\"\",1,4,10.25,20");
}

TableSpec SweepTable(const std::string& rule) {
  TableSpec table;
  google::protobuf::TextFormat::ParseFromString(
      absl::StrCat(R"pb(
                     name: "sweep"
                     title: "Sweep"
                     columns: [ VALID_PERPLEXITY ]
                     rows { label: "smoe" }
                     rows { label: "sim tau=0.1" group: "similarity" }
                     rows { label: "sim tau=0.3" group: "similarity" }
                     rows { label: "sim tau=1" group: "similarity" }
                     rows { label: "att sigma=1" group: "attention" }
                     rows { label: "att sigma=2" group: "attention" }
                   )pb",
                   rule),
      &table);
  return table;
}

// Perplexities per seed: smoe 50; sim 0.1: 52, 53, 54; sim 0.3: 49, 51, 50
// (the best eligible); sim 1: 45 (lowest, but its aggregation is the
// identity); att 1: 60, 61, 62; att 2: 58, 60, 59.
std::vector<RowRuns> SweepRows(const TableSpec& table) {
  auto row = [&](int r, std::vector<double> ppl, bool identity = false) {
    RowRuns rr{&table.rows(r), {}};
    for (size_t s = 0; s < ppl.size(); ++s) {
      rr.runs.push_back(LmRun(ppl[s], {0.1}, false, s + 1));
      if (identity) rr.runs.back().add_identity_aggregation_layers(0);
    }
    return rr;
  };
  return {row(0, {50, 50, 50}), row(1, {52, 53, 54}),
          row(2, {49, 51, 50}), row(3, {45, 45, 45}, /*identity=*/true),
          row(4, {60, 61, 62}), row(5, {58, 60, 59})};
}

std::vector<std::string> Ranked(const GroupSelection& group) {
  std::vector<std::string> labels;
  for (const SelectionCandidate& c : group.candidates) {
    labels.push_back(absl::StrCat(c.row->row->label(), c.eligible ? "" : " (" + c.why_not + ")"));
  }
  return labels;
}

TEST(SelectionTest, ARuleMayRankARegisteredLayerMetric) {
  const TableSpec table =
      SweepTable("selection { layer_metric: \"gate_margin\" expect: A_HIGHER }");
  std::vector<RowRuns> rows = SweepRows(table);
  // Margins: sim tau=0.1 0.3, tau=0.3 0.2, tau=1 0.4; attention rows none.
  for (auto [r, margin] : std::vector<std::pair<int, double>>{{1, 0.3}, {2, 0.2}, {3, 0.4}}) {
    for (RunResult& run : rows[r].runs) {
      (*run.mutable_final()->add_layers()->mutable_values())["gate_margin"] = margin;
    }
  }
  const std::vector<GroupSelection> groups = SelectRows(table, rows);
  ASSERT_EQ(groups.size(), 2u);
  EXPECT_THAT(Ranked(groups[0]), ElementsAre("sim tau=1", "sim tau=0.1", "sim tau=0.3"));
  EXPECT_THAT(Ranked(groups[1]), ElementsAre("att sigma=1 (no value)", "att sigma=2 (no value)"));
  EXPECT_EQ(groups[1].chosen, nullptr);
  EXPECT_THAT(RenderSelection(table, rows),
              HasSubstr("the highest mean over seeds of *Gate margin r(1) − r(2)* wins"));
}

TEST(SelectionTest, LowestWinsPerGroupAndIdentityRowsAreNotEligible) {
  const TableSpec table = SweepTable(
      "selection { column: VALID_PERPLEXITY expect: A_LOWER exclude_identity_aggregation: true }");
  const std::vector<RowRuns> rows = SweepRows(table);
  const std::vector<GroupSelection> groups = SelectRows(table, rows);
  ASSERT_EQ(groups.size(), 2u);  // the baseline has no group
  EXPECT_EQ(groups[0].group, "similarity");
  EXPECT_THAT(Ranked(groups[0]), ElementsAre("sim tau=0.3", "sim tau=0.1",
                                             "sim tau=1 (aggregation is the identity (‡))"));
  EXPECT_EQ(groups[0].chosen, &rows[2]);
  EXPECT_EQ(groups[1].group, "attention");
  EXPECT_THAT(Ranked(groups[1]), ElementsAre("att sigma=2", "att sigma=1"));
  EXPECT_EQ(groups[1].chosen, &rows[5]);

  const std::string md = RenderSelection(table, rows);
  EXPECT_THAT(md, HasSubstr("\n## Selection (rule fixed in the table spec before running)\n"));
  EXPECT_THAT(md, HasSubstr("Rule (`selection` in experiments/tables/sweep.pbtxt, committed "
                            "before the runs): within each group, the eligible row with the "
                            "lowest mean over seeds of *Perplexity (valid)* wins; rows whose "
                            "aggregation is effectively the identity"));
  EXPECT_THAT(md, HasSubstr("frozen into the main table by hand"));
  EXPECT_THAT(md,
              HasSubstr("### Group \"similarity\"\n\n"
                        "| Rank | Row | Perplexity (valid): mean ± std | n | |\n"
                        "| --- | --- | --- | --- | --- |\n"
                        "| 1 | sim tau=0.3 | 50.00 ± 1.00 | 3 | **chosen** |\n"
                        "| 2 | sim tau=0.1 | 53.00 ± 1.00 | 3 |  |\n"
                        "| – | sim tau=1 ‡ | 45.00 ± 0.00 | 3 | not eligible: aggregation is the "
                        "identity (‡) |\n"));
  // Winner − runner-up on the same seeds: 49-52, 51-53, 50-54 = -3, -2, -4.
  EXPECT_THAT(md, HasSubstr("Chosen: **sim tau=0.3**. Chosen − runner-up (sim tau=0.1), paired "
                            "by seed: -3.00, 95% interval [-5.48, -0.52], n = 3.\n"));
  // att: 58-60, 60-61, 59-62 = -2, -1, -3: the same interval width.
  EXPECT_THAT(md, HasSubstr("Chosen: **att sigma=2**."));
}

TEST(SelectionTest, HighestWinsAndIdentityRowsCompeteWhenNotExcluded) {
  const TableSpec highest = SweepTable("selection { column: VALID_PERPLEXITY expect: A_HIGHER }");
  const std::vector<RowRuns> rows = SweepRows(highest);
  std::vector<GroupSelection> groups = SelectRows(highest, rows);
  ASSERT_EQ(groups.size(), 2u);
  EXPECT_THAT(Ranked(groups[0]), ElementsAre("sim tau=0.1", "sim tau=0.3", "sim tau=1"));
  EXPECT_EQ(groups[0].chosen, &rows[1]);
  EXPECT_EQ(groups[1].chosen, &rows[4]);
  EXPECT_THAT(RenderSelection(highest, rows), HasSubstr("the highest mean over seeds"));

  const TableSpec lowest = SweepTable("selection { column: VALID_PERPLEXITY expect: A_LOWER }");
  groups = SelectRows(lowest, rows);
  EXPECT_EQ(groups[0].chosen, &rows[3]);  // identity rows compete: 45 wins
  EXPECT_THAT(RenderSelection(lowest, rows), Not(HasSubstr("not eligible")));
}

TEST(SelectionTest, RowsWithoutValuesAreNotEligibleAndNoWinnerIsSaid) {
  const TableSpec table = SweepTable(
      "selection { column: TEST_ACCURACY expect: A_HIGHER exclude_identity_aggregation: true }");
  const std::vector<RowRuns> rows = SweepRows(table);  // LM runs: no accuracy
  const std::vector<GroupSelection> groups = SelectRows(table, rows);
  ASSERT_EQ(groups.size(), 2u);
  EXPECT_EQ(groups[0].chosen, nullptr);
  EXPECT_THAT(Ranked(groups[1]), ElementsAre("att sigma=1 (no value)", "att sigma=2 (no value)"));
  const std::string md = RenderSelection(table, rows);
  EXPECT_THAT(md, HasSubstr("No row of this group is eligible: nothing is chosen."));
  // A table without a rule has no section.
  const TableSpec no_rule = Table();
  EXPECT_EQ(RenderSelection(no_rule, ThreeSeedRows(no_rule)), "");
  EXPECT_THAT(RenderMarkdown(table, rows, {}),
              HasSubstr("## Selection (rule fixed in the table spec before running)"));
}

}  // namespace
}  // namespace moelab
