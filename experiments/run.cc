// Runs one experiment spec: `bazel run //experiments:run -- --spec=PATH`.
// `--list` prints every registered router, model, dataset, task and layer
// metric. Every failure
// ends with one "error: ..." line on stderr and a non-zero exit status (2 for
// a missing flag, 1 otherwise); no exception escapes.

#include <chrono>
#include <cstdio>
#include <exception>
#include <memory>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "core/checkpoint.h"
#include "core/dataset.h"
#include "core/distributed/local_launcher.h"
#include "core/distributed/process_groups.h"
#include "core/distributed/worker_place.h"
#include "core/layer_metric.h"
#include "core/model.h"
#include "core/paths.h"
#include "core/router.h"
#include "core/spec.h"
#include "core/task.h"
#include "core/threading_environment.h"
#include "core/trainer.h"

ABSL_FLAG(std::string, spec, "", "Path of the experiment spec (.pbtxt).");
ABSL_FLAG(bool, list, false,
          "Print every registered router, model, dataset, task and layer metric, then exit.");
ABSL_FLAG(bool, validate_only, false, "Load, resolve and validate the spec, print it, then exit.");
ABSL_FLAG(bool, resume, false, "Continue from the run directory's last checkpoint, if any.");
ABSL_FLAG(bool, overwrite, false,
          "Replace a run of a different spec found in the run directory "
          "(<output directory>/<name>); without it such a run is refused.");
ABSL_FLAG(std::string, output_dir, "",
          "Write the run under this directory instead of the spec's "
          "output.directory.");
ABSL_FLAG(int, nproc_per_node, 0,
          "Start this many worker processes on this machine, one data-parallel "
          "job (README, 'Distributed training'). 0: a single process, or a worker of "
          "the job the environment describes (torchrun's RANK, WORLD_SIZE, "
          "LOCAL_RANK, MASTER_ADDR, MASTER_PORT; Slurm's SLURM_PROCID, "
          "SLURM_NTASKS, SLURM_LOCALID).");
ABSL_FLAG(double, worker_grace_s, 30,
          "With --nproc_per_node: after a worker fails, seconds the others get to "
          "stop on their own before they are terminated.");

namespace moelab {
namespace {

// The command line as given, for the workers --nproc_per_node starts.
std::vector<std::string> g_argv;

template <typename Entry>
void PrintRegistry(const Registry<Entry>& registry) {
  std::printf("%ss:\n", registry.kind().c_str());
  for (const auto& [name, entry] : registry.entries()) {
    std::printf("  %-20s %s\n", name.c_str(), entry.description.c_str());
  }
}

int Main() {
  if (absl::GetFlag(FLAGS_list)) {
    PrintRegistry(RouterRegistry());
    PrintRegistry(ModelRegistry());
    PrintRegistry(DatasetRegistry());
    PrintRegistry(TaskRegistry());
    PrintRegistry(LayerMetricRegistry());
    return 0;
  }
  const std::string spec_flag = absl::GetFlag(FLAGS_spec);
  if (spec_flag.empty()) {
    std::fprintf(stderr, "error: --spec=PATH is required (or --list)\n");
    return 2;
  }
  absl::StatusOr<ExperimentSpec> spec = LoadSpec(ResolveUserPath(spec_flag));
  if (!spec.ok()) {
    std::fprintf(stderr, "error: %s\n", std::string(spec.status().message()).c_str());
    return 1;
  }
  if (absl::GetFlag(FLAGS_validate_only)) {
    std::printf("# resolved spec (hash %s)\n%s", SpecHash(*spec).c_str(),
                SpecToText(*spec).c_str());
    return 0;
  }
  const int nproc = absl::GetFlag(FLAGS_nproc_per_node);
  // The workers it starts find WORLD_SIZE set and run as workers.
  if (nproc > 0 && !ProcessEnvironment("WORLD_SIZE").has_value()) {
    LaunchOptions launch{.nproc = nproc,
                         .argv = std::vector<std::string>(g_argv.begin(), g_argv.end()),
                         .grace = std::chrono::milliseconds(
                             static_cast<int64_t>(1000 * absl::GetFlag(FLAGS_worker_grace_s)))};
    launch.argv[0] = "/proc/self/exe";
    absl::StatusOr<int> code = LaunchLocalWorkers(launch);
    if (!code.ok()) {
      std::fprintf(stderr, "error: %s\n", std::string(code.status().message()).c_str());
      return 1;
    }
    return *code;
  }
  absl::StatusOr<WorkerPlace> place = WorkerPlaceFromEnvironment();
  if (!place.ok()) {
    std::fprintf(stderr, "error: %s\n", std::string(place.status().message()).c_str());
    return 1;
  }
  RunOptions options;
  options.resume = absl::GetFlag(FLAGS_resume);
  options.overwrite = absl::GetFlag(FLAGS_overwrite);
  options.output_directory = ResolveUserPath(absl::GetFlag(FLAGS_output_dir));
  std::unique_ptr<ProcessGroups> groups;
  if (place->distributed()) {
    DistributedOptions join;                  // a spec without `distributed` keeps the defaults
    if (spec->runtime().has_distributed()) {  // resolved: every field set
      const DistributedSpec& distributed = spec->runtime().distributed();
      join.expert_parallel = distributed.expert_parallel();
      join.timeout =
          std::chrono::milliseconds(static_cast<int64_t>(1000 * distributed.timeout_s()));
    }
    absl::StatusOr<std::unique_ptr<ProcessGroups>> joined = ProcessGroups::Join(*place, join);
    if (!joined.ok()) {
      std::fprintf(stderr, "error: %s\n", std::string(joined.status().message()).c_str());
      return 1;
    }
    groups = *std::move(joined);
    options.groups = groups.get();
    options.verbose = place->rank == 0;
  }
  if (options.verbose) {
    std::fprintf(
        stderr, "run %s (spec %s) -> %s%s\n", spec->name().c_str(), SpecHash(*spec).c_str(),
        RunDirectory(*spec, options).c_str(),
        place->distributed()
            ? absl::StrCat(" on ", place->world_size, " workers (", place->launcher, ")").c_str()
            : "");
  }
  absl::StatusOr<RunResult> result = RunExperiment(*spec, options);
  if (!result.ok()) {
    std::fprintf(stderr, "error: %s%s\n",
                 place->distributed() ? absl::StrCat("rank ", place->rank, ": ").c_str() : "",
                 std::string(result.status().message()).c_str());
    return 1;
  }
  return 0;
}

}  // namespace
}  // namespace moelab

int main(int argc, char** argv) {
  moelab::ReexecWithPassiveOpenMpWaiting(argc, argv);
  moelab::g_argv.assign(argv, argv + argc);
  absl::SetProgramUsageMessage(
      "Runs a moelab experiment spec.\n"
      "  run --spec=experiments/specs/quickstart_sotu.pbtxt\n"
      "  run --list");
  absl::ParseCommandLine(argc, argv);
  return moelab::CallMainWithErrorBoundary(moelab::Main);
}
