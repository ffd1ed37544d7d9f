#include "experiments/table_report_timing.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <string>

#include "absl/strings/str_cat.h"
#include "core/atomic_file.h"
#include "google/protobuf/text_format.h"
#include "google/protobuf/util/message_differencer.h"

namespace moelab {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

// 2026-12-03 10:00:00 UTC.
constexpr double kT0 = 1796292000;

RunResult TimedRun(const std::string& name, uint64_t seed, double started, double finished,
                   double wall, const std::string& cpu) {
  RunResult run;
  run.mutable_spec()->set_name(absl::StrCat(name, "_s", seed));
  run.mutable_spec()->set_seed(seed);
  run.set_spec_hash(absl::StrCat("hash_", name));
  run.set_started_unix_s(started);
  run.set_finished_unix_s(finished);
  run.set_wall_time_s(wall);
  run.mutable_versions()->set_cpu_model(cpu);
  run.mutable_source()->set_revision("abcdef123456");
  return run;
}

TableSpec TwoRowTable() {
  TableSpec table;
  google::protobuf::TextFormat::ParseFromString(
      R"pb(
        name: "t"
        rows { label: "trained" }
        rows { label: "swapped" init_from_row: "trained" }
      )pb",
      &table);
  return table;
}

// Two shards side by side: seeds 1 and 2 of the trained row from 10:00, one
// ending at 11:00 and one at 11:30; their training-free evaluations right
// after; a third trained run from before runs recorded their times.
std::vector<RowRuns> TwoRowRuns(const TableSpec& table) {
  const std::string xeon = "Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz";
  RunResult old = TimedRun("trained", 3, 0, 0, 1000, "");
  return {{&table.rows(0),
           {TimedRun("trained", 1, kT0, kT0 + 3600, 3590, xeon),
            TimedRun("trained", 2, kT0 + 1, kT0 + 5400, 5390, xeon), old}},
          {&table.rows(1),
           {TimedRun("swapped", 1, kT0 + 5410, kT0 + 5440, 30, xeon),
            TimedRun("swapped", 2, kT0 + 5441, kT0 + 5460, 19, xeon)}}};
}

TEST(TableTimingTest, ElapsedSumRunsAndCpus) {
  const TableSpec table = TwoRowTable();
  const std::vector<RowRuns> rows = TwoRowRuns(table);
  const std::map<std::string, std::vector<std::string>> shared = {
      {"hash_trained/trained_s1", {"other_table"}}, {"hash_trained/trained_s2", {"other_table"}}};
  const TableTiming timing = MeasureTableTiming(table, rows, shared, kT0 + 7200);
  EXPECT_EQ(timing.table(), "t");
  EXPECT_EQ(timing.runs(), 5);
  EXPECT_EQ(timing.training_free_runs(), 2);
  EXPECT_DOUBLE_EQ(timing.run_wall_time_sum_s(), 3590 + 5390 + 1000 + 30 + 19);
  ASSERT_TRUE(timing.has_elapsed_s());
  EXPECT_DOUBLE_EQ(timing.earliest_start_unix_s(), kT0);
  EXPECT_DOUBLE_EQ(timing.latest_end_unix_s(), kT0 + 5460);
  EXPECT_DOUBLE_EQ(timing.elapsed_s(), 5460);
  EXPECT_EQ(timing.runs_without_times(), 1);
  ASSERT_EQ(timing.cpus_size(), 2);
  EXPECT_EQ(timing.cpus(0).cpu_model(), "Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz");
  EXPECT_EQ(timing.cpus(0).runs(), 4);
  EXPECT_EQ(timing.cpus(1).cpu_model(), "unknown");
  EXPECT_EQ(timing.cpus(1).runs(), 1);
  ASSERT_EQ(timing.revisions_size(), 1);
  EXPECT_EQ(timing.revisions(0), "abcdef123456");
  EXPECT_EQ(timing.shared_runs(), 2);
  ASSERT_EQ(timing.shared_with_tables_size(), 1);
  EXPECT_EQ(timing.shared_with_tables(0), "other_table");
  EXPECT_DOUBLE_EQ(timing.rendered_unix_s(), kT0 + 7200);

  const std::string md = RenderTableTiming(timing);
  EXPECT_THAT(md, HasSubstr("\n## Wall time (measured)\n"));
  EXPECT_THAT(md, HasSubstr("| Elapsed, earliest run start to latest run end | 1h31m "
                            "(2026-12-03 10:00 UTC to 2026-12-03 11:31 UTC), over the 4 runs "
                            "that record their times |\n"));
  EXPECT_THAT(md, HasSubstr("| Sum of the runs' wall times | 2h47m |\n"));
  EXPECT_THAT(md, HasSubstr("| Runs | 5 (2 of them training-free evaluations) |\n"));
  EXPECT_THAT(md, HasSubstr("| CPU | Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz (4 runs), "
                            "unknown (1 run) |\n"));
  EXPECT_THAT(md, HasSubstr("| Code revision | `abcdef123456` |\n"));
  EXPECT_THAT(md, HasSubstr("1 of the 5 runs record no start or end"));
  EXPECT_THAT(md, HasSubstr("2 of the 5 runs are also runs of other_table"));
}

