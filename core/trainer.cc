#include "core/trainer.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/cuda.h>
#include <torch/utils.h>
#include <torch/version.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <new>
#include <optional>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "core/atomic_file.h"
#include "core/batch_collective.h"
#include "core/checkpoint.h"
#include "core/cpu_info.h"
#include "core/dataset.h"
#include "core/distributed/c10d_expert_exchange.h"
#include "core/distributed/data_parallel.h"
#include "core/distributed/process_groups.h"
#include "core/evaluation.h"
#include "core/lr_schedule.h"
#include "core/memory_usage.h"
#include "core/model.h"
#include "core/paths.h"
#include "core/precision.h"
#include "core/progress.h"
#include "core/provenance.h"
#include "core/routing_metrics.h"
#include "core/run_outputs.h"
#include "core/spec.h"
#include "core/task.h"
#include "core/threading_environment.h"
#include "core/train_step.h"
#include "google/protobuf/stubs/common.h"

namespace moelab {
namespace {

namespace fs = std::filesystem;

constexpr char kMoelabVersion[] = "0.1.0";

void SetLearningRate(torch::optim::Optimizer& optimizer, double lr) {
  for (auto& group : optimizer.param_groups()) group.options().set_lr(lr);
}

// The wall clock in Unix seconds, for RunResult.started_unix_s and
// finished_unix_s: tables report their real elapsed time from them, so they
// must compare across processes (steady_clock does not).
double UnixSecondsNow() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

// This machine's CPU model for Versions.cpu_model, read once; empty when
// /proc/cpuinfo names none (recorded as unknown, never a failure).
const std::string& CpuModelName() {
  static const std::string* const model = [] {
    const absl::StatusOr<CpuInfo> cpu = ReadCpuInfo();
    return new std::string(cpu.ok() ? cpu->model : "");
  }();
  return *model;
}

// What RunExperiment's error boundary needs to know about a run in progress.
struct RunProgress {
  // What the run was doing, for errors: "building model 'vmoe_vit'".
  std::string stage = "setting up";
  // The run directory once the run owns it (its result.json may be
  // written); empty before that, or when it turned out to be another run's.
  std::string dir;
  // result.json of this spec's earlier invocation, when there was one.
  std::optional<RunResult> previous;
  // True once TrainingState::result holds the whole record (a resumed run's
  // loaded from its checkpoint).
  bool state_loaded = false;
  std::chrono::steady_clock::time_point wall_start = std::chrono::steady_clock::now();
  // Wall time of the run's earlier invocations (a resumed run).
  double wall_before = 0;

