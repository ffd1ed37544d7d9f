// Multi-process training throughput on one machine, side by side in one run:
// one process with 2 threads against 2 processes with 1 thread each, data
// parallel and expert parallel, on the same spec, with the share of step
// time spent communicating and the bytes a step moves.
//
//   bazel run -c opt //experiments:distributed_bench
//   ... -- --spec=experiments/specs/bench_lm.pbtxt --steps=20 --rounds=3
//
// The configurations alternate, round by round, and medians are reported.
// Each configuration runs as its own job of workers (this binary again,
// started through core/distributed/local_launcher.h) on loopback.

#include <ATen/Parallel.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "core/batch_collective.h"
#include "core/cpu_info.h"
#include "core/dataset.h"
#include "core/distributed/c10d_expert_exchange.h"
#include "core/distributed/data_parallel.h"
#include "core/distributed/local_launcher.h"
#include "core/distributed/process_groups.h"
#include "core/distributed/worker_place.h"
#include "core/model.h"
#include "core/paths.h"
#include "core/spec.h"
#include "core/threading_environment.h"
#include "core/train_step.h"

ABSL_FLAG(std::string, spec, "experiments/specs/bench_lm.pbtxt", "Spec whose model is trained.");
ABSL_FLAG(int, steps, 20, "Timed steps per measurement.");
ABSL_FLAG(int, warmup_steps, 3, "Untimed steps before timing.");
ABSL_FLAG(int, rounds, 3, "Measurements of each configuration, alternating.");
ABSL_FLAG(int, worker_threads, 0, "Internal: a worker's intra-op threads.");
ABSL_FLAG(int, worker_expert_parallel, 1, "Internal: a worker's expert-parallel degree.");