TEST(TableTimingTest, NoRecordedTimesLeaveElapsedUnknown) {
  const TableSpec table = TwoRowTable();
  const std::vector<RowRuns> rows = {{&table.rows(0), {TimedRun("trained", 1, 0, 0, 60, "")}}};
  const TableTiming timing = MeasureTableTiming(table, rows, {}, kT0);
  EXPECT_FALSE(timing.has_elapsed_s());
  EXPECT_FALSE(timing.has_earliest_start_unix_s());
  EXPECT_EQ(timing.runs_without_times(), 1);
  const std::string md = RenderTableTiming(timing);
  EXPECT_THAT(md, HasSubstr("| Elapsed, earliest run start to latest run end | unknown"));
  EXPECT_THAT(md, Not(HasSubstr("also runs of")));
  EXPECT_THAT(md, Not(HasSubstr("training-free")));
}

std::string TempPath(const std::string& name) {
  const char* tmp = std::getenv("TEST_TMPDIR");
  return absl::StrCat(tmp != nullptr ? tmp : "/tmp", "/", name);
}

TEST(TableTimingTest, SidecarRoundTripAndListEntry) {
  const TableSpec table = TwoRowTable();
  const TableTiming timing = MeasureTableTiming(
      table, TwoRowRuns(table), {{"hash_trained/trained_s1", {"other_table"}}}, kT0 + 7200);
  const std::string base = TempPath("graph_of_tokens_lm");
  const std::string path = TimingSidecarPath(base);
  EXPECT_EQ(path, base + ".timing.pbtxt");
  ASSERT_TRUE(WriteTableTiming(path, timing).ok());
  absl::StatusOr<TableTiming> read = ReadTableTiming(path);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(*read, timing))
      << read->DebugString();

  EXPECT_EQ(FormatListEntry("graph_of_tokens_lm", "Graph of tokens, LM (9 rows)", read),
            "  graph_of_tokens_lm           Graph of tokens, LM (9 rows)\n"
            "                               measured: 1h31m elapsed (5 runs, 2h47m summed; 1 "
            "shared with other_table); revision abcdef123456; CPUs Intel(R) Xeon(R) Platinum "
            "8481C CPU @ 2.70GHz (4 runs), unknown (1 run); ran until 2026-12-03\n");

  const absl::StatusOr<TableTiming> missing = ReadTableTiming(TempPath("never_rendered.pbtxt"));
  EXPECT_TRUE(absl::IsNotFound(missing.status()));
  EXPECT_EQ(FormatListEntry("usmoe_training_free", "USMoE training-free (5 rows)", missing),
            "  usmoe_training_free          USMoE training-free (5 rows)\n"
            "                               not yet measured\n");
}

TEST(TableTimingTest, OneCpuIsNamedWithoutCounts) {
  const TableSpec table = TwoRowTable();
  const std::vector<RowRuns> rows = {
      {&table.rows(0), {TimedRun("trained", 1, kT0, kT0 + 125, 120, "AMD EPYC 9B45")}}};
  const TableTiming timing = MeasureTableTiming(table, rows, {}, kT0 + 200);
  EXPECT_EQ(FormatListEntry("t", "T (2 rows)", timing),
            "  t                            T (2 rows)\n"
            "                               measured: 2m05s elapsed (1 run, 2m00s summed); "
            "revision abcdef123456; CPU AMD EPYC 9B45; ran until 2026-12-03\n");
}

TEST(TableTimingTest, UnparsableSidecarIsReported) {
  const std::string path = TempPath("broken.timing.pbtxt");
  ASSERT_TRUE(WriteFileAtomically(path, "runs: lots\n").ok());
  const absl::StatusOr<TableTiming> read = ReadTableTiming(path);
  EXPECT_EQ(read.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(FormatListEntry("t", "T", read), HasSubstr("timing unreadable: "));
}

}  // namespace
}  // namespace moelab