  double WallSeconds() const {
    return wall_before +
           std::chrono::duration<double>(std::chrono::steady_clock::now() - wall_start).count();
  }
};

// Refuses to start in a directory that holds a run of another spec
// (another spec hash in its result.json) unless options.overwrite; a run of
// this spec found there is returned in `previous`.
absl::Status CheckRunDirectory(const std::string& dir, const ExperimentSpec& spec,
                               const RunOptions& options, std::optional<RunResult>* previous) {
  const std::string path = dir + "/result.json";
  std::error_code error;
  if (!fs::exists(path, error)) return absl::OkStatus();
  const std::string hash = SpecHash(spec);
  absl::StatusOr<std::string> json = ReadFile(path);
  absl::StatusOr<RunResult> parsed =
      json.ok() ? ParseRunResultJson(*json, path, /*ignore_unknown_fields=*/true) : json.status();
  const bool readable = parsed.ok();
  RunResult existing = readable ? *std::move(parsed) : RunResult();
  if (readable && existing.spec_hash() == hash) {
    *previous = std::move(existing);
    return absl::OkStatus();
  }
  if (options.overwrite) {
    if (options.verbose) {
      std::fprintf(stderr, "warning: --overwrite: replacing the run in %s (spec %s)\n", dir.c_str(),
                   readable ? existing.spec_hash().c_str() : "unreadable");
    }
    return absl::OkStatus();
  }
  const std::string what =
      readable
          ? absl::StrCat("a ", existing.status().empty() ? "" : existing.status() + " ",
                         "run of a different spec (hash ", existing.spec_hash(),
                         "; this spec's hash is ", hash, ")")
          : absl::StrCat("a result.json this run cannot read (this spec's hash is ", hash, ")");
  return absl::FailedPreconditionError(absl::StrCat(
      options.resume ? "cannot resume: " : "", "the run directory ", dir, " holds ", what,
      "; refusing to overwrite it. Give the spec another name, choose another output "
      "directory (--output_dir), or pass --overwrite to replace it"));
}

// Records a failed run in its result.json (when it owns its directory and
// has not recorded a more specific end itself, as a non-finite stop does).
void RecordFailure(const absl::Status& status, const RunOptions& options,
                   const RunProgress& progress, const TrainingState& state) {
  if (progress.dir.empty()) return;
  const std::string& recorded = state.result.status();
  if (!recorded.empty() && recorded != "RUNNING") return;
  // A resumed run that failed before its checkpoint was read: what the
  // directory held is still its record.
  RunResult result = options.resume && !progress.state_loaded && progress.previous.has_value()
                         ? *progress.previous
                         : state.result;
  result.set_status("FAILED");
  result.set_status_reason(std::string(status.message()));
  result.set_wall_time_s(progress.WallSeconds());
  result.set_finished_unix_s(UnixSecondsNow());
  if (absl::Status s = WriteOutputs(progress.dir, result); !s.ok()) {
    // The disk may be what failed: say so, beside the run's own error line.
    std::fprintf(stderr, "warning: the failure could not be recorded in %s/result.json: %s\n",
                 progress.dir.c_str(), std::string(s.message()).c_str());
  }
}

}  // namespace

std::string FlagIdentityAggregation(RunResult* result) {
  result->clear_identity_aggregation_layers();
  std::vector<std::string> described;
  for (const LayerRoutingMetrics& layer : result->final().layers()) {
    const std::optional<double> self_weight = LayerValue(layer, kAggregationSelfWeightMetric);
    if (self_weight && *self_weight > kIdentityAggregationSelfWeight) {
      result->add_identity_aggregation_layers(layer.layer());
      described.push_back(absl::StrFormat(
          "MoE layer %d: mean self-weight %.5f, %.3f effective neighbours", layer.layer(),
          *self_weight, LayerValue(layer, kAggregationEffectiveNeighboursMetric).value_or(0)));
    }
  }
  if (described.empty()) return "";
  const std::string message = absl::StrFormat(
      "router '%s' aggregates effectively nothing (mean self-weight above %.2f): %s; "
      "p = r there, so it routes as token choice does. Check the similarity scale and "
      "temperature or the likelihood's sigma (routers/README.md)",
      result->spec().router().name(), kIdentityAggregationSelfWeight,
      absl::StrJoin(described, "; "));
  result->add_warnings(message);
  return message;
}

std::string RunDirectory(const ExperimentSpec& spec, const RunOptions& options) {
  const std::string root = options.output_directory.empty()
                               ? ResolveUserPath(spec.output().directory())
                               : options.output_directory;
  return root + "/" + spec.name();
}

namespace {

// What the stages after setup work with, built once by SetUp.
struct RunSetup {
  std::string dir;
  std::string checkpoint;
  c10::Device device = c10::Device(c10::kCPU);
  std::unique_ptr<Dataset> data;
  std::unique_ptr<Task> task;
  std::shared_ptr<Model> model;
  std::unique_ptr<torch::optim::Optimizer> optimizer;
  // A router of this causal model sees later tokens (recorded as
  // RunResult.non_causal_router_in_causal_model).
  bool leaks_future = false;
  int64_t batch_size = 0;
  int64_t steps_per_epoch = 0;
  int64_t total_steps = 0;
  // The fixed probe set (validation example indices).
  std::vector<int64_t> probe;
  // Whether this process writes the run's files (rank 0, or the only one).
  bool writer = true;
  // The gradient averaging of a multi-process run; null in one process.
  std::unique_ptr<DataParallel> data_parallel;
  // Expert parallelism: the exchange of tokens with the ranks holding the
  // other experts, and the expert parameters this rank holds.
  std::shared_ptr<ExpertExchange> expert_exchange;
  std::vector<at::Tensor> expert_sharded;
  // Which share of the experts this rank holds (and resumes).
  ExpertLayout layout;
};

// Claims the run directory: refuses another spec's run there (unless
// options.overwrite), creates it, writes spec.pbtxt and removes what a killed
// writer left. From its return on, every failure is recorded in result.json.
absl::StatusOr<std::string> ClaimRunDirectory(const ExperimentSpec& spec, const RunOptions& options,
                                              RunProgress& boundary) {
  const std::string dir = RunDirectory(spec, options);
  boundary.stage = absl::StrCat("checking the run directory ", dir);
  if (absl::Status s = CheckRunDirectory(dir, spec, options, &boundary.previous); !s.ok()) {
    return s;
  }
  std::error_code error;
  fs::create_directories(dir, error);
  if (error) {
    return absl::PermissionDeniedError(
        absl::StrCat("output.directory: cannot create '", dir, "': ", error.message()));
  }
  if (absl::Status s = WriteFileAtomically(dir + "/spec.pbtxt", SpecToText(spec)); !s.ok()) {
    return s;
  }
  // A run killed while writing left "<file>.tmp.<pid>" behind; it is never
  // read, so it goes now.
  if (const int removed = RemoveStaleTemporaries(dir); removed > 0 && options.verbose) {
    std::fprintf(stderr, "removed %d temporary file(s) left in %s by a killed run\n", removed,
                 dir.c_str());
  }
  boundary.dir = dir;
  return dir;
}

// The record's header: the spec, versions, machine and source revision.
void RecordProvenance(const ExperimentSpec& spec, const SourceRevision& source, int threads,
                      RunResult* result) {
  *result->mutable_spec() = spec;
  result->set_spec_hash(SpecHash(spec));
  Versions* versions = result->mutable_versions();
  versions->set_moelab(kMoelabVersion);
  versions->set_libtorch(TORCH_VERSION);
  versions->set_protobuf(google::protobuf::internal::VersionString(GOOGLE_PROTOBUF_VERSION));
  versions->set_threads(threads);
  versions->set_device(spec.runtime().device());
  versions->set_cpu_model(CpuModelName());
  // A resumed run's record is replaced by its checkpoint's, which keeps the
  // first invocation's start (and machine).
  result->set_started_unix_s(UnixSecondsNow());
  *result->mutable_source() = source;
}

// Continues a run from its checkpoint: the model, optimizer, state and
// generator as they were after the last finished epoch. A resume under
// other source code (`source` is this invocation's) is recorded as a
// revision of its own.
absl::Status ResumeFromCheckpoint(const ExperimentSpec& spec, const RunOptions& options,
                                  const SourceRevision& source, RunSetup& run, TrainingState& state,
                                  RunProgress& boundary, std::vector<std::string>* warnings) {
  boundary.stage = absl::StrCat("loading checkpoint '", run.checkpoint, "'");
  if (absl::Status s =
          LoadCheckpoint(run.checkpoint, *run.model, *run.optimizer, &state, warnings, run.layout);
      !s.ok()) {
    return s;
  }
  RunResult& result = state.result;
  if (result.spec_hash() != SpecHash(spec)) {
    // Not this run's directory after all: leave its result.json alone.
    boundary.dir.clear();
    return absl::FailedPreconditionError(
        absl::StrCat("cannot resume: ", run.checkpoint, " was written by a different spec (hash ",
                     result.spec_hash(), ", this spec ", SpecHash(spec),
                     "); remove it or choose another output directory"));
  }
  // The checkpoint's record holds the revision(s) its epochs ran at, joined
  // by ',' once a resume changed it.
  const std::string before =
      result.source().revision().empty() ? "unknown" : result.source().revision();
  const size_t last_comma = before.rfind(',');
  const std::string latest =
      last_comma == std::string::npos ? before : before.substr(last_comma + 1);
  if (latest != source.revision()) {
    // The run's numbers now come from more than one version of the code:
    // say so, and give it a revision of its own that matches none, so that
    // tables never count it as any of them.
    result.add_warnings(absl::StrCat("resumed with different source code: epochs 1-",
                                     state.epochs_done, " ran at revision ", latest,
                                     ", the rest at ", source.revision()));
    SourceRevision mixed = source;
    mixed.set_revision(absl::StrCat(before, ",", source.revision()));
    *result.mutable_source() = mixed;
  }
  at::Generator generator = at::detail::getDefaultCPUGenerator();
  generator.set_state(state.rng_state);
  if (options.verbose) {
    std::fprintf(stderr, "resuming %s after epoch %d (step %lld)\n", spec.name().c_str(),
                 state.epochs_done, static_cast<long long>(state.step));
  }
  return absl::OkStatus();
}

// Loads evaluation.init_checkpoint's weights (training-free evaluation, or
// fine-tuning from them).
absl::Status LoadInitialWeights(const ExperimentSpec& spec, Model& model, RunResult* result,
                                RunProgress& boundary, std::vector<std::string>* warnings) {
  const std::string init = ResolveUserPath(spec.evaluation().init_checkpoint());
  boundary.stage = absl::StrCat("loading evaluation.init_checkpoint '", init, "'");
  std::vector<std::string> not_loaded;
  if (absl::Status s = LoadWeights(init, model, &not_loaded, warnings); !s.ok()) {
    return absl::Status(s.code(), absl::StrCat("evaluation.init_checkpoint: ", s.message()));
  }
  if (!not_loaded.empty()) {
    result->add_warnings(absl::StrCat(
        "router parameters not in evaluation.init_checkpoint keep their initial values: ",
        absl::StrJoin(not_loaded, ", ")));
  }
  return absl::OkStatus();
}

// A multi-process run's part of the setup: the batch shards, the gradient
// averaging, and rank 0's parameters on every rank.
absl::Status SetUpDataParallel(const ExperimentSpec& spec, const RunOptions& options, RunSetup& run,
                               const TrainingState& state) {
  const ProcessGroups& groups = *options.groups;
  // Every rank continues from the same epoch, or none does: each read the
  // run directory's checkpoint.pt, which on several machines without a
  // shared filesystem may not be the same file (or there at all).
  at::Tensor epochs = at::tensor({int64_t{state.epochs_done}, -int64_t{state.epochs_done}});
  {
    std::vector<at::Tensor> tensors{epochs};
    c10d::AllreduceOptions max;
    max.reduceOp = c10d::ReduceOp::MAX;
    if (absl::Status s = WaitForCollective(groups.world()->allreduce(tensors, max), groups,
                                           "agreeing on the epoch to continue from");
        !s.ok()) {
      return s;
    }
  }
  if (const int64_t latest = epochs[0].item<int64_t>(), earliest = -epochs[1].item<int64_t>();
      latest != earliest) {
    return absl::FailedPreconditionError(
        absl::StrCat("the workers found checkpoints in ", run.dir, " of different epochs (",
                     earliest, " to ", latest,
                     "; 0: none): a resume needs every worker to read the same checkpoint, so "
                     "the run directory must be on a filesystem all machines share"));
  }
  const DistributedSpec& distributed = spec.runtime().distributed();
  if (run.batch_size % groups.world_size() != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "training.batch_size: ", run.batch_size, " does not divide evenly over the ",
        groups.world_size(), " workers (each trains on an equal shard of every batch)"));
  }
  DataParallelOptions data_parallel;  // a spec without `distributed` keeps the defaults
  if (distributed.bucket_bytes() > 0) data_parallel.bucket_bytes = distributed.bucket_bytes();
  run.data_parallel = std::make_unique<DataParallel>(groups, run.model->parameters(),
                                                     run.expert_sharded, data_parallel);
  return run.data_parallel->SyncInitialState(run.model->buffers());
}

