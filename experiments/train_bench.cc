// Training throughput of one spec, measured with the trainer's own step
// (core/train_step.h), and optionally where the step's time goes.
//
//   bazel run //experiments:train_bench -- --spec=experiments/specs/bench_lm.pbtxt
//   ... --profile    adds a per-phase profile (router, dispatch, expert
//                    matmuls, combine, attention, loss, optimizer, other)
//   ... --precision=bf16   overrides the spec's runtime.precision (fp32 or
//                          bf16; empty keeps the spec's own)
//
// Batches are read from the spec's dataset before timing, so data loading is
// not timed (the PyTorch baseline does the same). Every step (warm-up and
// profiled ones too) runs inside a PrecisionScope of the precision in force,
// as the trainer's steps do; a line `precision: fp32` or `precision: bf16`
// names it. The last line is `train_tokens_per_s: N` (language models) or
// `train_images_per_s: N`; language models also print the useful work done
// per second, `step_gflops: X`.

#include <ATen/Parallel.h>

#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "core/dataset.h"
#include "core/memory_usage.h"
#include "core/model.h"
#include "core/paths.h"
#include "core/precision.h"
#include "core/provenance.h"
#include "core/spec.h"
#include "core/step_profiler.h"
#include "core/task.h"
#include "core/threading_environment.h"
#include "core/train_step.h"
#include "models/matmul.h"

ABSL_FLAG(std::string, spec, "", "Path of the experiment spec (.pbtxt).");
ABSL_FLAG(int, steps, 30, "Timed training steps.");
ABSL_FLAG(int, warmup_steps, 5, "Untimed steps before timing.");
ABSL_FLAG(bool, profile, false, "After timing, profile --profile_steps more steps phase by phase.");
ABSL_FLAG(int, profile_steps, 10, "Steps recorded by --profile.");
ABSL_FLAG(std::string, precision, "",
          "fp32 or bf16: overrides the spec's runtime.precision; empty keeps the "
          "spec's own.");

namespace moelab {
namespace {

// --precision: fp32 or bf16 (any case); PRECISION_UNSPECIFIED when empty.
absl::StatusOr<Precision> PrecisionFlag() {
  const std::string value = absl::AsciiStrToLower(absl::GetFlag(FLAGS_precision));
  if (value.empty()) return PRECISION_UNSPECIFIED;
  if (value == "fp32") return FP32;
  if (value == "bf16") return BF16;
  return absl::InvalidArgumentError(
      absl::StrCat("--precision: expected fp32 or bf16 (or empty for the spec's own), got '",
                   absl::GetFlag(FLAGS_precision), "'"));
}

absl::Status Main() {
  const std::string spec_flag = absl::GetFlag(FLAGS_spec);
  if (spec_flag.empty()) return absl::InvalidArgumentError("--spec=PATH is required");
  const int steps = absl::GetFlag(FLAGS_steps);
  const int warmup_steps = absl::GetFlag(FLAGS_warmup_steps);
  const int profile_steps = absl::GetFlag(FLAGS_profile_steps);
  if (steps < 1) return absl::InvalidArgumentError("--steps: must be at least 1");
  if (warmup_steps < 0) return absl::InvalidArgumentError("--warmup_steps: must be >= 0");
  if (profile_steps < 1) {
    return absl::InvalidArgumentError("--profile_steps: must be at least 1");
  }
  const absl::StatusOr<Precision> precision_flag = PrecisionFlag();
  if (!precision_flag.ok()) return precision_flag.status();
  absl::StatusOr<ExperimentSpec> spec = LoadSpec(ResolveUserPath(spec_flag));
  if (!spec.ok()) return spec.status();
  if (*precision_flag != PRECISION_UNSPECIFIED) {
    spec->mutable_runtime()->set_precision(*precision_flag);
  }
  const Precision precision = spec->runtime().precision();
  SetIntraOpThreads(ThreadsFor(spec->runtime()));
  torch::manual_seed(spec->seed());
  const at::Device device(spec->runtime().device());

  absl::StatusOr<std::unique_ptr<Dataset>> data = LoadDataset(spec->dataset());
  if (!data.ok()) return data.status();
  const DatasetInfo& info = (*data)->info();
  absl::StatusOr<std::shared_ptr<Model>> created = CreateModel(*spec, info);
  if (!created.ok()) return created.status();
  Model& model = **created;
  model.to(device);
  model.train();
  std::unique_ptr<torch::optim::Optimizer> optimizer = MakeOptimizer(spec->training(), model);

  const int64_t batch_size = spec->training().batch_size();
  const int64_t available = (*data)->NumBatches(Split::kTrain, batch_size);
  if (available == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("training.batch_size: ", batch_size, " is larger than the training split"));
  }
  const int total_steps = warmup_steps + steps + profile_steps;
  std::vector<Batch> batches;
  for (int i = 0; i < std::min<int64_t>(total_steps, available); ++i) {
    Batch b = (*data)->GetBatch(Split::kTrain, batch_size, i, 0, spec->seed());
    batches.push_back(Batch{b.inputs.to(device), b.targets.to(device)});
  }
  absl::StatusOr<std::unique_ptr<Task>> task = CreateTask(info);
  if (!task.ok()) return task.status();
  const ThroughputUnit unit = (*task)->Unit();
  const int64_t units_per_step = batch_size * unit.per_example;
  // Model::Stats counts FLOPs per token, so the work per step is known when
  // the unit is the token.
  const bool per_token = unit.name == "tokens";
  int64_t parameters = 0;
  for (const at::Tensor& p : model.parameters()) parameters += p.numel();
  std::printf("spec %s (hash %s): %lld parameters, batch %lld%s, %d threads, %s\n",
              spec->name().c_str(), SpecHash(*spec).c_str(), static_cast<long long>(parameters),
              static_cast<long long>(batch_size),
              unit.per_example == 1 ? absl::StrCat(" ", unit.name).c_str()
                                    : absl::StrCat(" x ", unit.per_example, " ", unit.name).c_str(),
              at::get_num_threads(), spec->runtime().device().c_str());
  // The code behind every figure below (core/provenance.h).
  std::printf("source: %s\n", RevisionLabel(CurrentSourceRevision()).c_str());
  if (precision == BF16) {
    std::printf("precision: bf16 (%s)\n", DescribeBf16Operands());
  } else {
    std::printf("precision: %s\n", PrecisionName(precision));
  }

