#include "experiments/table_report.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "google/protobuf/text_format.h"

namespace moelab {
namespace {

using ::testing::HasSubstr;

RunResult LmRun(double ppl, std::vector<double> fluctuation, bool non_causal = false) {
  RunResult run;
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

TableSpec Table() {
  TableSpec table;
  google::protobuf::TextFormat::ParseFromString(R"pb(
    name: "t" title: "T" paper: "P" paper_setting: "S" our_setting: "O"
    columns: [VALID_PERPLEXITY, FLUCTUATION_TOP1]
    rows { label: "smoe" spec: "a.pbtxt"
           paper { column: FLUCTUATION_TOP1 value: 33 note: "Figure 3" } }
    rows { label: "sim" spec: "b.pbtxt" paper { column: FLUCTUATION_TOP1 value: 19 } }
    claims { text: "sim fluctuates less" column: FLUCTUATION_TOP1
             row_a: "sim" row_b: "smoe" expect: A_LOWER }
    claims { text: "sim has lower perplexity" column: VALID_PERPLEXITY
             row_a: "sim" row_b: "smoe" expect: A_LOWER }
  )pb", &table);
  return table;
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

TEST(TableReportTest, MeanAndSampleStdOverSeeds) {
  TableSpec table = Table();
  RowRuns row{&table.rows(0), {LmRun(10, {0.1}), LmRun(20, {0.3}), LmRun(30, {0.5})}};
  Stat s = ColumnStat(row, VALID_PERPLEXITY);
  EXPECT_EQ(s.n, 3);
  EXPECT_DOUBLE_EQ(s.mean, 20);
  EXPECT_DOUBLE_EQ(s.std, 10);
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
  std::vector<RowRuns> rows = {
      {&table.rows(0), {LmRun(50, {0.30}), LmRun(52, {0.34})}},
      {&table.rows(1), {LmRun(51, {0.15}, true), LmRun(53, {0.17}, true)}}};
  EXPECT_EQ(ClaimVerdict(table.claims(0), rows), "yes");
  EXPECT_EQ(ClaimVerdict(table.claims(1), rows), "no (within noise)");
  const std::string md = RenderMarkdown(table, rows, {"t_fluctuation.png"});
  EXPECT_THAT(md, HasSubstr("| smoe | 51.00 ± 1.41 | 32.0 ± 2.8 | 33 |"));
  EXPECT_THAT(md, HasSubstr("| sim † |"));
  EXPECT_THAT(md, HasSubstr("Fluctuation top-1 (%) *paper*"));
  EXPECT_THAT(md, HasSubstr("*paper* smoe, Fluctuation top-1 (%): Figure 3"));
  EXPECT_THAT(md, HasSubstr("![t_fluctuation.png]"));
  const std::string csv = RenderCsv(table, rows);
  EXPECT_THAT(csv, HasSubstr("\"smoe\",FLUCTUATION_TOP1,32,2.82843,2,33"));
}

}  // namespace
}  // namespace moelab
