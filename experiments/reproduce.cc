// Reproduces a paper table: `bazel run //experiments:reproduce -- --table=NAME`.
//
// Runs every (row, seed) whose result is not cached (the cache key is the
// resolved spec's hash), then writes NAME.md, NAME.csv and the pictures to
// --output_dir, with NAME_fluctuation.csv (every run's fluctuation per
// epoch) for tables that report fluctuation, and NAME.timing.pbtxt, the
// table's measured wall time from its runs' records. --render_only rebuilds
// the outputs from cached results; --list shows the tables with their
// measured wall time (or "not yet measured"). A table whose runs come from different code
// revisions (RunResult.source) is refused unless --allow_mixed_revisions;
// --rerun_stale runs the cached runs from other code again. A training-free
// row's run records which run of its source row it evaluated
// (source_run.txt, SourceRunIdentity) and is made again when the source
// row's run there now is another one; --render_only refuses such a run.

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "core/atomic_file.h"
#include "core/checkpoint.h"
#include "core/paths.h"
#include "core/progress.h"
#include "core/provenance.h"
#include "core/run_outputs.h"
#include "core/spec.h"
#include "core/threading_environment.h"
#include "core/trainer.h"
#include "experiments/expert_maps.h"
#include "experiments/plots.h"
#include "experiments/table_report.h"
#include "experiments/table_report_timing.h"
#include "experiments/table_rows.h"
#include "google/protobuf/text_format.h"
#include "proto/table.pb.h"

ABSL_FLAG(std::string, table, "", "Table to reproduce (experiments/tables/NAME.pbtxt).");
ABSL_FLAG(bool, list, false,
          "List the tables, each with the wall time, code revision and CPU of its last "
          "render (NAME.timing.pbtxt in --output_dir), and exit.");
ABSL_FLAG(bool, render_only, false,
          "Only rebuild NAME.md/.csv/.png from cached results; run nothing.");
ABSL_FLAG(std::string, output_dir, "results",
          "Where reports and the run cache (runs/<spec hash>/) go.");
ABSL_FLAG(int, seeds, 0, "Seeds per row (0: the table's own, default 3).");
ABSL_FLAG(int, threads, 0,
          "Threads per run (0: each spec's runtime.threads). Not part of the cache "
          "key: e.g. two tables side by side with --threads=1 each on 2 cores.");
ABSL_FLAG(std::string, shard, "",
          "I/N: run only the uncached runs whose index (row-major over rows and "
          "seeds) is I modulo N, and write no report; N such processes (e.g. with "
          "--threads=1 on an N-core machine) share a table's runs, and a last "
          "invocation without --shard writes the report.");
ABSL_FLAG(bool, paper_scale, false,
          "Run the table's paper-scale spec set (WikiText-103 / ImageNet) instead "
          "of the CPU-scale one; needs the data and, realistically, a GPU.");
ABSL_FLAG(bool, rerun_stale, false,
          "Run again, from scratch, every cached run whose code revision differs from "
          "the source tree's now (the old run directory moves to "
          "runs_superseded/<name>-<revision>).");
ABSL_FLAG(bool, allow_mixed_revisions, false,
          "Write the report even when its runs come from different code revisions "
          "(the report then says so at the top and names each row's revision); "
          "without it reproduce refuses.");