namespace moelab {
namespace {

constexpr char kOutputVariable[] = "MOELAB_DISTRIBUTED_BENCH_OUTPUT";

struct Config {
  std::string name;
  int processes;
  int threads;
  int expert_parallel;
};

// One measurement, as rank 0 writes it: "key value" lines.
using Measurement = std::map<std::string, double>;

absl::Status RunWorker() {
  absl::StatusOr<ExperimentSpec> spec = LoadSpec(ResolveUserPath(absl::GetFlag(FLAGS_spec)));
  if (!spec.ok()) return spec.status();
  const int threads = absl::GetFlag(FLAGS_worker_threads);
  SetIntraOpThreads(threads);
  absl::StatusOr<WorkerPlace> place = WorkerPlaceFromEnvironment();
  if (!place.ok()) return place.status();
  std::unique_ptr<ProcessGroups> groups;
  if (place->distributed()) {
    absl::StatusOr<std::unique_ptr<ProcessGroups>> joined =
        ProcessGroups::Join(*place, {.expert_parallel = absl::GetFlag(FLAGS_worker_expert_parallel),
                                     .timeout = std::chrono::seconds(120)});
    if (!joined.ok()) return joined.status();
    groups = *std::move(joined);
  }
  torch::manual_seed(spec->seed());
  absl::StatusOr<std::unique_ptr<Dataset>> data = LoadDataset(spec->dataset());
  if (!data.ok()) return data.status();
  absl::StatusOr<std::shared_ptr<Model>> created = CreateModel(*spec, (*data)->info());
  if (!created.ok()) return created.status();
  Model& model = **created;
  model.train();
  std::shared_ptr<C10dExpertExchange> exchange;
  std::vector<at::Tensor> expert_sharded;
  if (groups && groups->experts()) {
    exchange = std::make_shared<C10dExpertExchange>(*groups);
    absl::StatusOr<std::vector<at::Tensor>> kept = model.ShardExperts(exchange);
    if (!kept.ok()) return kept.status();
    expert_sharded = *kept;
  }
  std::unique_ptr<torch::optim::Optimizer> optimizer = MakeOptimizer(spec->training(), model);
  std::unique_ptr<DataParallel> data_parallel;
  std::optional<ScopedBatchCollective> collective;
  if (groups) {
    data_parallel = std::make_unique<DataParallel>(*groups, model.parameters(), expert_sharded,
                                                   DataParallelOptions{});
    if (absl::Status s = data_parallel->SyncInitialState(model.buffers()); !s.ok()) return s;
    collective.emplace(&data_parallel->batch_collective());
  }
  const int64_t batch_size = spec->training().batch_size();
  const int shards = groups ? groups->world_size() : 1;
  const int shard = groups ? groups->rank() : 0;
  if (batch_size % shards != 0) {
    return absl::InvalidArgumentError("training.batch_size must divide over the processes");
  }
  const int total = absl::GetFlag(FLAGS_warmup_steps) + absl::GetFlag(FLAGS_steps);
  std::vector<Batch> batches;
  for (int i = 0; i < total; ++i) {
    Batch b = (*data)->GetBatch(Split::kTrain, batch_size, i, 0, spec->seed());
    batches.push_back(groups ? ShardOf(b, shard, shards) : b);
  }
  auto step = [&](int i) {
    return TrainStep(model, *optimizer, batches[i], spec->training().grad_clip_norm(),
                     data_parallel.get())
        .status();
  };
  for (int i = 0; i < absl::GetFlag(FLAGS_warmup_steps); ++i) {
    if (absl::Status s = step(i); !s.ok()) return s;
  }
  const CommunicationTimes before =
      data_parallel ? data_parallel->communication_times() : CommunicationTimes{};
  const double exchange_before = exchange ? exchange->seconds() : 0;
  const int64_t exchange_bytes_before = exchange ? exchange->remote_bytes_sent() : 0;
  const auto start = std::chrono::steady_clock::now();
  const int steps = absl::GetFlag(FLAGS_steps);
  for (int i = absl::GetFlag(FLAGS_warmup_steps); i < total; ++i) {
    if (absl::Status s = step(i); !s.ok()) return s;
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (shard != 0) return absl::OkStatus();
  const CommunicationTimes after =
      data_parallel ? data_parallel->communication_times() : CommunicationTimes{};
  std::ofstream out(std::getenv(kOutputVariable));
  const int64_t tokens_per_step = batch_size * (*data)->info().sequence_length;
  out << "tokens_per_s " << steps * tokens_per_step / seconds << "\n"
      << "step_ms " << 1000 * seconds / steps << "\n"
      << "all_reduce_ms "
      << 1000 * (after.gradient_all_reduce_s - before.gradient_all_reduce_s) / steps << "\n"
      << "blocking_ms " << 1000 * (after.blocking_s - before.blocking_s) / steps << "\n"
      << "all_to_all_ms " << 1000 * ((exchange ? exchange->seconds() : 0) - exchange_before) / steps
      << "\n"
      << "all_reduce_bytes " << (data_parallel ? data_parallel->replicated_bytes() : 0) << "\n"
      << "all_to_all_bytes "
      << double((exchange ? exchange->remote_bytes_sent() : 0) - exchange_bytes_before) / steps
      << "\n";
  return out ? absl::OkStatus()
             : absl::InternalError(absl::StrCat("cannot write ", std::getenv(kOutputVariable)));
}

absl::StatusOr<Measurement> Measure(const Config& config, const std::string& program,
                                    const std::string& output) {
  LaunchOptions launch{
      .nproc = config.processes,
      .argv = {program, absl::StrCat("--spec=", absl::GetFlag(FLAGS_spec)),
               absl::StrCat("--steps=", absl::GetFlag(FLAGS_steps)),
               absl::StrCat("--warmup_steps=", absl::GetFlag(FLAGS_warmup_steps)),
               absl::StrCat("--worker_threads=", config.threads),
               absl::StrCat("--worker_expert_parallel=", config.expert_parallel)},
      .grace = std::chrono::seconds(30),
      .environment = {absl::StrCat(kOutputVariable, "=", output),
                      absl::StrCat("OMP_NUM_THREADS=", config.threads), "OPENBLAS_NUM_THREADS=1"}};
  std::remove(output.c_str());
  absl::StatusOr<int> code = LaunchLocalWorkers(launch);
  if (!code.ok()) return code.status();
  if (*code != 0) {
    return absl::InternalError(absl::StrCat("configuration '", config.name, "' failed"));
  }
  std::ifstream in(output);
  Measurement m;
  std::string key;
  double value;
  while (in >> key >> value) m[key] = value;
  if (m.empty()) return absl::InternalError(absl::StrCat("no measurement in ", output));
  return m;
}

double Median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  const size_t n = values.size();
  return n % 2 ? values[n / 2] : 0.5 * (values[n / 2 - 1] + values[n / 2]);
}

absl::Status RunParent(const std::string& program) {
  absl::StatusOr<CpuInfo> cpu = ReadCpuInfo();
  std::printf("machine: %s\n", cpu.ok() ? DescribeCpu(*cpu).c_str() : "unknown");
  std::printf("spec: %s, %d timed steps after %d warm-up, %d alternating rounds\n",
              absl::GetFlag(FLAGS_spec).c_str(), absl::GetFlag(FLAGS_steps),
              absl::GetFlag(FLAGS_warmup_steps), absl::GetFlag(FLAGS_rounds));
  const std::vector<Config> configs = {
      {"1 process x 2 threads", 1, 2, 1},
      {"2 processes x 1 thread, data parallel", 2, 1, 1},
      {"2 processes x 1 thread, expert parallel", 2, 1, 2},
  };
  const char* tmp = std::getenv("TMPDIR");
  const std::string output =
      absl::StrCat(tmp ? tmp : "/tmp", "/moelab_distributed_bench.", getpid(), ".txt");
  std::vector<std::map<std::string, std::vector<double>>> results(configs.size());
  for (int round = 0; round < absl::GetFlag(FLAGS_rounds); ++round) {
    for (size_t c = 0; c < configs.size(); ++c) {
      absl::StatusOr<Measurement> m = Measure(configs[c], program, output);
      if (!m.ok()) return m.status();
      for (const auto& [key, value] : *m) results[c][key].push_back(value);
      std::printf("  round %d, %-42s %8.0f tokens/s\n", round + 1, configs[c].name.c_str(),
                  (*m)["tokens_per_s"]);
      std::fflush(stdout);
    }
  }
  std::printf("\n%-42s %10s %8s %16s %14s %14s %10s\n", "configuration (medians)", "tokens/s",
              "step ms", "all-reduce busy", "blocking", "all-to-all", "vs 1 proc");
  const double baseline = Median(results[0]["tokens_per_s"]);
  for (size_t c = 0; c < configs.size(); ++c) {
    auto& r = results[c];
    const double step = Median(r["step_ms"]);
    const double all_reduce = Median(r["all_reduce_ms"]);
    const double all_to_all = Median(r["all_to_all_ms"]);
    const double blocking = Median(r["blocking_ms"]);
    std::printf("%-42s %10.0f %8.1f %9.1f (%3.0f%%) %7.1f (%3.0f%%) %7.1f (%3.0f%%) %9.2fx\n",
                configs[c].name.c_str(), Median(r["tokens_per_s"]), step, all_reduce,
                100 * all_reduce / step, blocking, 100 * blocking / step, all_to_all,
                100 * all_to_all / step, Median(r["tokens_per_s"]) / baseline);
  }
  std::printf(
      "\nms per step (%% of the step). all-reduce busy: each gradient bucket from launch to "
      "completion, summed; it overlaps the backward pass, so it is not all exposed. blocking: "
      "the step's waits on other collectives (the losses' mean, the routers' batch statistics, "
      "expert gradients and norms). all-to-all: the expert exchanges, forward and backward, "
      "blocking.\n");
  std::printf(
      "per step: data parallel all-reduces %.1f MB of gradients (each bucket from launch to "
      "completion, overlapping the backward pass); expert parallel sends %.1f MB of token rows to "
      "the other process (forward and backward) and all-reduces %.1f MB\n",
      Median(results[1]["all_reduce_bytes"]) / 1e6, Median(results[2]["all_to_all_bytes"]) / 1e6,
      Median(results[2]["all_reduce_bytes"]) / 1e6);
  return absl::OkStatus();
}

}  // namespace
}  // namespace moelab

int main(int argc, char** argv) {
  moelab::ReexecWithPassiveOpenMpWaiting(argc, argv);
  absl::ParseCommandLine(argc, argv);
  const bool worker = absl::GetFlag(FLAGS_worker_threads) > 0;
  absl::Status status = worker ? moelab::RunWorker() : moelab::RunParent("/proc/self/exe");
  if (!status.ok()) {
    std::fprintf(stderr, "error: %s\n", std::string(status.message()).c_str());
    return 1;
  }
  return 0;
}