// Whether this rank writes a share of an expert-parallel checkpoint set:
// the first rank of each share other than 0 (rank 0's checkpoint.pt holds
// share 0; a data-parallel replica of a share holds what its first rank does).
bool WritesExpertShare(const RunSetup& run, const RunOptions& options) {
  return run.expert_exchange != nullptr && run.layout.shard != 0 &&
         options.groups->rank() < run.layout.degree;
}

// Removes this rank's share files of epochs other than `keep` (all of them
// when `keep` is 0, as no set is of epoch 0): those of a set never
// committed (a run stopped between the shares' writes and rank 0's), and
// those superseded by a later set. A file that cannot be removed stays: it
// is never read, as rank 0's checkpoint.pt names its set's epoch.
void RemoveOtherShares(const RunSetup& run, int32_t keep) {
  const std::string prefix = absl::StrCat("checkpoint.rank", run.layout.shard, ".epoch");
  const std::string kept =
      fs::path(ExpertShardPath(run.checkpoint, run.layout.shard, keep)).filename().string();
  std::error_code error;
  std::vector<fs::path> stale;
  for (fs::directory_iterator it(run.dir, error), end; !error && it != end; it.increment(error)) {
    const std::string name = it->path().filename().string();
    if (absl::StartsWith(name, prefix) && name != kept) stale.push_back(it->path());
  }
  for (const fs::path& path : stale) fs::remove(path, error);
}