namespace moelab {
namespace {

namespace fs = std::filesystem;

absl::StatusOr<RunResult> ReadCachedResult(const std::string& run_dir, const std::string& hash) {
  absl::StatusOr<std::string> json = ReadFile(run_dir + "/result.json");
  if (!json.ok()) return json.status();
  absl::StatusOr<RunResult> parsed = ParseRunResultJson(*json, run_dir + "/result.json");
  if (!parsed.ok()) return parsed.status();
  RunResult result = *std::move(parsed);
  if (result.status() != "COMPLETED" || result.spec_hash() != hash) {
    return absl::NotFoundError(absl::StrCat(run_dir, " holds no completed run of this spec"));
  }
  return result;
}

struct TableRuns {
  std::vector<RowRuns> rows;
  // run directory per (row label, seed index), for training-free rows.
  std::map<std::pair<std::string, int>, std::string> run_dirs;
  // Uncached runs this invocation left to other shards (or that wait for a
  // source run another shard has not finished yet).
  int left_to_other_shards = 0;
  // Cached runs from other code that --rerun_stale ran again.
  int superseded = 0;
};

struct RunTableOptions {
  int seeds = 3;
  int threads = 0;  // 0: each spec's own
  bool render_only = false;
  bool paper_scale = false;
  int shard_index = 0;
  int shard_count = 1;
  // Run again (from scratch) every cached run whose code revision is not
  // `current_revision`.
  bool rerun_stale = false;
  std::string current_revision;
};

// runs_superseded/<name>-<revision>, with the revision made safe for a file
// name, and -2, -3, ... when that is taken.
std::string SupersededDirectory(const std::string& out_dir, const std::string& name,
                                const std::string& revision) {
  std::string safe = revision == kRevisionBeforeProvenance ? "before-provenance" : revision;
  for (char& c : safe) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '+' && c != '-' && c != '.') {
      c = '_';
    }
  }
  const std::string base = absl::StrCat(out_dir, "/runs_superseded/", name, "-", safe);
  std::string dir = base;
  for (int i = 2; fs::exists(dir); ++i) dir = absl::StrCat(base, "-", i);
  return dir;
}

// Moves a cached run out of the cache, keeping it for reference.
absl::Status SupersedeRun(const std::string& run_dir, const std::string& target) {
  std::error_code error;
  fs::create_directories(fs::path(target).parent_path(), error);
  if (!error) fs::rename(run_dir, target, error);
  if (error) {
    return absl::InternalError(
        absl::StrCat("cannot move ", run_dir, " aside to ", target, ": ", error.message()));
  }
  return absl::OkStatus();
}

// What a training-free run's kSourceRunRecord holds; nullopt when it has
// none (or it cannot be read).
std::optional<std::string> ReadSourceRunRecord(const std::string& run_dir) {
  absl::StatusOr<std::string> record = ReadFile(absl::StrCat(run_dir, "/", kSourceRunRecord));
  if (!record.ok()) return std::nullopt;
  return *std::move(record);
}

// One (row, seed) of a table: its spec and where its run is cached.
struct PlannedRun {
  const TableRow* row = nullptr;
  int seed_index = 0;
  ExperimentSpec spec;
  std::string hash;
  std::string run_root;  // <out_dir>/runs/<hash>
  std::string run_dir;   // <run_root>/<spec name>
};

// Every run of the table, row-major over rows and seeds, without running or
// reading anything of the cache: what RunTable runs, and what tells which
// runs two tables share (the same run directory). A training-free row's spec
// points at the checkpoint of its source row's run of the same seed.
absl::StatusOr<std::vector<PlannedRun>> PlanRuns(const TableSpec& table, const std::string& out_dir,
                                                 int seeds, int threads, bool paper_scale) {
  std::vector<PlannedRun> plan;
  // run directory per (row label, seed index), for training-free rows.
  std::map<std::pair<std::string, int>, std::string> run_dirs;
  for (const TableRow& row : table.rows()) {
    for (int s = 0; s < seeds; ++s) {
      absl::StatusOr<ExperimentSpec> spec = RowSpec(table, row, paper_scale);
      if (!spec.ok()) {
        return absl::Status(spec.status().code(),
                            absl::StrCat("row '", row.label(), "': ", spec.status().message()));
      }
      spec->set_seed(spec->seed() + s);
      if (threads > 0) spec->mutable_runtime()->set_threads(threads);
      spec->set_name(absl::StrCat(spec->name(), "_s", spec->seed()));
      if (!row.init_from_row().empty()) {
        auto source = run_dirs.find({row.init_from_row(), s});
        if (source == run_dirs.end()) {
          return absl::InvalidArgumentError(
              absl::StrCat("row '", row.label(), "': init_from_row '", row.init_from_row(),
                           "' must name an earlier row of the table"));
        }
        spec->mutable_training()->set_epochs(0);
        spec->mutable_evaluation()->set_init_checkpoint(source->second + "/checkpoint.pt");
      }
      PlannedRun planned;
      planned.row = &row;
      planned.seed_index = s;
      planned.hash = SpecHash(*spec);
      planned.run_root = absl::StrCat(out_dir, "/runs/", planned.hash);
      planned.run_dir = absl::StrCat(planned.run_root, "/", spec->name());
      planned.spec = *std::move(spec);
      run_dirs[{row.label(), s}] = planned.run_dir;
      plan.push_back(std::move(planned));
    }
  }
  return plan;
}

