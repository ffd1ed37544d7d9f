// Runs one experiment spec: `bazel run //experiments:run -- --spec=PATH`.
// `--list` prints every registered router, model, dataset, task and layer
// metric. Every failure
// ends with one "error: ..." line on stderr and a non-zero exit status (2 for
// a missing flag, 1 otherwise); no exception escapes.

#include <cstdio>
#include <exception>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "core/checkpoint.h"
#include "core/dataset.h"
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

namespace moelab {
namespace {

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
  RunOptions options;
  options.resume = absl::GetFlag(FLAGS_resume);
  options.overwrite = absl::GetFlag(FLAGS_overwrite);
  options.output_directory = ResolveUserPath(absl::GetFlag(FLAGS_output_dir));
  std::fprintf(stderr, "run %s (spec %s) -> %s\n", spec->name().c_str(), SpecHash(*spec).c_str(),
               RunDirectory(*spec, options).c_str());
  absl::StatusOr<RunResult> result = RunExperiment(*spec, options);
  if (!result.ok()) {
    std::fprintf(stderr, "error: %s\n", std::string(result.status().message()).c_str());
    return 1;
  }
  return 0;
}

}  // namespace
}  // namespace moelab

int main(int argc, char** argv) {
  moelab::ReexecWithPassiveOpenMpWaiting(argc, argv);
  absl::SetProgramUsageMessage(
      "Runs a moelab experiment spec.\n"
      "  run --spec=experiments/specs/quickstart_sotu.pbtxt\n"
      "  run --list");
  absl::ParseCommandLine(argc, argv);
  return moelab::CallMainWithErrorBoundary(moelab::Main);
}