// An expert-parallel run's start: a resumed run removes the shares of sets
// never committed; a fresh one replaces the directory's set, whose shares
// could otherwise be mistaken for its own (a share of the epoch it is
// writing, beside the old checkpoint.pt of the same epoch, if it stopped
// before its first commit).
void ClearExpertShares(const RunOptions& options, const RunSetup& run, const TrainingState& state) {
  if (run.expert_exchange == nullptr) return;
  const bool resumed = state.epochs_done > 0;
  if (!resumed && run.writer) {
    std::error_code ignored;
    fs::remove(run.checkpoint, ignored);
  }
  if (WritesExpertShare(run, options)) RemoveOtherShares(run, state.epochs_done);
}

// Writes the checkpoint after an epoch. Under expert parallelism it is a set:
// the shares other than 0 first (files named by epoch, beside the last set),
// then rank 0's checkpoint.pt, whose rename commits the set, and only then
// are the shares of the set before removed; a worker killed anywhere in
// between leaves one whole set.
absl::Status WriteCheckpoint(const RunOptions& options, RunSetup& run, const TrainingState& state) {
  if (run.expert_exchange == nullptr) {
    return run.writer ? SaveCheckpoint(run.checkpoint, *run.model, *run.optimizer, state)
                      : absl::OkStatus();
  }
  const ProcessGroups& groups = *options.groups;
  if (WritesExpertShare(run, options)) {
    const std::string share = ExpertShardPath(run.checkpoint, run.layout.shard, state.epochs_done);
    if (absl::Status s = SaveExpertShard(share, *run.model, *run.optimizer, run.expert_sharded,
                                         run.layout, state.epochs_done);
        !s.ok()) {
      return s;
    }
  }
  if (absl::Status s = WaitForCollective(groups.world()->barrier(), groups,
                                         "the barrier after the expert shares' checkpoints");
      !s.ok()) {
    return s;
  }
  if (run.writer) {
    if (absl::Status s =
            SaveCheckpoint(run.checkpoint, *run.model, *run.optimizer, state, run.layout);
        !s.ok()) {
      return s;
    }
  }
  if (absl::Status s = WaitForCollective(groups.world()->barrier(), groups,
                                         "the barrier after rank 0's checkpoint");
      !s.ok()) {
    return s;
  }
  if (WritesExpertShare(run, options)) RemoveOtherShares(run, state.epochs_done);
  return absl::OkStatus();
}

// Records how a multi-process run was spread, and what "the batch" means to
// each router statistic that spans it.
void RecordDistribution(const ExperimentSpec& spec, const Model& model, const ProcessGroups& groups,
                        RunResult* result) {
  DistributedRecord* record = result->mutable_distributed();
  record->set_world_size(groups.world_size());
  record->set_data_parallel(groups.world_size());
  record->set_expert_parallel(groups.options().expert_parallel);
  record->set_launcher(groups.place().launcher);
  record->clear_batch_scope();
  if (spec.router().load_balance_coef() > 0) {
    record->add_batch_scope(
        "load-balancing loss: the experts' shares f_e over the whole batch (counts exchanged "
        "between workers), the mean gate P_e over each worker's shard, averaged with the "
        "gradients");
  }
  for (const std::shared_ptr<Router>& router : model.Routers()) {
    const std::string scope = router->BatchScope();
    if (!scope.empty() && std::find(record->batch_scope().begin(), record->batch_scope().end(),
                                    scope) == record->batch_scope().end()) {
      record->add_batch_scope(scope);
    }
  }
}