absl::StatusOr<TableRuns> RunTable(const TableSpec& table, const std::string& out_dir,
                                   const RunTableOptions& run_options) {
  const bool render_only = run_options.render_only;
  absl::StatusOr<std::vector<PlannedRun>> plan =
      PlanRuns(table, out_dir, run_options.seeds, run_options.threads, run_options.paper_scale);
  if (!plan.ok()) return plan.status();
  TableRuns runs;
  runs.rows.reserve(table.rows_size());
  // SourceRunIdentity of each (row label, seed index) whose completed run
  // stands (cached and not stale, or run by this invocation); a training-free
  // run evaluates only such a run's checkpoint.
  std::map<std::pair<std::string, int>, std::string> identities;
  int run_index = -1;
  for (PlannedRun& planned : *plan) {
    ++run_index;
    const TableRow& row = *planned.row;
    const int s = planned.seed_index;
    if (runs.rows.empty() || runs.rows.back().row != &row) runs.rows.push_back({&row, {}});
    RowRuns& row_runs = runs.rows.back();
    ExperimentSpec* spec = &planned.spec;
    const std::pair<std::string, int> source_key{row.init_from_row(), s};
    const bool training_free = !row.init_from_row().empty();
    // The source run's identity; nullptr while it has no completed run that
    // stands (another shard's, or not run yet).
    const std::string* source_identity = nullptr;
    if (training_free) {
      auto identity = identities.find(source_key);
      if (identity != identities.end()) source_identity = &identity->second;
    }
    const std::string& hash = planned.hash;
    const std::string& run_root = planned.run_root;
    const std::string& run_dir = planned.run_dir;
    runs.run_dirs[{row.label(), s}] = run_dir;
    absl::StatusOr<RunResult> result = ReadCachedResult(run_dir, hash);
    // Why a cached result must be run again; empty: it stands.
    std::string stale;
    if (result.ok() && run_options.rerun_stale &&
        RunRevision(*result) != run_options.current_revision) {
      stale = absl::StrCat("code revision ", RunRevision(*result), ", not ",
                           run_options.current_revision);
    } else if (result.ok() && training_free && source_identity != nullptr) {
      // Whether it evaluated the source run there now: a comparison of
      // what it recorded then with that run's identity, not of file times.
      stale = TrainingFreeRerunReason(row.init_from_row(), ReadSourceRunRecord(run_dir),
                                      *source_identity);
    }
    if (!result.ok() || !stale.empty()) {
      if (render_only) {
        return absl::NotFoundError(
            absl::StrCat("row '", row.label(), "' seed ", spec->seed(), ": ",
                         result.ok() ? absl::StrCat("the cached run is stale (", stale, ")")
                                     : "no cached result",
                         "; run without --render_only"));
      }
      // A training-free run waits for its source run to complete, here or
      // in another shard (a checkpoint alone may be a training run's
      // last epoch so far).
      const bool source_pending = training_free && source_identity == nullptr;
      if (run_index % run_options.shard_count != run_options.shard_index || source_pending) {
        ++runs.left_to_other_shards;
        continue;
      }
      if (training_free) {
        if (absl::Status v = ValidateSpec(*spec); !v.ok()) {
          return absl::Status(v.code(), absl::StrCat("row '", row.label(), "': ", v.message()));
        }
      }
      if (!stale.empty()) {
        const std::string target = SupersededDirectory(out_dir, spec->name(), RunRevision(*result));
        if (absl::Status moved = SupersedeRun(run_dir, target); !moved.ok()) return moved;
        std::fprintf(stderr,
                     "== %s: row '%s', seed %llu: the cached run is stale (%s); "
                     "moved to %s, running again\n",
                     table.name().c_str(), row.label().c_str(),
                     static_cast<unsigned long long>(spec->seed()), stale.c_str(), target.c_str());
        ++runs.superseded;
      }
      std::fprintf(stderr, "== %s: row '%s', seed %llu (spec %s)\n", table.name().c_str(),
                   row.label().c_str(), static_cast<unsigned long long>(spec->seed()),
                   hash.c_str());
      RunOptions options;
      options.output_directory = run_root;
      // A stale run starts from scratch; an interrupted one continues.
      options.resume = stale.empty();
      result = RunExperiment(*spec, options);
      if (!result.ok()) {
        return absl::Status(result.status().code(),
                            absl::StrCat("row '", row.label(), "' seed ", spec->seed(), ": ",
                                         result.status().message()));
      }
      if (training_free) {
        // What it evaluated, so a later invocation can tell whether the
        // source run has been made again since.
        if (absl::Status written = WriteFileAtomically(absl::StrCat(run_dir, "/", kSourceRunRecord),
                                                       *source_identity + "\n");
            !written.ok()) {
          return written;
        }
      }
    }
    identities[{row.label(), s}] = SourceRunIdentity(*result);
    row_runs.runs.push_back(*std::move(result));
  }
  return runs;
}

