#include "core/trainer.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/cuda.h>
#include <torch/utils.h>
#include <torch/version.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
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
#include "core/checkpoint.h"
#include "core/corruption.h"
#include "core/cpu_info.h"
#include "core/dataset.h"
#include "core/lr_schedule.h"
#include "core/memory_usage.h"
#include "core/model.h"
#include "core/paths.h"
#include "core/precision.h"
#include "core/progress.h"
#include "core/provenance.h"
#include "core/routing_metrics.h"
#include "core/spec.h"
#include "core/statistics.h"
#include "core/threading_environment.h"
#include "core/train_step.h"
#include "google/protobuf/stubs/common.h"
#include "google/protobuf/util/json_util.h"

namespace moelab {
namespace {

namespace fs = std::filesystem;

constexpr char kMoelabVersion[] = "0.1.0";

Batch ToDevice(const Batch& batch, const at::Device& device) {
  if (device.is_cpu()) return batch;
  return Batch{batch.inputs.to(device), batch.targets.to(device)};
}

void SetLearningRate(torch::optim::Optimizer& optimizer, double lr) {
  for (auto& group : optimizer.param_groups()) group.options().set_lr(lr);
}

struct Evaluation {
  double loss = 0;
  double accuracy = 0;
  int64_t targets = 0;
  std::vector<LayerRoutingMetrics> layers;
};

// Mean loss and accuracy over (up to max_batches of) an evaluation split,
// with every MoE layer's load and entropy accumulated over the same tokens.
Evaluation Evaluate(Model& model, const Dataset& data, Split split, int64_t batch_size,
                    int max_batches, const at::Device& device) {
  torch::NoGradGuard no_grad;
  model.eval();
  int64_t batches = data.NumBatches(split, batch_size);
  if (max_batches > 0) batches = std::min<int64_t>(batches, max_batches);
  std::vector<LayerRoutingAccumulator> layers;
  double nll = 0, correct = 0;
  int64_t count = 0;
  for (int64_t i = 0; i < batches; ++i) {
    Batch batch = ToDevice(data.GetBatch(split, batch_size, i, 0, 0), device);
    ModelOutput out = model.Forward(batch, ForwardOptions{.keep_routing = true});
    const int64_t n = batch.targets.numel();
    nll += out.loss.item<double>() * n;
    correct += out.logits.argmax(-1).eq(batch.targets).sum().item<double>();
    count += n;
    if (layers.empty()) {
      for (const RoutingDecision& d : out.routing) {
        layers.emplace_back(d.selected.size(-1));
      }
    }
    for (size_t l = 0; l < out.routing.size(); ++l) layers[l].Add(out.routing[l]);
  }
  Evaluation e;
  e.targets = count;
  if (count > 0) {
    e.loss = nll / count;
    e.accuracy = correct / count;
  }
  for (size_t l = 0; l < layers.size(); ++l) e.layers.push_back(layers[l].Finish(l));
  return e;
}

// The task metric on corrupted validation batches, and the share of tokens
// (in the first `change_batches` batches) whose expert set differs from the
// clean input's, averaged over MoE layers; -1 when the corruption moves
// tokens (deletion), so positions cannot be compared.
absl::StatusOr<CorruptedMetrics> EvaluateCorrupted(Model& model, const Dataset& data,
                                                   const CorruptionSpec& corruption,
                                                   int64_t batch_size, int max_batches,
                                                   int64_t change_batches, uint64_t seed,
                                                   const at::Device& device) {
  torch::NoGradGuard no_grad;
  model.eval();
  int64_t batches = data.NumBatches(Split::kValid, batch_size);
  if (max_batches > 0) batches = std::min<int64_t>(batches, max_batches);
  const bool aligned = PreservesPositions(corruption.kind());
  double nll = 0, correct = 0, changed = 0;
  int64_t count = 0, compared = 0;
  for (int64_t i = 0; i < batches; ++i) {
    absl::StatusOr<Batch> corrupted =
        CorruptedBatch(data, Split::kValid, batch_size, i, corruption, seed);
    if (!corrupted.ok()) return corrupted.status();
    Batch batch = ToDevice(*corrupted, device);
    const bool compare = aligned && i < change_batches;
    ModelOutput out = model.Forward(batch, ForwardOptions{.keep_routing = compare});
    const int64_t n = batch.targets.numel();
    nll += out.loss.item<double>() * n;
    correct += out.logits.argmax(-1).eq(batch.targets).sum().item<double>();
    count += n;
    if (!compare) continue;
    Batch clean = ToDevice(data.GetBatch(Split::kValid, batch_size, i, 0, 0), device);
    ModelOutput reference = model.Forward(clean, ForwardOptions{.keep_routing = true});
    for (size_t l = 0; l < out.routing.size(); ++l) {
      ProbeAssignment a = AssignmentOf(reference.routing[l]);
      ProbeAssignment b = AssignmentOf(out.routing[l]);
      changed += SetFluctuation(a, b) * a.top1.numel();
      compared += a.top1.numel();
    }
  }
  CorruptedMetrics m;
  *m.mutable_corruption() = corruption;
  if (count > 0) {
    m.set_loss(nll / count);
    m.set_accuracy(correct / count);
    if (data.info().task == Task::kLanguageModeling) m.set_perplexity(std::exp(nll / count));
  }
  m.set_expert_change(compared > 0 ? changed / compared : -1);
  return m;
}

// The fixed probe set: `count` validation examples chosen by the seed.
std::vector<int64_t> ProbeIndices(const Dataset& data, int count, uint64_t seed) {
  const int64_t available = data.NumExamples(Split::kValid);
  at::Generator gen = at::detail::createCPUGenerator(seed ^ 0x9e3779b97f4a7c15ull);
  at::Tensor perm = at::randperm(available, gen, at::kLong);
  const int64_t n = std::min<int64_t>(count, available);
  at::Tensor chosen = std::get<0>(perm.slice(0, 0, n).sort());
  return std::vector<int64_t>(chosen.data_ptr<int64_t>(), chosen.data_ptr<int64_t>() + n);
}

// Each MoE layer's assignment of the probe tokens, in probe order.
std::vector<ProbeAssignment> ProbeRouting(Model& model, const Dataset& data,
                                          const std::vector<int64_t>& indices, int64_t batch_size,
                                          const at::Device& device) {
  torch::NoGradGuard no_grad;
  model.eval();
  std::vector<std::vector<at::Tensor>> top1, selected, head;
  for (size_t start = 0; start < indices.size(); start += batch_size) {
    std::vector<int64_t> chunk(indices.begin() + start,
                               indices.begin() + std::min(indices.size(), start + batch_size));
    Batch batch = ToDevice(data.GetExamples(Split::kValid, chunk), device);
    ModelOutput out = model.Forward(batch, ForwardOptions{.keep_routing = true});
    top1.resize(out.routing.size());
    selected.resize(out.routing.size());
    head.resize(out.routing.size());
    for (size_t l = 0; l < out.routing.size(); ++l) {
      ProbeAssignment a = AssignmentOf(out.routing[l]);
      top1[l].push_back(a.top1);
      selected[l].push_back(a.selected);
      if (a.head.defined()) head[l].push_back(a.head);
    }
  }
  std::vector<ProbeAssignment> result(top1.size());
  for (size_t l = 0; l < top1.size(); ++l) {
    result[l].top1 = at::cat(top1[l]);
    result[l].selected = at::cat(selected[l]);
    if (!head[l].empty()) result[l].head = at::cat(head[l]);
  }
  return result;
}

// Perplexity of a unigram model estimated on the training split (add-one
// smoothing over the vocabulary), on the validation split: the baseline a
// language model must clearly beat.
double UnigramPerplexity(const Dataset& data, int64_t batch_size) {
  const int64_t vocab = data.info().vocab_size;
  at::Tensor counts = at::zeros({vocab}, at::kDouble);
  const int64_t train_batches = data.NumBatches(Split::kTrain, batch_size);
  for (int64_t i = 0; i < train_batches; ++i) {
    Batch b = data.GetBatch(Split::kTrain, batch_size, i, 0, 0);
    counts += at::bincount(b.targets.reshape({-1}), {}, vocab).to(at::kDouble);
  }
  at::Tensor log_q = at::log((counts + 1) / (counts.sum() + vocab));
  int64_t batches = data.NumBatches(Split::kValid, batch_size);
  double nll = 0;
  int64_t n = 0;
  for (int64_t i = 0; i < batches; ++i) {
    Batch b = data.GetBatch(Split::kValid, batch_size, i, 0, 0);
    nll -= log_q.index_select(0, b.targets.reshape({-1})).sum().item<double>();
    n += b.targets.numel();
  }
  return n > 0 ? std::exp(nll / n) : 0;
}

// Perplexity on the first `sequences` validation sequences, teacher-forced
// and, for a router that leaks the future, also generation-time: every
// position routed with only its prefix visible (each prefix run on its own).
// A causal router routes a position the same way with or without the
// future, so its generation-time perplexity is the teacher-forced one on
// the same sequences; every row of a table then reports it on the same
// subset. The leak is the per-sequence difference of mean NLLs
// (generation-time minus teacher-forced), with its 95% interval over the
// sequences.
struct SubsetPerplexities {
  double generation = 0;
  double teacher_forced = 0;
  MeanInterval leak;
};
// [N, T] per-token NLL (float64) of logits [N, T, V] (or [N, V]) at targets
// [N, T] (or [N]); the log-softmax runs in the logits' precision so that no
// float64 copy of the vocabulary-wide tensor is made.
at::Tensor TokenNll(const at::Tensor& logits, const at::Tensor& targets) {
  return -at::log_softmax(logits, -1).gather(-1, targets.unsqueeze(-1)).squeeze(-1).to(at::kDouble);
}

SubsetPerplexities PerplexitiesOnValidSubset(Model& model, const Dataset& data, int sequences,
                                             int64_t batch_size, bool prefix_only_routing,
                                             const at::Device& device) {
  torch::NoGradGuard no_grad;
  model.eval();
  const int64_t n = std::min<int64_t>(sequences, data.NumExamples(Split::kValid));
  // Per sequence: mean NLL per token, teacher-forced and generation-time.
  std::vector<double> teacher(n), generation(n);
  double teacher_sum = 0, generation_sum = 0;
  int64_t tokens = 0;
  // batch_size sequences at a time, so memory stays that of one evaluation
  // batch whatever `sequences` asks for.
  for (int64_t start = 0; start < n; start += batch_size) {
    std::vector<int64_t> indices;
    for (int64_t i = start; i < std::min(n, start + batch_size); ++i) indices.push_back(i);
    const Batch batch = ToDevice(data.GetExamples(Split::kValid, indices), device);
    const int64_t length = batch.inputs.size(1);
    const at::Tensor teacher_nll =  // [b, T]
        TokenNll(model.Forward(batch, ForwardOptions{}).logits, batch.targets);
    at::Tensor generation_nll = teacher_nll;
    if (prefix_only_routing) {
      generation_nll = at::empty_like(teacher_nll);
      for (int64_t t = 0; t < length; ++t) {
        const Batch prefix{batch.inputs.slice(1, 0, t + 1), batch.targets.slice(1, 0, t + 1)};
        generation_nll.select(1, t).copy_(
            TokenNll(model.Forward(prefix, ForwardOptions{}).logits.select(1, t),
                     batch.targets.select(1, t)));
      }
    }
    const at::Tensor teacher_mean = teacher_nll.mean(1).contiguous().cpu();
    const at::Tensor generation_mean = generation_nll.mean(1).contiguous().cpu();
    for (size_t i = 0; i < indices.size(); ++i) {
      teacher[start + i] = teacher_mean.data_ptr<double>()[i];
      generation[start + i] = generation_mean.data_ptr<double>()[i];
    }
    teacher_sum += teacher_nll.sum().item<double>();
    generation_sum += generation_nll.sum().item<double>();
    tokens += teacher_nll.numel();
  }
  SubsetPerplexities out;
  if (tokens == 0) return out;
  out.teacher_forced = std::exp(teacher_sum / tokens);
  out.generation = std::exp(generation_sum / tokens);
  std::vector<double> gap(n);
  for (int64_t i = 0; i < n; ++i) gap[i] = generation[i] - teacher[i];
  out.leak = MeanWithInterval95(gap);
  return out;
}

std::string JsonOf(const RunResult& result) {
  std::string json;
  google::protobuf::util::JsonPrintOptions options;
  options.add_whitespace = true;
  options.always_print_primitive_fields = true;
  options.preserve_proto_field_names = true;
  google::protobuf::util::MessageToJsonString(result, &json, options);
  return json;
}

std::string MetricsCsv(const RunResult& result) {
  std::string csv =
      "epoch,step,train_loss,train_aux_loss,valid_loss,valid_perplexity,"
      "valid_accuracy,learning_rate,tokens_per_s,examples_per_s,epoch_wall_s,"
      "peak_rss_mb,rss_mb";
  const int layers = result.epochs_size() > 0 ? result.epochs(0).layers_size() : 0;
  for (int l = 0; l < layers; ++l) {
    absl::StrAppendFormat(
        &csv,
        ",l%d_fluct_top1,l%d_fluct_topk,l%d_gate_entropy,l%d_agg_entropy,"
        "l%d_load_cv,l%d_max_over_mean,l%d_dead,l%d_dropped,l%d_experts_per_token,"
        "l%d_self_weight,l%d_effective_neighbours,l%d_head_change",
        l, l, l, l, l, l, l, l, l, l, l, l);
  }
  csv += "\n";
  for (const EpochMetrics& e : result.epochs()) {
    absl::StrAppendFormat(&csv, "%d,%d,%.6g,%.6g,%.6g,%.6g,%.6g,%.6g,%.6g,%.6g,%.4g,%.1f,%.1f",
                          e.epoch(), e.step(), e.train_loss(), e.train_aux_loss(), e.valid_loss(),
                          e.valid_perplexity(), e.valid_accuracy(), e.learning_rate(),
                          e.tokens_per_s(), e.examples_per_s(), e.epoch_wall_s(), e.peak_rss_mb(),
                          e.rss_mb());
    for (const LayerRoutingMetrics& m : e.layers()) {
      auto optional = [](bool present, double value) {
        return present ? absl::StrFormat("%.6g", value) : std::string();
      };
      absl::StrAppendFormat(&csv, ",%s,%s,%.6g,%.6g,%.6g,%.6g,%d,%.6g,%.6g,%s,%s,%s",
                            optional(m.has_fluctuation(), m.fluctuation_top1()),
                            optional(m.has_fluctuation(), m.fluctuation_topk()), m.gate_entropy(),
                            m.aggregated_entropy(), m.load_cv(), m.load_max_over_mean(),
                            m.dead_experts(), m.dropped_fraction(), m.experts_per_token(),
                            optional(m.has_aggregation(), m.aggregation_self_weight()),
                            optional(m.has_aggregation(), m.aggregation_effective_neighbours()),
                            optional(m.has_head_change(), m.head_change()));
    }
    csv += "\n";
  }
  return csv;
}

absl::Status WriteOutputs(const std::string& dir, const RunResult& result) {
  if (absl::Status s = WriteFileAtomically(dir + "/result.json", JsonOf(result)); !s.ok()) {
    return s;
  }
  return WriteFileAtomically(dir + "/metrics.csv", MetricsCsv(result));
}

double Mean(const std::vector<double>& v) {
  if (v.empty()) return 0;
  double s = 0;
  for (double x : v) s += x;
  return s / v.size();
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
  double wall_before = 0;
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
  RunResult existing;
  google::protobuf::util::JsonParseOptions parse;
  parse.ignore_unknown_fields = true;
  const bool readable =
      json.ok() && google::protobuf::util::JsonStringToMessage(*json, &existing, parse).ok();
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
  result.set_wall_time_s(
      progress.wall_before +
      std::chrono::duration<double>(std::chrono::steady_clock::now() - progress.wall_start)
          .count());
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
    if (layer.has_aggregation() &&
        layer.aggregation_self_weight() > kIdentityAggregationSelfWeight) {
      result->add_identity_aggregation_layers(layer.layer());
      described.push_back(
          absl::StrFormat("MoE layer %d: mean self-weight %.5f, %.3f "
                          "effective neighbours",
                          layer.layer(), layer.aggregation_self_weight(),
                          layer.aggregation_effective_neighbours()));
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

// The run's stages, in RunExperiment's error boundary: what it does when
// an exception escapes is decided by `boundary`.
absl::StatusOr<RunResult> RunStages(const ExperimentSpec& spec, const RunOptions& options,
                                    TrainingState& state, RunProgress& boundary) {
  const auto wall_start = std::chrono::steady_clock::now();
  const int threads = ThreadsFor(spec.runtime());
  SetIntraOpThreads(threads);
  // Every forward and backward pass of the run, evaluation included.
  const PrecisionScope precision(spec.runtime().precision());
  const at::Device device(spec.runtime().device());
  if (device.is_cuda() && !torch::cuda::is_available()) {
    return absl::FailedPreconditionError(
        "runtime.device: CUDA was requested but this LibTorch has no CUDA "
        "support or no GPU is visible; use device: \"cpu\"");
  }
  torch::manual_seed(spec.seed());

  // The run directory first: refusing another spec's run costs nothing, and
  // from here on every failure is recorded in result.json.
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
  const std::string checkpoint = dir + "/checkpoint.pt";
  // A run killed while writing left "<file>.tmp.<pid>" behind; it is never
  // read, so it goes now.
  if (const int removed = RemoveStaleTemporaries(dir); removed > 0 && options.verbose) {
    std::fprintf(stderr, "removed %d temporary file(s) left in %s by a killed run\n", removed,
                 dir.c_str());
  }
  std::FILE* log = stderr;

  RunResult& result = state.result;
  *result.mutable_spec() = spec;
  result.set_spec_hash(SpecHash(spec));
  result.mutable_versions()->set_moelab(kMoelabVersion);
  result.mutable_versions()->set_libtorch(TORCH_VERSION);
  result.mutable_versions()->set_protobuf(
      google::protobuf::internal::VersionString(GOOGLE_PROTOBUF_VERSION));
  result.mutable_versions()->set_threads(threads);
  result.mutable_versions()->set_device(spec.runtime().device());
  result.mutable_versions()->set_cpu_model(CpuModelName());
  // A resumed run's record is replaced by its checkpoint's below, which
  // keeps the first invocation's start (and machine).
  result.set_started_unix_s(UnixSecondsNow());
  const SourceRevision source = options.source.value_or(CurrentSourceRevision());
  *result.mutable_source() = source;
  boundary.dir = dir;
  boundary.wall_start = wall_start;

  boundary.stage = absl::StrCat("loading dataset '", spec.dataset().name(), "'");
  absl::StatusOr<std::unique_ptr<Dataset>> loaded = LoadDataset(spec.dataset());
  if (!loaded.ok()) return loaded.status();
  const Dataset& data = **loaded;
  const DatasetInfo& info = data.info();
  const bool language = info.task == Task::kLanguageModeling;

  boundary.stage = absl::StrCat("building model '", spec.model().name(), "'");
  absl::StatusOr<std::shared_ptr<Model>> created = CreateModel(spec, info);
  if (!created.ok()) return created.status();
  Model& model = **created;
  model.to(device);
  std::unique_ptr<torch::optim::Optimizer> optimizer = MakeOptimizer(spec.training(), model);

  std::vector<std::shared_ptr<Router>> routers = model.Routers();
  const bool leaks_future =
      model.IsCausal() && std::any_of(routers.begin(), routers.end(), [](const auto& r) {
        return !r->IsCausal(/*causal_model=*/true);
      });
  if (leaks_future) {
    result.set_non_causal_router_in_causal_model(true);
    result.add_warnings(
        absl::StrCat("router '", spec.router().name(),
                     "' is not causal: in this causal language model a token's experts depend "
                     "on later tokens, which leaks the future into training and teacher-forced "
                     "perplexity; a generation-time perplexity (prefix-only routing) is reported "
                     "beside it"));
  }

  std::vector<std::string> load_warnings;
  if (options.resume && fs::exists(checkpoint)) {
    boundary.stage = absl::StrCat("loading checkpoint '", checkpoint, "'");
    if (absl::Status s = LoadCheckpoint(checkpoint, model, *optimizer, &state, &load_warnings);
        !s.ok()) {
      return s;
    }
    if (state.result.spec_hash() != SpecHash(spec)) {
      // Not this run's directory after all: leave its result.json alone.
      boundary.dir.clear();
      return absl::FailedPreconditionError(
          absl::StrCat("cannot resume: ", checkpoint, " was written by a different spec (hash ",
                       state.result.spec_hash(), ", this spec ", SpecHash(spec),
                       "); remove it or choose another output directory"));
    }
    // The checkpoint's record holds the revision(s) its epochs ran at,
    // joined by ',' once a resume changed it.
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
      std::fprintf(log, "resuming %s after epoch %d (step %lld)\n", spec.name().c_str(),
                   state.epochs_done, static_cast<long long>(state.step));
    }
  } else if (!spec.evaluation().init_checkpoint().empty()) {
    const std::string init = ResolveUserPath(spec.evaluation().init_checkpoint());
    boundary.stage = absl::StrCat("loading evaluation.init_checkpoint '", init, "'");
    std::vector<std::string> not_loaded;
    if (absl::Status s = LoadWeights(init, model, &not_loaded, &load_warnings); !s.ok()) {
      return absl::Status(s.code(), absl::StrCat("evaluation.init_checkpoint: ", s.message()));
    }
    if (!not_loaded.empty()) {
      result.add_warnings(absl::StrCat(
          "router parameters not in evaluation.init_checkpoint keep their initial values: ",
          absl::StrJoin(not_loaded, ", ")));
    }
  }
  for (const std::string& w : load_warnings) result.add_warnings(w);
  boundary.state_loaded = true;
  for (const std::string& w : result.warnings()) {
    if (options.verbose) std::fprintf(log, "warning: %s\n", w.c_str());
  }

  // Wall time accumulates over resumed invocations.
  const double wall_before = result.wall_time_s();
  boundary.wall_before = wall_before;
  auto wall_now = [&] {
    return wall_before +
           std::chrono::duration<double>(std::chrono::steady_clock::now() - wall_start).count();
  };
  const TrainingSpec& training = spec.training();
  const int64_t batch_size = training.batch_size();
  int64_t steps_per_epoch = data.NumBatches(Split::kTrain, batch_size);
  if (training.steps_per_epoch() > 0) {
    steps_per_epoch = std::min<int64_t>(steps_per_epoch, training.steps_per_epoch());
  }
  if (steps_per_epoch == 0 && training.epochs() > 0) {
    return absl::InvalidArgumentError(absl::StrCat("training.batch_size: ", batch_size,
                                                   " is larger than the training split (",
                                                   data.NumExamples(Split::kTrain), " examples)"));
  }
  const int64_t total_steps = steps_per_epoch * training.epochs();
  const std::vector<int64_t> probe =
      ProbeIndices(data, spec.evaluation().probe_examples(), spec.seed());
  const int64_t units_per_example = language ? info.sequence_length : 1;

  int epochs_this_run = 0;
  for (int epoch = state.epochs_done; epoch < training.epochs(); ++epoch) {
    boundary.stage = absl::StrFormat("training epoch %d", epoch + 1);
    model.train();
    ProgressReporter progress(log, absl::StrFormat("epoch %d/%d", epoch + 1, training.epochs()),
                              steps_per_epoch, language ? "tok" : "img");
    double loss_sum = 0, aux_sum = 0, lr = 0;
    for (int64_t i = 0; i < steps_per_epoch; ++i, ++state.step) {
      Batch batch =
          ToDevice(data.GetBatch(Split::kTrain, batch_size, i, epoch, spec.seed()), device);
      lr = LearningRateAt(training, state.step, total_steps);
      SetLearningRate(*optimizer, lr);
      absl::StatusOr<StepLosses> losses =
          TrainStep(model, *optimizer, batch, training.grad_clip_norm());
      if (!losses.ok()) {
        progress.Finish();
        const std::string kept =
            state.epochs_done > 0
                ? absl::StrFormat("the last good checkpoint (after epoch %d) is kept in %s",
                                  state.epochs_done, checkpoint)
                : std::string(
                      "no checkpoint was written (the run stopped in its first "
                      "epoch)");
        const std::string reason =
            absl::StrFormat("training stopped: %s at epoch %d, step %d (lr %.3g); %s",
                            losses.status().message(), epoch + 1, state.step, lr, kept);
        result.set_status("STOPPED_NONFINITE_LOSS");
        result.set_status_reason(reason);
        result.set_wall_time_s(wall_now());
        result.set_finished_unix_s(UnixSecondsNow());
        (void)WriteOutputs(dir, result);
        return absl::DataLossError(reason);
      }
      loss_sum += losses->loss;
      aux_sum += losses->aux_loss;
      if (options.verbose) {
        progress.Update(i + 1, (i + 1) * batch_size * units_per_example, loss_sum / (i + 1));
      }
    }
    if (options.verbose) progress.Finish();
    const double train_seconds = progress.elapsed_seconds();

    boundary.stage = absl::StrFormat("evaluating epoch %d", epoch + 1);
    Evaluation valid = Evaluate(model, data, Split::kValid, batch_size,
                                spec.evaluation().max_eval_batches(), device);
    std::vector<ProbeAssignment> assignment = ProbeRouting(model, data, probe, batch_size, device);
    EpochMetrics* m = result.add_epochs();
    m->set_epoch(epoch + 1);
    m->set_step(state.step);
    m->set_train_loss(loss_sum / std::max<int64_t>(1, steps_per_epoch));
    m->set_train_aux_loss(aux_sum / std::max<int64_t>(1, steps_per_epoch));
    m->set_valid_loss(valid.loss);
    if (language) m->set_valid_perplexity(std::exp(valid.loss));
    m->set_valid_accuracy(valid.accuracy);
    m->set_learning_rate(lr);
    const double examples = static_cast<double>(steps_per_epoch * batch_size);
    m->set_examples_per_s(train_seconds > 0 ? examples / train_seconds : 0);
    if (language) m->set_tokens_per_s(m->examples_per_s() * info.sequence_length);
    m->set_epoch_wall_s(train_seconds);
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
    result.set_status("RUNNING");
    result.set_wall_time_s(wall_now());
    result.set_finished_unix_s(UnixSecondsNow());
    boundary.stage = absl::StrFormat("writing the outputs of epoch %d", epoch + 1);
    if (absl::Status s = WriteOutputs(dir, result); !s.ok()) return s;
    boundary.stage = absl::StrFormat("writing the checkpoint after epoch %d", epoch + 1);
    if (absl::Status s = SaveCheckpoint(checkpoint, model, *optimizer, state); !s.ok()) {
      return absl::Status(s.code(),
                          absl::StrFormat("epoch %d finished but %s", epoch + 1, s.message()));
    }
    if (options.verbose) {
      std::vector<double> fluct;
      for (const auto& layer : m->layers()) {
        if (layer.has_fluctuation()) fluct.push_back(layer.fluctuation_top1());
      }
      std::fprintf(log, "epoch %d: train loss %.4f  valid %s %.4f  fluctuation %s  %.0f %s/s\n",
                   epoch + 1, m->train_loss(), language ? "ppl" : "acc",
                   language ? m->valid_perplexity() : m->valid_accuracy(),
                   fluct.empty() ? "-" : absl::StrFormat("%.1f%%", 100 * Mean(fluct)).c_str(),
                   language ? m->tokens_per_s() : m->examples_per_s(),
                   language ? "tokens" : "images");
    }
    if (options.stop_after_epochs > 0 && ++epochs_this_run >= options.stop_after_epochs &&
        epoch + 1 < training.epochs()) {
      return result;
    }
  }

  // The final evaluation covers whole splits (max_eval_batches only bounds
  // the per-epoch one), so every reported number uses every sequence.
  boundary.stage = "the final evaluation";
  FinalMetrics* final_metrics = result.mutable_final();
  Evaluation valid = Evaluate(model, data, Split::kValid, batch_size,
                              /*max_batches=*/0, device);
  final_metrics->set_valid_loss(valid.loss);
  for (const LayerRoutingMetrics& layer : valid.layers) *final_metrics->add_layers() = layer;
  if (const std::string warning = FlagIdentityAggregation(&result);
      options.verbose && !warning.empty()) {
    std::fprintf(log, "warning: %s\n", warning.c_str());
  }
  final_metrics->set_valid_accuracy(valid.accuracy);
  if (language) final_metrics->set_valid_perplexity(std::exp(valid.loss));
  if (spec.evaluation().test_at_end()) {
    Evaluation test = Evaluate(model, data, Split::kTest, batch_size,
                               /*max_batches=*/0, device);
    final_metrics->set_test_loss(test.loss);
    final_metrics->set_test_accuracy(test.accuracy);
    if (language) final_metrics->set_test_perplexity(std::exp(test.loss));
  }
  const int64_t change_batches = (spec.evaluation().probe_examples() + batch_size - 1) / batch_size;
  for (const CorruptionSpec& corruption : spec.evaluation().corruptions()) {
    absl::StatusOr<CorruptedMetrics> corrupted =
        EvaluateCorrupted(model, data, corruption, batch_size, /*max_batches=*/0, change_batches,
                          spec.seed(), device);
    if (!corrupted.ok()) return corrupted.status();
    *final_metrics->add_corrupted() = *std::move(corrupted);
  }
  if (language) {
    final_metrics->set_unigram_perplexity(UnigramPerplexity(data, batch_size));
  }
  if (language && model.IsCausal() && spec.evaluation().generation_eval_sequences() > 0) {
    const SubsetPerplexities subset =
        PerplexitiesOnValidSubset(model, data, spec.evaluation().generation_eval_sequences(),
                                  batch_size, leaks_future, device);
    final_metrics->set_generation_perplexity(subset.generation);
    final_metrics->set_teacher_forced_perplexity_same_subset(subset.teacher_forced);
    final_metrics->set_leak_nll_gap(subset.leak.mean);
    final_metrics->set_leak_nll_gap_ci95(leaks_future ? subset.leak.half_width : 0);
    final_metrics->set_leak_sequences(subset.leak.n);
  }
  double experts_per_token = 0;
  for (const auto& layer : valid.layers) experts_per_token += layer.experts_per_token();
  if (!valid.layers.empty()) experts_per_token /= valid.layers.size();
  const ModelStats stats = model.Stats();
  final_metrics->set_experts_per_token(experts_per_token);
  final_metrics->set_expert_flops_per_token(experts_per_token * stats.num_moe_layers *
                                            stats.flops_per_expert_per_token);
  final_metrics->set_total_parameters(stats.total_parameters);
  final_metrics->set_active_parameters_per_token(stats.active_parameters_per_token);
  final_metrics->set_flops_per_token(stats.flops_per_token);
  result.set_status("COMPLETED");
  result.set_wall_time_s(wall_now());
  result.set_finished_unix_s(UnixSecondsNow());
  boundary.stage = "writing the final outputs";
  if (absl::Status s = WriteOutputs(dir, result); !s.ok()) return s;
  if (options.verbose) std::printf("%s", FormatRunSummary(result).c_str());
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

std::string FormatRunSummary(const RunResult& result) {
  const ExperimentSpec& spec = result.spec();
  const bool language =
      result.final().unigram_perplexity() > 0 || result.final().valid_perplexity() > 0;
  std::string out =
      absl::StrFormat("\n== %s  (router %s, spec %s, source %s, %d threads, %s) ==\n", spec.name(),
                      spec.router().name(), result.spec_hash(),
                      result.source().revision().empty() ? "unknown" : result.source().revision(),
                      result.versions().threads(), FormatDuration(result.wall_time_s()));
  absl::StrAppendFormat(&out, "%5s  %10s  %10s  %12s  %12s  %12s\n", "epoch", "train loss",
                        language ? "valid ppl" : "valid acc", "fluct top-1", "gate entropy",
                        language ? "tokens/s" : "images/s");
  for (const EpochMetrics& e : result.epochs()) {
    std::vector<double> fluct, entropy;
    for (const auto& l : e.layers()) {
      if (l.has_fluctuation()) fluct.push_back(l.fluctuation_top1());
      entropy.push_back(l.gate_entropy());
    }
    absl::StrAppendFormat(&out, "%5d  %10.4f  %10.4f  %12s  %12.4f  %12.0f\n", e.epoch(),
                          e.train_loss(), language ? e.valid_perplexity() : e.valid_accuracy(),
                          fluct.empty() ? "-" : absl::StrFormat("%.1f%%", 100 * Mean(fluct)),
                          Mean(entropy), language ? e.tokens_per_s() : e.examples_per_s());
  }
  const FinalMetrics& f = result.final();
  if (language) {
    absl::StrAppendFormat(&out, "valid perplexity %.2f", f.valid_perplexity());
    if (f.test_perplexity() > 0)
      absl::StrAppendFormat(&out, "  test perplexity %.2f", f.test_perplexity());
    absl::StrAppendFormat(&out, "  (unigram baseline %.2f)\n", f.unigram_perplexity());
  } else {
    absl::StrAppendFormat(&out, "valid accuracy %.2f%%", 100 * f.valid_accuracy());
    if (f.test_accuracy() > 0)
      absl::StrAppendFormat(&out, "  test accuracy %.2f%%", 100 * f.test_accuracy());
    out += "\n";
  }
  for (const CorruptedMetrics& c : f.corrupted()) {
    const std::string what =
        c.corruption().severity() > 0
            ? absl::StrFormat("%s severity %d", CorruptionKind_Name(c.corruption().kind()),
                              c.corruption().severity())
            : absl::StrFormat("%s rate %.2f", CorruptionKind_Name(c.corruption().kind()),
                              c.corruption().rate());
    absl::StrAppendFormat(&out, "under %s: %s %.4f", what, language ? "perplexity" : "accuracy",
                          language ? c.perplexity() : c.accuracy());
    if (c.expert_change() >= 0) {
      absl::StrAppendFormat(&out, "  (experts changed for %.1f%% of tokens)",
                            100 * c.expert_change());
    }
    out += "\n";
  }
  for (const LayerRoutingMetrics& layer : f.layers()) {
    if (!layer.has_aggregation()) continue;
    absl::StrAppendFormat(
        &out,
        "aggregation, MoE layer %d: mean self-weight %.4f, effective "
        "neighbours %.2f%s\n",
        layer.layer(), layer.aggregation_self_weight(), layer.aggregation_effective_neighbours(),
        layer.aggregation_self_weight() > kIdentityAggregationSelfWeight ? "  (IDENTITY: p = r)"
                                                                         : "");
  }
  if (result.non_causal_router_in_causal_model() && f.generation_perplexity() > 0) {
    absl::StrAppendFormat(&out,
                          "NON-CAUSAL ROUTER: generation-time perplexity %.2f vs "
                          "teacher-forced %.2f on the same %d sequences; leak %+.4f "
                          "nats/token, 95%% interval [%+.4f, %+.4f]\n",
                          f.generation_perplexity(), f.teacher_forced_perplexity_same_subset(),
                          f.leak_sequences(), f.leak_nll_gap(),
                          f.leak_nll_gap() - f.leak_nll_gap_ci95(),
                          f.leak_nll_gap() + f.leak_nll_gap_ci95());
  }
  absl::StrAppendFormat(&out,
                        "experts/token %.2f  parameters %d (active/token %d)  "
                        "GFLOPs/token %.4f  peak RSS %.0f MB\n",
                        f.experts_per_token(), f.total_parameters(),
                        f.active_parameters_per_token(), f.flops_per_token() / 1e9,
                        result.epochs_size() ? result.epochs().rbegin()->peak_rss_mb() : 0.0);
  return out;
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