// The setup stage: data, task, model and optimizer, the state a resumed
// run continues from, and the schedule's sizes.
absl::Status SetUp(const ExperimentSpec& spec, const RunOptions& options,
                   const SourceRevision& source, RunSetup& run, TrainingState& state,
                   RunProgress& boundary) {
  RunResult& result = state.result;
  boundary.stage = absl::StrCat("loading dataset '", spec.dataset().name(), "'");
  absl::StatusOr<std::unique_ptr<Dataset>> data = LoadDataset(spec.dataset());
  if (!data.ok()) return data.status();
  run.data = *std::move(data);
  absl::StatusOr<std::unique_ptr<Task>> task = CreateTask(run.data->info());
  if (!task.ok()) return task.status();
  run.task = *std::move(task);

  boundary.stage = absl::StrCat("building model '", spec.model().name(), "'");
  absl::StatusOr<std::shared_ptr<Model>> model = CreateModel(spec, run.data->info());
  if (!model.ok()) return model.status();
  run.model = *std::move(model);
  run.model->to(run.device);

  const std::vector<std::shared_ptr<Router>> routers = run.model->Routers();
  run.leaks_future = run.model->IsCausal() &&
                     std::any_of(routers.begin(), routers.end(),
                                 [](const auto& r) { return !r->IsCausal(/*causal_model=*/true); });
  if (run.leaks_future) {
    result.set_non_causal_router_in_causal_model(true);
    result.add_warnings(
        absl::StrCat("router '", spec.router().name(),
                     "' is not causal: in this causal model a token's experts depend on later "
                     "tokens, which leaks the future into training and teacher-forced "
                     "evaluation; the task reports what it can beside it (language modelling: "
                     "a generation-time perplexity with prefix-only routing)"));
  }

  // Initial weights are a whole model's: loaded before the experts are
  // split. A checkpoint to resume holds this rank's share of them (and the
  // optimizer's state): loaded after the split, into the optimizer built for
  // the parameters this rank keeps.
  std::vector<std::string> load_warnings;
  const bool resuming = options.resume && fs::exists(run.checkpoint);
  if (!resuming && !spec.evaluation().init_checkpoint().empty()) {
    if (absl::Status s = LoadInitialWeights(spec, *run.model, &result, boundary, &load_warnings);
        !s.ok()) {
      return s;
    }
  }
  if (options.groups != nullptr && options.groups->experts()) {
    run.expert_exchange = std::make_shared<C10dExpertExchange>(*options.groups);
    absl::StatusOr<std::vector<at::Tensor>> sharded = run.model->ShardExperts(run.expert_exchange);
    if (!sharded.ok()) return sharded.status();
    run.expert_sharded = *std::move(sharded);
    // Expert groups are consecutive ranks (core/distributed/process_groups.h).
    const int degree = options.groups->options().expert_parallel;
    run.layout = ExpertLayout{.degree = degree, .shard = options.groups->rank() % degree};
  }
  run.optimizer = MakeOptimizer(spec.training(), *run.model);
  if (resuming) {
    if (absl::Status s =
            ResumeFromCheckpoint(spec, options, source, run, state, boundary, &load_warnings);
        !s.ok()) {
      return s;
    }
  }
  for (const std::string& w : load_warnings) result.add_warnings(w);
  // After a resume, which replaced the record with the checkpoint's.
  result.set_task(run.data->info().task);
  boundary.state_loaded = true;
  for (const std::string& w : result.warnings()) {
    if (options.verbose) std::fprintf(stderr, "warning: %s\n", w.c_str());
  }
  // Wall time accumulates over resumed invocations.
  boundary.wall_before = result.wall_time_s();

  const TrainingSpec& training = spec.training();
  run.batch_size = training.batch_size();
  run.steps_per_epoch = run.data->NumBatches(Split::kTrain, run.batch_size);
  if (training.steps_per_epoch() > 0) {
    run.steps_per_epoch = std::min<int64_t>(run.steps_per_epoch, training.steps_per_epoch());
  }
  if (run.steps_per_epoch == 0 && training.epochs() > 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "training.batch_size: ", run.batch_size, " is larger than the training split (",
        run.data->NumExamples(Split::kTrain), " examples)"));
  }
  run.total_steps = run.steps_per_epoch * training.epochs();
  run.probe = ProbeIndices(*run.data, spec.evaluation().probe_examples(), spec.seed());
  if (options.groups != nullptr) return SetUpDataParallel(spec, options, run, state);
  return absl::OkStatus();
}

// What one epoch of training measured.
struct EpochTraining {
  double mean_loss = 0;
  double mean_aux_loss = 0;
  // The learning rate of the epoch's last step.
  double learning_rate = 0;
  double seconds = 0;
};