// Pictures shared by every table: fluctuation per epoch and per-layer load.
// File names start with `stem` (the table's name, "_paper_scale" added at
// the paper's scale). The fluctuation curve goes to `fluctuation_files` for
// its own section in tables that report fluctuation, to `pictures` in the
// others.
absl::Status DrawPictures(const TableSpec& table, const TableRuns& runs, const std::string& out_dir,
                          const std::string& stem, std::vector<std::string>* pictures,
                          FluctuationFiles* fluctuation_files, std::string* extra_markdown) {
  const std::vector<FluctuationCurve> curves = FluctuationCurves(runs.rows, /*top_k=*/false);
  if (!curves.empty()) {
    std::vector<BandSeries> series;
    for (const FluctuationCurve& curve : curves) {
      BandSeries band{curve.row->row->label(), {}};
      for (const FluctuationCell& cell : curve.cells) {
        const MeanInterval& i = cell.interval;
        // One seed has no interval: the band closes onto the line. A share
        // lies in 0-100%, so the band is cut there (with few seeds a t-interval
        // reaches past both).
        const bool has_band = std::isfinite(i.half_width);
        band.points.push_back({static_cast<double>(cell.epoch), i.mean,
                               has_band ? std::max(0.0, i.low()) : i.mean,
                               has_band ? std::min(100.0, i.high()) : i.mean});
      }
      series.push_back(std::move(band));
    }
    const std::string png = stem + "_fluctuation.png";
    if (absl::Status s = PlotLinesWithBands(
            out_dir + "/" + png,
            table.title() + ": top-1 routing fluctuation per epoch, mean over seeds and its 95% "
                            "interval",
            "epoch e (change since epoch e - 1)", "top-1 fluctuation (%, mean over MoE layers)",
            series, LastFluctuationEpoch(curves), "paper's figure: the last two epochs");
        !s.ok()) {
      return s;
    }
    if (HasFluctuationColumn(table)) {
      fluctuation_files->png = png;
    } else {
      pictures->push_back(png);
    }
  }
  for (size_t r = 0; r < runs.rows.size(); ++r) {
    const RowRuns& row = runs.rows[r];
    if (row.runs.empty() || row.runs[0].epochs_size() == 0) continue;
    const EpochMetrics& last = row.runs[0].epochs(row.runs[0].epochs_size() - 1);
    std::vector<std::vector<double>> load;
    for (const auto& l : last.layers()) {
      load.emplace_back(l.expert_share().begin(), l.expert_share().end());
    }
    if (load.empty()) continue;
    const std::string png = absl::StrCat(stem, "_load_row", r, ".png");
    if (absl::Status s = PlotHeatmap(
            out_dir + "/" + png, absl::StrCat(row.row->label(), ": load (last epoch, first seed)"),
            "expert", "MoE layer", load);
        !s.ok()) {
      return s;
    }
    pictures->push_back(png);
  }
  if (table.entropy_vs_fluctuation()) {
    *extra_markdown += RenderEntropyVsFluctuation(runs.rows);
    std::vector<Series> scatter;
    for (const RowRuns& row : runs.rows) {
      Series series{row.row->label(), EntropyFluctuationPoints(row)};
      if (!series.points.empty()) scatter.push_back(std::move(series));
    }
    if (!scatter.empty()) {
      const std::string png = stem + "_entropy_vs_fluctuation.png";
      if (absl::Status s = PlotScatter(
              out_dir + "/" + png, "Routing entropy vs fluctuation, one point per layer and seed",
              "entropy of the selection distribution (nats)", "top-1 fluctuation (%)", scatter);
          !s.ok()) {
        return s;
      }
      pictures->push_back(png);
    }
  }
  return absl::OkStatus();
}

