#include "experiments/table_report_timing.h"

#include <algorithm>
#include <limits>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "core/atomic_file.h"
#include "core/progress.h"
#include "google/protobuf/text_format.h"

namespace moelab {
namespace {

// "2026-12-03 10:12 UTC": one time zone for every reader.
std::string FormatUtc(double unix_s, const char* format = "%Y-%m-%d %H:%M UTC") {
  return absl::FormatTime(format, absl::FromUnixSeconds(static_cast<int64_t>(unix_s)),
                          absl::UTCTimeZone());
}

// "Intel Xeon (45 runs)" per CPU, or the model alone when every run has it.
std::string DescribeCpus(const TableTiming& timing, bool with_counts) {
  std::vector<std::string> parts;
  for (const CpuRuns& cpu : timing.cpus()) {
    parts.push_back(
        with_counts || timing.cpus_size() > 1
            ? absl::StrCat(cpu.cpu_model(), " (", cpu.runs(), cpu.runs() == 1 ? " run)" : " runs)")
            : cpu.cpu_model());
  }
  return parts.empty() ? "unknown" : absl::StrJoin(parts, ", ");
}

}  // namespace

std::string RunCacheKey(const RunResult& run) {
  return absl::StrCat(run.spec_hash(), "/", run.spec().name());
}

TableTiming MeasureTableTiming(const TableSpec& table, const std::vector<RowRuns>& rows,
                               const std::map<std::string, std::vector<std::string>>& shared_with,
                               double rendered_unix_s) {
  TableTiming timing;
  timing.set_table(table.name());
  double earliest = std::numeric_limits<double>::infinity();
  double latest = -earliest;
  std::map<std::string, int> cpus;
  std::set<std::string> revisions, sharing_tables;
  for (const RowRuns& row : rows) {
    for (const RunResult& run : row.runs) {
      timing.set_runs(timing.runs() + 1);
      if (!row.row->init_from_row().empty()) {
        timing.set_training_free_runs(timing.training_free_runs() + 1);
      }
      timing.set_run_wall_time_sum_s(timing.run_wall_time_sum_s() + run.wall_time_s());
      // A start without an end (or the reverse) cannot bound the table's
      // time, so such a run counts as one without times.
      if (run.started_unix_s() > 0 && run.finished_unix_s() >= run.started_unix_s()) {
        earliest = std::min(earliest, run.started_unix_s());
        latest = std::max(latest, run.finished_unix_s());
      } else {
        timing.set_runs_without_times(timing.runs_without_times() + 1);
      }
      const std::string& cpu = run.versions().cpu_model();
      ++cpus[cpu.empty() ? "unknown" : cpu];
      revisions.insert(RunRevision(run));
      auto shared = shared_with.find(RunCacheKey(run));
      if (shared != shared_with.end() && !shared->second.empty()) {
        timing.set_shared_runs(timing.shared_runs() + 1);
        sharing_tables.insert(shared->second.begin(), shared->second.end());
      }
    }
  }
  if (latest >= earliest) {
    timing.set_earliest_start_unix_s(earliest);
    timing.set_latest_end_unix_s(latest);
    timing.set_elapsed_s(latest - earliest);
  }
  for (const auto& [model, runs] : cpus) {
    CpuRuns* cpu = timing.add_cpus();
    cpu->set_cpu_model(model);
    cpu->set_runs(runs);
  }
  for (const std::string& revision : revisions) timing.add_revisions(revision);
  for (const std::string& other : sharing_tables) timing.add_shared_with_tables(other);
  timing.set_rendered_unix_s(rendered_unix_s);
  return timing;
}

std::string RenderTableTiming(const TableTiming& timing) {
  std::string md =
      "\n## Wall time (measured)\n\n"
      "From the runs' own records (started_unix_s, finished_unix_s and wall_time_s in each "
      "result.json), so a cached run counts with the time it took when it ran; also written "
      "to the `.timing.pbtxt` beside this report, which `reproduce --list` shows.\n\n"
      "| Measure | Value |\n| --- | --- |\n";
  const int timed = timing.runs() - timing.runs_without_times();
  if (timing.has_elapsed_s()) {
    absl::StrAppend(&md, "| Elapsed, earliest run start to latest run end | ",
                    FormatDuration(timing.elapsed_s()), " (",
                    FormatUtc(timing.earliest_start_unix_s()), " to ",
                    FormatUtc(timing.latest_end_unix_s()), ")",
                    timing.runs_without_times() > 0
                        ? absl::StrCat(", over the ", timed, " runs that record their times")
                        : "",
                    " |\n");
  } else {
    md +=
        "| Elapsed, earliest run start to latest run end | unknown (no run records its times) |\n";
  }
  absl::StrAppend(&md, "| Sum of the runs' wall times | ",
                  FormatDuration(timing.run_wall_time_sum_s()), " |\n");
  absl::StrAppend(
      &md, "| Runs | ", timing.runs(),
      timing.training_free_runs() > 0
          ? absl::StrCat(" (", timing.training_free_runs(), " of them training-free evaluations)")
          : "",
      " |\n");
  absl::StrAppend(&md, "| CPU | ", DescribeCpus(timing, /*with_counts=*/true), " |\n");
  absl::StrAppend(&md, "| Code revision | ",
                  absl::StrJoin(timing.revisions(), ", ",
                                [](std::string* out, const std::string& r) {
                                  absl::StrAppend(out, "`", r, "`");
                                }),
                  " |\n\n");
  md +=
      "The elapsed time is the table's real time when its runs ran in one go (with --shard "
      "processes side by side it is less than the sum); runs made in several sittings "
      "stretch it by the pauses between them.";
  if (timing.runs_without_times() > 0) {
    absl::StrAppend(&md, " ", timing.runs_without_times(), " of the ", timing.runs(),
                    " runs record no start or end (made before runs recorded them): the "
                    "elapsed time covers the others only.");
  }
  if (timing.training_free_runs() > 0) {
    md +=
        " Training-free rows' runs evaluate another row's checkpoints; their time is the "
        "evaluation only, the training being the other row's.";
  }
  if (timing.shared_runs() > 0) {
    absl::StrAppend(&md, " ", timing.shared_runs(), " of the ", timing.runs(),
                    " runs are also runs of ", absl::StrJoin(timing.shared_with_tables(), ", "),
                    " (the same spec, so the same cached run): their time is counted there too, "
                    "and is not time this table added.");
  }
  md += "\n";
  return md;
}

std::string TimingSidecarPath(const std::string& base) { return base + ".timing.pbtxt"; }

absl::Status WriteTableTiming(const std::string& path, const TableTiming& timing) {
  std::string text;
  if (!google::protobuf::TextFormat::PrintToString(timing, &text)) {
    return absl::InternalError(absl::StrCat("cannot print the timing of ", timing.table()));
  }
  return WriteFileAtomically(
      path,
      absl::StrCat("# The measured wall time of table '", timing.table(),
                   "', written by reproduce (moelab.TableTiming, proto/table.proto).\n", text));
}

absl::StatusOr<TableTiming> ReadTableTiming(const std::string& path) {
  absl::StatusOr<std::string> text = ReadFile(path);
  if (!text.ok()) return text.status();
  TableTiming timing;
  if (!google::protobuf::TextFormat::ParseFromString(*text, &timing)) {
    return absl::DataLossError(absl::StrCat(path, " does not parse as a TableTiming"));
  }
  return timing;
}

std::string FormatListEntry(const std::string& name, const std::string& description,
                            const absl::StatusOr<TableTiming>& timing) {
  std::string entry = absl::StrFormat("  %-28s %s\n  %-28s ", name, description, "");
  if (!timing.ok()) {
    if (absl::IsNotFound(timing.status())) return entry + "not yet measured\n";
    return absl::StrCat(entry, "timing unreadable: ", timing.status().message(), "\n");
  }
  const TableTiming& t = *timing;
  absl::StrAppend(&entry,
                  "measured: ", t.has_elapsed_s() ? FormatDuration(t.elapsed_s()) : "unknown",
                  " elapsed (", t.runs(), t.runs() == 1 ? " run, " : " runs, ",
                  FormatDuration(t.run_wall_time_sum_s()), " summed");
  if (t.shared_runs() > 0) {
    absl::StrAppend(&entry, "; ", t.shared_runs(), " shared with ",
                    absl::StrJoin(t.shared_with_tables(), ", "));
  }
  absl::StrAppend(&entry, "); revision ",
                  t.revisions_size() == 0 ? "unknown" : absl::StrJoin(t.revisions(), ", "),
                  t.cpus_size() > 1 ? "; CPUs " : "; CPU ", DescribeCpus(t, /*with_counts=*/false));
  if (t.has_latest_end_unix_s()) {
    absl::StrAppend(&entry, "; ran until ", FormatUtc(t.latest_end_unix_s(), "%Y-%m-%d"));
  }
  return entry + "\n";
}

}  // namespace moelab