// The training stage of one epoch: steps_per_epoch optimizer steps on the
// epoch's shuffled batches. A failed step (a non-finite loss: DataLoss) ends
// it with the step's error, naming the epoch, step and learning rate.
absl::StatusOr<EpochTraining> TrainEpoch(const ExperimentSpec& spec, const RunOptions& options,
                                         RunSetup& run, int epoch, TrainingState& state) {
  const TrainingSpec& training = spec.training();
  const ThroughputUnit unit = run.task->Unit();
  run.model->train();
  ProgressReporter progress(stderr, absl::StrFormat("epoch %d/%d", epoch + 1, training.epochs()),
                            run.steps_per_epoch, unit.label);
  double loss_sum = 0, aux_sum = 0, lr = 0;
  // Training steps only: an evaluation routes each batch whole, on one rank.
  std::optional<ScopedBatchCollective> batch_collective;
  if (run.data_parallel) {
    batch_collective.emplace(&run.data_parallel->batch_collective());
    // Dropout and jitter must differ between shards. Rank 0 continues the
    // checkpointed generator; the others draw from (seed, rank, epoch), so
    // that a resumed epoch draws as it did.
    if (const int rank = run.data_parallel->shard(); rank > 0) {
      torch::manual_seed(spec.seed() + 1000003ULL * rank + 7919ULL * epoch);
    }
  }
  for (int64_t i = 0; i < run.steps_per_epoch; ++i, ++state.step) {
    Batch batch = run.data->GetBatch(Split::kTrain, run.batch_size, i, epoch, spec.seed());
    if (run.data_parallel) {
      batch = ShardOf(batch, run.data_parallel->shard(), run.data_parallel->shards());
    }
    batch = ToDevice(batch, run.device);
    lr = LearningRateAt(training, state.step, run.total_steps);
    SetLearningRate(*run.optimizer, lr);
    absl::StatusOr<StepLosses> losses = TrainStep(
        *run.model, *run.optimizer, batch, training.grad_clip_norm(), run.data_parallel.get());
    if (!losses.ok()) {
      progress.Finish();
      return absl::Status(losses.status().code(),
                          absl::StrFormat("%s at epoch %d, step %d (lr %.3g)",
                                          losses.status().message(), epoch + 1, state.step, lr));
    }
    loss_sum += losses->loss;
    aux_sum += losses->aux_loss;
    if (options.verbose) {
      progress.Update(i + 1, (i + 1) * run.batch_size * unit.per_example, loss_sum / (i + 1));
    }
  }
  if (options.verbose) progress.Finish();
  const double steps = static_cast<double>(std::max<int64_t>(1, run.steps_per_epoch));
  return EpochTraining{.mean_loss = loss_sum / steps,
                       .mean_aux_loss = aux_sum / steps,
                       .learning_rate = lr,
                       .seconds = progress.elapsed_seconds()};
}

// A multi-process run shares its evaluations' batches over the workers.
EvaluationShards* EvaluationShardsOf(RunSetup& run) {
  return run.data_parallel ? &run.data_parallel->evaluation_shards() : nullptr;
}

// The evaluation stage after an epoch: validation loss and routing, and
// the probe set's fluctuation against the previous epoch's assignment
// (which `state` then keeps for the next one).
absl::Status RecordEpoch(const ExperimentSpec& spec, RunSetup& run, int epoch,
                         const EpochTraining& trained, TrainingState& state) {
  absl::StatusOr<Evaluation> evaluated =
      Evaluate(*run.model, *run.data, Split::kValid, run.batch_size,
               spec.evaluation().max_eval_batches(), run.device, EvaluationShardsOf(run));
  if (!evaluated.ok()) return evaluated.status();
  const Evaluation& valid = *evaluated;
  std::vector<ProbeAssignment> assignment =
      ProbeRouting(*run.model, *run.data, run.probe, run.batch_size, run.device);
  EpochMetrics* m = state.result.add_epochs();
  m->set_epoch(epoch + 1);
  m->set_step(state.step);
  m->set_train_loss(trained.mean_loss);
  m->set_train_aux_loss(trained.mean_aux_loss);
  m->set_valid_loss(valid.loss);
  m->set_valid_accuracy(valid.accuracy);
  m->set_learning_rate(trained.learning_rate);
  const double examples = static_cast<double>(run.steps_per_epoch * run.batch_size);
  m->set_examples_per_s(trained.seconds > 0 ? examples / trained.seconds : 0);
  m->set_epoch_wall_s(trained.seconds);
  run.task->CompleteEpoch(m);
  const MemoryUsage memory = ReadMemoryUsage();
  m->set_rss_mb(memory.resident_mb);
  m->set_peak_rss_mb(memory.peak_resident_mb);
  for (size_t l = 0; l < valid.layers.size(); ++l) {
    LayerRoutingMetrics* layer = m->add_layers();
    *layer = valid.layers[l];
    if (state.probe.size() == assignment.size()) {
      layer->set_has_fluctuation(true);
      layer->set_fluctuation_top1(Top1Fluctuation(state.probe[l], assignment[l]));
      layer->set_fluctuation_topk(SetFluctuation(state.probe[l], assignment[l]));
      double head_change = 0;
      if (HeadChange(state.probe[l], assignment[l], &head_change)) {
        layer->set_has_head_change(true);
        layer->set_head_change(head_change);
      }
    }
  }
  state.probe = std::move(assignment);
  state.epochs_done = epoch + 1;
  state.rng_state = at::detail::getDefaultCPUGenerator().get_state();
  return absl::OkStatus();
}