// The table's expert maps (USMoE Figure 1): each listed row's first-seed
// run, its checkpoint reloaded and routed again on the same test images.
absl::Status DrawTableExpertMaps(const TableSpec& table, const TableRuns& runs,
                                 const std::string& out_dir, const std::string& stem,
                                 std::vector<std::string>* pictures, std::string* extra_markdown) {
  std::vector<ExpertMapRow> rows;
  for (const std::string& label : table.expert_maps().rows()) {
    auto row = std::find_if(runs.rows.begin(), runs.rows.end(),
                            [&](const RowRuns& r) { return r.row->label() == label; });
    if (row == runs.rows.end() || row->runs.empty()) {
      return absl::NotFoundError(absl::StrCat("expert_maps.rows: no runs of row '", label, "'"));
    }
    ExpertMapRow map_row;
    // OpenCV's Hershey fonts draw only ASCII.
    map_row.label = absl::StrReplaceAll(label, {{"τ", "tau"}, {"σ", "sigma"}});
    map_row.spec = row->runs.front().spec();
    const EvaluationSpec& evaluation = map_row.spec.evaluation();
    if (map_row.spec.training().epochs() == 0 && !evaluation.init_checkpoint().empty()) {
      // A training-free run writes no checkpoint of its own: it evaluated
      // the trained one with its own router.
      map_row.checkpoint = ResolveUserPath(evaluation.init_checkpoint());
      map_row.partial_weights = true;
    } else {
      map_row.checkpoint = runs.run_dirs.at({label, 0}) + "/checkpoint.pt";
    }
    rows.push_back(std::move(map_row));
  }
  const std::string png = stem + "_expert_maps.png";
  const ExpertMapOptions options = ExpertMapOptionsFrom(table.expert_maps(), "");
  absl::StatusOr<ExpertMapFigure> figure = WriteExpertMaps(rows, options, out_dir + "/" + png);
  if (!figure.ok()) return figure.status();
  pictures->push_back(png);
  const PatchExperts& first = figure->routing.front();
  absl::StrAppendFormat(
      extra_markdown,
      "\n## Expert maps\n\n`%s`: %d %s images (chosen by expert_maps.seed %d), one column per "
      "row, each drawn from the row's first seed's run (seed %d). Every patch is tinted by the "
      "selected expert with the largest combine weight in MoE layer %d (counted from 0; the "
      "model has %d); hatched dark grey: no expert; a number in the corner: how many experts "
      "the patch got, when more than one. The class token is not a patch and is not shown.\n",
      png, figure->test_indices.size(), figure->split, table.expert_maps().seed(),
      rows.front().spec.seed(), first.layer, first.num_moe_layers);
  return absl::OkStatus();
}

// Each table with what its timing sidecar (written by its last render into
// --output_dir) says it took, or "not yet measured".
int ListTables() {
  absl::StatusOr<std::vector<std::string>> names = TableNames();
  if (!names.ok()) {
    std::fprintf(stderr, "error: %s\n", std::string(names.status().message()).c_str());
    return 1;
  }
  const std::string out_dir = ResolveUserPath(absl::GetFlag(FLAGS_output_dir));
  for (const std::string& name : *names) {
    absl::StatusOr<TableSpec> table = LoadTable(name);
    const std::string description =
        table.ok() ? absl::StrCat(table->title(), " (", table->rows_size(), " rows)")
                   : std::string(table.status().message());
    std::printf("%s", FormatListEntry(name, description,
                                      ReadTableTiming(TimingSidecarPath(out_dir + "/" + name)))
                          .c_str());
  }
  return 0;
}