  // The trainer opens the same scope around its steps; TrainStep does not.
  PrecisionScope precision_scope(precision);

  int next = 0;
  auto step = [&]() -> absl::Status {
    absl::StatusOr<StepLosses> losses = TrainStep(
        model, *optimizer, batches[next++ % batches.size()], spec->training().grad_clip_norm());
    return losses.status();
  };
  for (int i = 0; i < warmup_steps; ++i) {
    if (absl::Status s = step(); !s.ok()) return s;
  }
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < steps; ++i) {
    if (absl::Status s = step(); !s.ok()) return s;
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

  if (absl::GetFlag(FLAGS_profile)) {
    StepProfiler profiler;
    for (int i = 0; i < profile_steps; ++i) {
      profiler.BeginStep();
      if (absl::Status s = step(); !s.ok()) return s;
      profiler.EndStep();
    }
    std::printf("\nper-phase profile (profiled steps are a little slower than timed ones):\n%s\n",
                StepProfiler::Format(profiler.Profile()).c_str());
  }
  std::printf("mean_step_ms: %.2f\n", 1000 * seconds / steps);
  std::printf("peak_rss_mb: %.0f\n", ReadMemoryUsage().peak_resident_mb);
  if (per_token) {
    // Useful work: forward FLOPs per token (Model::Stats, at the configured
    // k) times 3 for forward plus backward, the usual training count.
    const double flops_per_token = model.Stats().flops_per_token;
    std::printf("step_gflops: %.1f  (3 x %.2f MFLOP/token forward x tokens/s)\n",
                3 * flops_per_token * steps * units_per_step / seconds / 1e9,
                flops_per_token / 1e6);
  }
  std::printf("train_%s_per_s: %.0f\n", unit.name.c_str(), steps * units_per_step / seconds);
  return absl::OkStatus();
}

}  // namespace
}  // namespace moelab

int main(int argc, char** argv) {
  moelab::ReexecWithPassiveOpenMpWaiting(argc, argv);
  absl::ParseCommandLine(argc, argv);
  if (absl::Status s = moelab::Main(); !s.ok()) {
    std::fprintf(stderr, "error: %s\n", std::string(s.message()).c_str());
    return 1;
  }
  return 0;
}