// The final evaluation stage. It covers whole splits (max_eval_batches only
// bounds the per-epoch one), so every reported number uses every example.
absl::Status EvaluateAtEnd(const ExperimentSpec& spec, const RunOptions& options, RunSetup& run,
                           RunResult* result, RunProgress& boundary) {
  boundary.stage = "the final evaluation";
  Model& model = *run.model;
  FinalMetrics* final_metrics = result->mutable_final();
  absl::StatusOr<Evaluation> evaluated =
      Evaluate(model, *run.data, Split::kValid, run.batch_size,
               /*max_batches=*/0, run.device, EvaluationShardsOf(run));
  if (!evaluated.ok()) return evaluated.status();
  const Evaluation& valid = *evaluated;
  final_metrics->set_valid_loss(valid.loss);
  for (const LayerRoutingMetrics& layer : valid.layers) *final_metrics->add_layers() = layer;
  if (const std::string warning = FlagIdentityAggregation(result);
      options.verbose && !warning.empty()) {
    std::fprintf(stderr, "warning: %s\n", warning.c_str());
  }
  final_metrics->set_valid_accuracy(valid.accuracy);
  if (spec.evaluation().test_at_end()) {
    absl::StatusOr<Evaluation> test =
        Evaluate(model, *run.data, Split::kTest, run.batch_size,
                 /*max_batches=*/0, run.device, EvaluationShardsOf(run));
    if (!test.ok()) return test.status();
    final_metrics->set_test_loss(test->loss);
    final_metrics->set_test_accuracy(test->accuracy);
  }
  run.task->CompleteFinal(spec.evaluation(), final_metrics);
  const int64_t change_batches =
      (spec.evaluation().probe_examples() + run.batch_size - 1) / run.batch_size;
  for (const CorruptionSpec& corruption : spec.evaluation().corruptions()) {
    absl::StatusOr<CorruptedMetrics> corrupted =
        EvaluateCorrupted(model, *run.data, corruption, run.batch_size, /*max_batches=*/0,
                          change_batches, spec.seed(), run.device);
    if (!corrupted.ok()) return corrupted.status();
    run.task->CompleteCorrupted(&*corrupted);
    *final_metrics->add_corrupted() = *std::move(corrupted);
  }
  boundary.stage = absl::StrCat("the ", run.data->info().task, " task's final evaluation");
  const TaskEvaluationContext context{.model = model,
                                      .data = *run.data,
                                      .evaluation = spec.evaluation(),
                                      .batch_size = run.batch_size,
                                      .device = run.device,
                                      .leaks_future = run.leaks_future};
  if (absl::Status s = run.task->EvaluateFinal(context, final_metrics); !s.ok()) return s;

  double experts_per_token = 0;
  for (const auto& layer : valid.layers) {
    experts_per_token += LayerValue(layer, kExpertsPerTokenMetric).value_or(0);
  }
  if (!valid.layers.empty()) experts_per_token /= valid.layers.size();
  const ModelStats stats = model.Stats();
  final_metrics->set_experts_per_token(experts_per_token);
  final_metrics->set_expert_flops_per_token(experts_per_token * stats.num_moe_layers *
                                            stats.flops_per_expert_per_token);
  final_metrics->set_total_parameters(stats.total_parameters);
  final_metrics->set_active_parameters_per_token(stats.active_parameters_per_token);
  final_metrics->set_flops_per_token(stats.flops_per_token);
  return absl::OkStatus();
}