// For each run of `table` that another table has too (the same run
// directory: same spec, same seed), the other tables, keyed by RunCacheKey.
// A table that does not load or plan here is skipped: its runs could not
// have been made by this code either.
std::map<std::string, std::vector<std::string>> SharedRuns(const TableSpec& table,
                                                           const std::string& out_dir,
                                                           bool paper_scale) {
  std::map<std::string, std::vector<std::string>> shared;
  absl::StatusOr<std::vector<std::string>> names = TableNames();
  if (!names.ok()) return shared;
  for (const std::string& name : *names) {
    if (name == table.name()) continue;
    absl::StatusOr<TableSpec> other = LoadTable(name);
    if (!other.ok()) continue;
    absl::StatusOr<std::vector<PlannedRun>> plan =
        PlanRuns(*other, out_dir, other->seeds() > 0 ? other->seeds() : 3, 0, paper_scale);
    if (!plan.ok()) continue;
    for (const PlannedRun& run : *plan) {
      shared[absl::StrCat(run.hash, "/", run.spec.name())].push_back(name);
    }
  }
  return shared;
}

double UnixSecondsNow() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

int Main() {
  if (absl::GetFlag(FLAGS_list)) return ListTables();
  const std::string name = absl::GetFlag(FLAGS_table);
  if (name.empty()) {
    std::fprintf(stderr, "error: --table=NAME is required (--list shows the tables)\n");
    return 2;
  }
  absl::StatusOr<TableSpec> table = LoadTable(name);
  if (!table.ok()) {
    std::fprintf(stderr, "error: %s\n", std::string(table.status().message()).c_str());
    return 1;
  }
  if (absl::Status s = ValidateExpertMaps(*table); !s.ok()) {
    std::fprintf(stderr, "error: table '%s': %s\n", name.c_str(), std::string(s.message()).c_str());
    return 1;
  }
  if (absl::Status s = ValidateLayerMetrics(*table); !s.ok()) {
    std::fprintf(stderr, "error: table '%s': %s\n", name.c_str(), std::string(s.message()).c_str());
    return 1;
  }
  const std::string out_dir = ResolveUserPath(absl::GetFlag(FLAGS_output_dir));
  std::error_code error;
  fs::create_directories(out_dir, error);
  const int seeds = absl::GetFlag(FLAGS_seeds) > 0 ? absl::GetFlag(FLAGS_seeds)
                    : table->seeds() > 0           ? table->seeds()
                                                   : 3;
  const int threads = absl::GetFlag(FLAGS_threads);
  if (threads < 0) {
    std::fprintf(stderr, "error: --threads must be >= 0, got %d\n", threads);
    return 2;
  }
  RunTableOptions run_options;
  run_options.seeds = seeds;
  run_options.threads = threads;
  run_options.render_only = absl::GetFlag(FLAGS_render_only);
  run_options.paper_scale = absl::GetFlag(FLAGS_paper_scale);
  run_options.rerun_stale = absl::GetFlag(FLAGS_rerun_stale);
  if (run_options.rerun_stale && run_options.render_only) {
    std::fprintf(stderr, "error: --rerun_stale runs again; --render_only runs nothing\n");
    return 2;
  }
  if (run_options.rerun_stale) {
    run_options.current_revision = CurrentSourceRevision().revision();
    std::fprintf(stderr, "reproduce: the source tree is at revision %s\n",
                 run_options.current_revision.c_str());
  }
  if (const std::string shard = absl::GetFlag(FLAGS_shard); !shard.empty()) {
    const std::vector<std::string> parts = absl::StrSplit(shard, '/');
    if (parts.size() != 2 || !absl::SimpleAtoi(parts[0], &run_options.shard_index) ||
        !absl::SimpleAtoi(parts[1], &run_options.shard_count) || run_options.shard_count < 1 ||
        run_options.shard_index < 0 || run_options.shard_index >= run_options.shard_count) {
      std::fprintf(stderr, "error: --shard must be I/N with 0 <= I < N, got '%s'\n", shard.c_str());
      return 2;
    }
  }
  ProgressReporter clock(stderr, "", 1, "");
  absl::StatusOr<TableRuns> runs = RunTable(*table, out_dir, run_options);
  if (!runs.ok()) {
    std::fprintf(stderr, "error: %s\n", std::string(runs.status().message()).c_str());
    return 1;
  }
  if (runs->left_to_other_shards > 0) {
    std::fprintf(stderr,
                 "shard %d/%d of %s done; %d uncached runs are left to other shards. When "
                 "they are done, reproduce --table=%s%s (no --shard) writes the report.\n",
                 run_options.shard_index, run_options.shard_count, name.c_str(),
                 runs->left_to_other_shards, name.c_str(),
                 run_options.rerun_stale ? " --rerun_stale" : "");
    return 0;
  }
  if (absl::Status s = CheckSingleRevision(*table, runs->rows); !s.ok()) {
    if (!absl::GetFlag(FLAGS_allow_mixed_revisions)) {
      std::fprintf(stderr, "error: %s\n", std::string(s.message()).c_str());
      return 1;
    }
    std::fprintf(stderr, "warning (--allow_mixed_revisions): %s\n",
                 std::string(s.message()).c_str());
  }
  const std::string stem =
      absl::StrCat(table->name(), absl::GetFlag(FLAGS_paper_scale) ? "_paper_scale" : "");
  const std::string base = absl::StrCat(out_dir, "/", stem);
  std::vector<std::string> pictures;
  FluctuationFiles fluctuation_files;
  std::string extra;
  if (absl::Status s =
          DrawPictures(*table, *runs, out_dir, stem, &pictures, &fluctuation_files, &extra);
      !s.ok()) {
    std::fprintf(stderr, "warning: pictures not drawn: %s\n", std::string(s.message()).c_str());
  }
  if (table->has_expert_maps()) {
    if (absl::Status s = DrawTableExpertMaps(*table, *runs, out_dir, stem, &pictures, &extra);
        !s.ok()) {
      std::fprintf(stderr, "warning: expert maps not drawn: %s\n",
                   std::string(s.message()).c_str());
    }
  }
  std::vector<std::pair<std::string, std::string>> outputs;
  if (HasFluctuationColumn(*table)) {
    fluctuation_files.csv = stem + "_fluctuation.csv";
    outputs.emplace_back(base + "_fluctuation.csv", RenderFluctuationCsv(runs->rows));
  }
  const TableTiming timing = MeasureTableTiming(
      *table, runs->rows, SharedRuns(*table, out_dir, absl::GetFlag(FLAGS_paper_scale)),
      UnixSecondsNow());
  const std::string md = RenderMarkdown(*table, runs->rows, pictures, fluctuation_files) + extra +
                         RenderTableTiming(timing);
  outputs.emplace_back(base + ".md", md);
  outputs.emplace_back(base + ".csv", RenderCsv(*table, runs->rows));
  for (const auto& [path, contents] : outputs) {
    if (absl::Status s = WriteFileAtomically(path, contents); !s.ok()) {
      std::fprintf(stderr, "error: %s\n", std::string(s.message()).c_str());
      return 1;
    }
  }
  // Last: --list reads it as "this table has been rendered".
  if (absl::Status s = WriteTableTiming(TimingSidecarPath(base), timing); !s.ok()) {
    std::fprintf(stderr, "error: %s\n", std::string(s.message()).c_str());
    return 1;
  }
  std::printf("%s\nwrote %s.md, %s.csv, %s (%s this invocation", md.c_str(), base.c_str(),
              base.c_str(), TimingSidecarPath(base).c_str(),
              FormatDuration(clock.elapsed_seconds()).c_str());
  if (runs->superseded > 0) {
    std::printf("; %d stale runs run again, the old ones in %s/runs_superseded", runs->superseded,
                out_dir.c_str());
  }
  std::printf(")\n");
  return 0;
}

}  // namespace
}  // namespace moelab

int main(int argc, char** argv) {
  moelab::ReexecWithPassiveOpenMpWaiting(argc, argv);
  absl::SetProgramUsageMessage(
      "Reproduces a paper table.\n"
      "  reproduce --list\n"
      "  reproduce --table=graph_of_tokens_lm [--render_only] [--output_dir=results]\n"
      "  reproduce --table=graph_of_tokens_lm --rerun_stale  # runs from other code, again");
  absl::ParseCommandLine(argc, argv);
  return moelab::CallMainWithErrorBoundary(moelab::Main);
}