// The run's stages in order, setup, training with an evaluation after each
// epoch, the final evaluation, the outputs, inside RunExperiment's error
// boundary: what it does when an exception escapes is decided by `boundary`.
absl::StatusOr<RunResult> RunStages(const ExperimentSpec& spec, const RunOptions& options,
                                    TrainingState& state, RunProgress& boundary) {
  boundary.wall_start = std::chrono::steady_clock::now();
  // runtime.threads: 0 means every core, which the workers on one machine
  // share.
  const int threads =
      options.groups != nullptr && spec.runtime().threads() == 0
          ? std::max(1, ThreadsFor(spec.runtime()) / options.groups->place().local_world_size)
          : ThreadsFor(spec.runtime());
  SetIntraOpThreads(threads);
  // Every forward and backward pass of the run, evaluation included.
  const PrecisionScope precision(spec.runtime().precision());
  RunSetup run;
  run.device = c10::Device(spec.runtime().device());
  if (run.device.is_cuda() && !torch::cuda::is_available()) {
    return absl::FailedPreconditionError(
        "runtime.device: CUDA was requested but this LibTorch has no CUDA "
        "support or no GPU is visible; use device: \"cpu\"");
  }
  torch::manual_seed(spec.seed());

  // The record's header before the run directory is claimed, so that any
  // failure recorded there names this spec.
  RunResult& result = state.result;
  const SourceRevision source = options.source.value_or(CurrentSourceRevision());
  RecordProvenance(spec, source, threads, &result);
  run.writer = options.groups == nullptr || options.groups->rank() == 0;
  // The run directory first: refusing another spec's run costs nothing.
  if (run.writer) {
    absl::StatusOr<std::string> dir = ClaimRunDirectory(spec, options, boundary);
    if (!dir.ok()) return dir.status();
    run.dir = *dir;
  } else {
    run.dir = RunDirectory(spec, options);
  }
  if (options.groups != nullptr) {
    // The other ranks read the directory (a checkpoint to resume) only
    // after rank 0 has claimed it.
    boundary.stage = "waiting for rank 0 to claim the run directory";
    if (absl::Status s = WaitForCollective(options.groups->world()->barrier(), *options.groups,
                                           "the barrier after claiming the run directory");
        !s.ok()) {
      return s;
    }
  }
  run.checkpoint = run.dir + "/checkpoint.pt";
  if (absl::Status s = SetUp(spec, options, source, run, state, boundary); !s.ok()) return s;
  ClearExpertShares(options, run, state);
  if (options.groups != nullptr) RecordDistribution(spec, *run.model, *options.groups, &result);

  const int epochs = spec.training().epochs();
  int epochs_this_run = 0;
  for (int epoch = state.epochs_done; epoch < epochs; ++epoch) {
    boundary.stage = absl::StrFormat("training epoch %d", epoch + 1);
    absl::StatusOr<EpochTraining> trained = TrainEpoch(spec, options, run, epoch, state);
    if (!trained.ok() && trained.status().code() != absl::StatusCode::kDataLoss) {
      return trained.status();
    }
    if (!trained.ok()) {  // a non-finite loss (TrainStep's DataLoss)
      const std::string kept =
          state.epochs_done > 0
              ? absl::StrFormat("the last good checkpoint (after epoch %d) is kept in %s",
                                state.epochs_done, run.checkpoint)
              : std::string("no checkpoint was written (the run stopped in its first epoch)");
      const std::string reason =
          absl::StrFormat("training stopped: %s; %s", trained.status().message(), kept);
      result.set_status("STOPPED_NONFINITE_LOSS");
      result.set_status_reason(reason);
      result.set_wall_time_s(boundary.WallSeconds());
      result.set_finished_unix_s(UnixSecondsNow());
      if (run.writer) (void)WriteOutputs(run.dir, result);
      return absl::DataLossError(reason);
    }
    boundary.stage = absl::StrFormat("evaluating epoch %d", epoch + 1);
    if (absl::Status s = RecordEpoch(spec, run, epoch, *trained, state); !s.ok()) return s;
    result.set_status("RUNNING");
    result.set_wall_time_s(boundary.WallSeconds());
    result.set_finished_unix_s(UnixSecondsNow());
    if (run.writer) {
      boundary.stage = absl::StrFormat("writing the outputs of epoch %d", epoch + 1);
      if (absl::Status s = WriteOutputs(run.dir, result); !s.ok()) return s;
    }
    boundary.stage = absl::StrFormat("writing the checkpoint after epoch %d", epoch + 1);
    if (absl::Status s = WriteCheckpoint(options, run, state); !s.ok()) {
      return absl::Status(s.code(),
                          absl::StrFormat("epoch %d finished but %s", epoch + 1, s.message()));
    }
    if (options.verbose) {
      std::fprintf(stderr, "%s", FormatEpochLine(*result.epochs().rbegin(), *run.task).c_str());
    }
    if (options.stop_after_epochs > 0 && ++epochs_this_run >= options.stop_after_epochs &&
        epoch + 1 < epochs) {
      return result;
    }
  }

  if (absl::Status s = EvaluateAtEnd(spec, options, run, &result, boundary); !s.ok()) return s;
  result.set_status("COMPLETED");
  result.set_wall_time_s(boundary.WallSeconds());
  result.set_finished_unix_s(UnixSecondsNow());
  boundary.stage = "writing the final outputs";
  if (run.writer) {
    if (absl::Status s = WriteOutputs(run.dir, result); !s.ok()) return s;
  }
  if (options.verbose) std::printf("%s", FormatRunSummary(result, *run.task).c_str());
  return result;
}

}  // namespace

absl::Status StatusFromException(const std::exception& e, absl::string_view doing) {
  const std::string message = ExceptionMessage(e);
  const bool out_of_memory = dynamic_cast<const std::bad_alloc*>(&e) != nullptr ||
                             absl::StrContains(message, "not enough memory") ||
                             absl::StrContains(message, "can't allocate memory") ||
                             absl::StrContains(message, "out of memory");
  if (out_of_memory) {
    return absl::ResourceExhaustedError(absl::StrCat("out of memory while ", doing, ": ", message));
  }
  return absl::InternalError(absl::StrCat(doing, ": ", message));
}

absl::StatusOr<RunResult> RunExperiment(const ExperimentSpec& spec, const RunOptions& options) {
  TrainingState state;
  RunProgress progress;
  absl::StatusOr<RunResult> result;
  // The one error boundary: LibTorch reports errors (and allocation
  // failures) as exceptions, and none may escape a StatusOr function.
  try {
    result = RunStages(spec, options, state, progress);
  } catch (const std::exception& e) {
    result = StatusFromException(e, progress.stage);
  } catch (...) {
    result = absl::InternalError(absl::StrCat(progress.stage, ": unknown exception"));
  }
  if (!result.ok()) RecordFailure(result.status(), options, progress, state);
  return result;
}

int CallMainWithErrorBoundary(const std::function<int()>& main) {
  try {
    return main();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", ExceptionMessage(e).c_str());
  } catch (...) {
    std::fprintf(stderr, "error: unknown exception\n");
  }
  return 1;
}

}  // namespace moelab
