#include "core/spec.h"

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/strip.h"
#include "core/corruption.h"
#include "core/dataset.h"
#include "core/model.h"
#include "core/paths.h"
#include "core/registry.h"
#include "core/router.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/io/tokenizer.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"
#include "google/protobuf/text_format.h"

namespace moelab {
namespace {

class CollectingErrorCollector : public google::protobuf::io::ErrorCollector {
 public:
  explicit CollectingErrorCollector(std::string source) : source_(std::move(source)) {}

  void AddError(int line, google::protobuf::io::ColumnNumber column,
                const std::string& message) override {
    // The parser counts from zero; editors count from one.
    errors_.push_back(absl::StrCat(source_, ":", line + 1, ":", column + 1, ": ", message));
  }
  void AddWarning(int line, google::protobuf::io::ColumnNumber column,
                  const std::string& message) override {
    AddError(line, column, message);
  }

  const std::vector<std::string>& errors() const { return errors_; }

 private:
  std::string source_;
  std::vector<std::string> errors_;
};

absl::Status FieldError(absl::string_view field, absl::string_view problem) {
  return absl::InvalidArgumentError(absl::StrCat(field, ": ", problem));
}

bool IsValidRunName(absl::string_view name) {
  if (name.empty() || name == "." || name == "..") return false;
  for (char c : name) {
    if (!absl::ascii_isalnum(c) && c != '_' && c != '-' && c != '.') {
      return false;
    }
  }
  return true;
}

// Looks up a plugin by the spec's `field` (e.g. "dataset.name"); an empty
// name is "required", not "unknown ''". Both list the registered names.
template <typename Entry>
absl::StatusOr<const Entry*> FindPlugin(const Registry<Entry>& registry, absl::string_view field,
                                        const std::string& name) {
  if (name.empty()) {
    return FieldError(field,
                      absl::StrCat("required; one of: ", absl::StrJoin(registry.Names(), ", ")));
  }
  absl::StatusOr<const Entry*> entry = registry.Find(name);
  if (!entry.ok()) return FieldError(field, entry.status().message());
  return entry;
}

absl::Status ValidateDevice(absl::string_view device) {
  if (device == "cpu" || device == "cuda") return absl::OkStatus();
  int index = 0;
  if (absl::ConsumePrefix(&device, "cuda:") && absl::SimpleAtoi(device, &index) && index >= 0) {
    return absl::OkStatus();
  }
  return FieldError("runtime.device",
                    absl::StrCat("expected \"cpu\", \"cuda\" or \"cuda:N\", got \"", device, "\""));
}

absl::Status ValidateDistributed(const ExperimentSpec& spec) {
  if (!spec.runtime().has_distributed()) return absl::OkStatus();
  const DistributedSpec& d = spec.runtime().distributed();
  if (d.expert_parallel() < 1) {
    return FieldError("runtime.distributed.expert_parallel",
                      absl::StrCat("must be >= 1, got ", d.expert_parallel()));
  }
  if (d.backend() == "nccl") {
    return FieldError("runtime.distributed.backend",
                      "nccl needs a CUDA build of LibTorch; this one is CPU-only: use \"gloo\"");
  }
  if (d.backend() != "gloo") {
    return FieldError("runtime.distributed.backend",
                      absl::StrCat("unknown backend '", d.backend(), "' (expected gloo or nccl)"));
  }
  if (!(d.timeout_s() > 0) || !std::isfinite(d.timeout_s())) {
    return FieldError("runtime.distributed.timeout_s",
                      absl::StrCat("must be a positive number of seconds, got ", d.timeout_s()));
  }
  if (d.bucket_bytes() < 1024) {
    return FieldError("runtime.distributed.bucket_bytes",
                      absl::StrCat("must be at least 1024, got ", d.bucket_bytes()));
  }
  return absl::OkStatus();
}

absl::Status ValidateTraining(const ExperimentSpec& spec) {
  const TrainingSpec& t = spec.training();
  const bool training_free = !spec.evaluation().init_checkpoint().empty();
  if (!(t.learning_rate() > 0 && std::isfinite(t.learning_rate())) && !training_free) {
    return FieldError("training.learning_rate",
                      absl::StrCat("must be a finite number > 0, got ", t.learning_rate()));
  }
  if (t.epochs() < 0 || (t.epochs() == 0 && !training_free)) {
    return FieldError("training.epochs",
                      absl::StrCat("must be >= 1 (or 0 with evaluation.init_checkpoint for "
                                   "a training-free run), got ",
                                   t.epochs()));
  }
  if (t.batch_size() < 1) {
    return FieldError("training.batch_size", absl::StrCat("must be >= 1, got ", t.batch_size()));
  }
  if (t.steps_per_epoch() < 0) {
    return FieldError("training.steps_per_epoch",
                      absl::StrCat("must be >= 0, got ", t.steps_per_epoch()));
  }
  if (t.warmup_steps() < 0) {
    return FieldError("training.warmup_steps",
                      absl::StrCat("must be >= 0, got ", t.warmup_steps()));
  }
  if (t.grad_clip_norm() < 0 || !std::isfinite(t.grad_clip_norm())) {
    return FieldError("training.grad_clip_norm",
                      absl::StrCat("must be >= 0 (0 = off), got ", t.grad_clip_norm()));
  }
  // Written as !(in range) so that NaN, which fails every comparison, is
  // refused too.
  if (!(t.weight_decay() >= 0 && std::isfinite(t.weight_decay()))) {
    return FieldError("training.weight_decay",
                      absl::StrCat("must be a finite number >= 0, got ", t.weight_decay()));
  }
  if (!(t.momentum() >= 0 && t.momentum() < 1)) {
    return FieldError("training.momentum", absl::StrCat("must be in [0, 1), got ", t.momentum()));
  }
  if (!(t.min_lr_ratio() >= 0 && t.min_lr_ratio() <= 1)) {
    return FieldError("training.min_lr_ratio",
                      absl::StrCat("must be in [0, 1], got ", t.min_lr_ratio()));
  }
  return absl::OkStatus();
}

absl::Status ValidateEvaluation(const ExperimentSpec& spec, TaskInputs inputs) {
  const EvaluationSpec& e = spec.evaluation();
  if (e.max_eval_batches() < 0) {
    return FieldError("evaluation.max_eval_batches",
                      absl::StrCat("must be >= 0 (0 = all), got ", e.max_eval_batches()));
  }
  if (e.probe_examples() < 1) {
    return FieldError("evaluation.probe_examples",
                      absl::StrCat("must be >= 1, got ", e.probe_examples()));
  }
  if (e.generation_eval_sequences() < 0) {
    return FieldError("evaluation.generation_eval_sequences",
                      absl::StrCat("must be >= 0, got ", e.generation_eval_sequences()));
  }
  for (int i = 0; i < e.corruptions_size(); ++i) {
    absl::Status s = ValidateCorruption(e.corruptions(i), inputs);
    if (!s.ok()) {
      // Point at the offending entry of the repeated field.
      return absl::InvalidArgumentError(absl::StrReplaceAll(
          s.message(),
          {{"evaluation.corruptions", absl::StrCat("evaluation.corruptions[", i, "]")}}));
    }
  }
  if (!e.init_checkpoint().empty()) {
    // The path the trainer will load: relative to where the command was
    // typed under `bazel run`.
    const std::string resolved = ResolveUserPath(e.init_checkpoint());
    if (!std::filesystem::is_regular_file(resolved)) {
      return FieldError("evaluation.init_checkpoint",
                        absl::StrCat("file not found: ", e.init_checkpoint(),
                                     resolved == e.init_checkpoint()
                                         ? ""
                                         : absl::StrCat(" (resolved as ", resolved, ")")));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<ExperimentSpec> ParseSpec(absl::string_view text, absl::string_view source_name) {
  ExperimentSpec spec;
  google::protobuf::TextFormat::Parser parser;
  CollectingErrorCollector errors{std::string(source_name)};
  parser.RecordErrorsTo(&errors);
  if (!parser.ParseFromString(std::string(text), &spec)) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot parse experiment spec: ", absl::StrJoin(errors.errors(), "; ")));
  }
  return spec;
}

absl::StatusOr<ExperimentSpec> ReadSpecFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::NotFoundError(absl::StrCat("cannot open spec file '", path, "'"));
  }
  std::stringstream buffer;
  buffer << in.rdbuf();
  return ParseSpec(buffer.str(), path);
}

absl::Status ResolveSpec(ExperimentSpec* spec) {
  if (spec->runtime().device().empty()) spec->mutable_runtime()->set_device("cpu");
  // Only a spec that says how to distribute gets the defaults, so that a
  // single-process spec prints (and hashes) as before.
  if (spec->runtime().has_distributed()) {
    DistributedSpec* d = spec->mutable_runtime()->mutable_distributed();
    if (d->expert_parallel() == 0) d->set_expert_parallel(1);
    if (d->backend().empty()) d->set_backend("gloo");
    if (d->timeout_s() == 0) d->set_timeout_s(300);
    if (d->bucket_bytes() == 0) d->set_bucket_bytes(int64_t{25} << 20);
  }
  if (spec->runtime().precision() == PRECISION_UNSPECIFIED) {
    spec->mutable_runtime()->set_precision(FP32);
  }
  if (spec->output().directory().empty()) {
    spec->mutable_output()->set_directory("runs");
  }
  EvaluationSpec* e = spec->mutable_evaluation();
  if (!e->has_probe_examples()) e->set_probe_examples(32);
  if (!e->has_generation_eval_sequences()) e->set_generation_eval_sequences(32);
  TrainingSpec* t = spec->mutable_training();
  if (t->optimizer() == OPTIMIZER_UNSPECIFIED) t->set_optimizer(ADAMW);
  if (t->schedule() == SCHEDULE_UNSPECIFIED) t->set_schedule(COSINE);
  RouterSpec* r = spec->mutable_router();
  if (!r->has_top_k()) r->set_top_k(2);
  if (r->load_balance_counting() == LOAD_BALANCE_COUNTING_UNSPECIFIED) {
    r->set_load_balance_counting(CHOICES_BEFORE_CAPACITY);
  }
  if (r->load_balance_scores() == LOAD_BALANCE_SCORES_UNSPECIFIED) {
    r->set_load_balance_scores(NORMALIZED_OVER_EXPERTS);
  }

  absl::StatusOr<const DatasetRegistration*> dataset =
      FindPlugin(DatasetRegistry(), "dataset.name", spec->dataset().name());
  if (!dataset.ok()) return dataset.status();
  absl::StatusOr<const ModelRegistration*> model =
      FindPlugin(ModelRegistry(), "model.name", spec->model().name());
  if (!model.ok()) return model.status();
  absl::StatusOr<const RouterRegistration*> router =
      FindPlugin(RouterRegistry(), "router.name", spec->router().name());
  if (!router.ok()) return router.status();

  ResolveDatasetSpec(**dataset, spec->mutable_dataset());
  if (absl::Status s = ResolveModelSpec(**model, spec->mutable_model()); !s.ok()) return s;
  ResolveRouterSpec(**router, spec->mutable_router(), (*model)->router_dims(spec->model()));
  return absl::OkStatus();
}

absl::Status ValidateSpec(const ExperimentSpec& spec) {
  if (!IsValidRunName(spec.name())) {
    return FieldError("name", absl::StrCat("must be non-empty and use only "
                                           "letters, digits, '_', '-', '.'; got \"",
                                           spec.name(), "\""));
  }
  absl::StatusOr<const DatasetRegistration*> dataset =
      FindPlugin(DatasetRegistry(), "dataset.name", spec.dataset().name());
  if (!dataset.ok()) return dataset.status();
  absl::StatusOr<const ModelRegistration*> model =
      FindPlugin(ModelRegistry(), "model.name", spec.model().name());
  if (!model.ok()) return model.status();
  absl::StatusOr<const RouterRegistration*> router =
      FindPlugin(RouterRegistry(), "router.name", spec.router().name());
  if (!router.ok()) return router.status();

  // The task plugin must be linked, or the run would fail only after
  // claiming its directory.
  absl::StatusOr<const TaskRegistration*> task = FindTask((*dataset)->task);
  if (!task.ok()) return FieldError("dataset.name", task.status().message());
  if ((*dataset)->task != (*model)->task) {
    return FieldError(
        "model.name",
        absl::StrCat("model '", spec.model().name(), "' cannot train on dataset '",
                     spec.dataset().name(), "': the model solves task '", (*model)->task,
                     "', the dataset poses '", (*dataset)->task, "'"));
  }
  if (spec.dataset().train_subset_examples() < 0) {
    return FieldError("dataset.train_subset_examples",
                      absl::StrCat("must be >= 0 (0 = the whole training split), got ",
                                   spec.dataset().train_subset_examples()));
  }
  if (absl::Status s = ValidateDevice(spec.runtime().device()); !s.ok()) return s;
  if (!Precision_IsValid(spec.runtime().precision())) {
    return FieldError(
        "runtime.precision",
        absl::StrCat("unknown value ", spec.runtime().precision(), " (expected FP32 or BF16)"));
  }
  if (spec.runtime().threads() < 0) {
    return FieldError("runtime.threads",
                      absl::StrCat("must be >= 0 (0 = all cores), got ", spec.runtime().threads()));
  }
  if (absl::Status s = ValidateDistributed(spec); !s.ok()) return s;
  if (absl::Status s = ValidateTraining(spec); !s.ok()) return s;
  if (absl::Status s = ValidateEvaluation(spec, (*task)->inputs); !s.ok()) return s;

  if (absl::Status s = ValidateModelSpec(**model, spec.model()); !s.ok()) return s;
  const RouterDims dims = (*model)->router_dims(spec.model());
  if (absl::Status s = CheckTopK(spec.router(), **router, dims); !s.ok()) return s;
  const RouterSpec& router_spec = spec.router();
  if (!(router_spec.load_balance_coef() >= 0 && std::isfinite(router_spec.load_balance_coef()))) {
    return FieldError("router.load_balance_coef",
                      absl::StrCat("must be a finite number >= 0 (0 = off), got ",
                                   router_spec.load_balance_coef()));
  }
  if (!(router_spec.z_loss_coef() >= 0 && std::isfinite(router_spec.z_loss_coef()))) {
    return FieldError(
        "router.z_loss_coef",
        absl::StrCat("must be a finite number >= 0 (0 = off), got ", router_spec.z_loss_coef()));
  }
  if (absl::Status s = ValidateRouterSpec(**router, spec.router(), dims); !s.ok()) return s;
  return ValidateDatasetSpec(**dataset, spec.dataset());
}

absl::StatusOr<ExperimentSpec> LoadSpecFromText(absl::string_view text,
                                                absl::string_view source_name) {
  absl::StatusOr<ExperimentSpec> spec = ParseSpec(text, source_name);
  if (!spec.ok()) return spec.status();
  absl::Status status = ResolveSpec(&*spec);
  if (status.ok()) status = ValidateSpec(*spec);
  if (!status.ok()) {
    return absl::Status(status.code(), absl::StrCat(source_name, ": ", status.message()));
  }
  return spec;
}

absl::StatusOr<ExperimentSpec> LoadSpec(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::NotFoundError(absl::StrCat("cannot open spec file '", path, "'"));
  }
  std::stringstream buffer;
  buffer << in.rdbuf();
  return LoadSpecFromText(buffer.str(), path);
}

std::string SpecHash(const ExperimentSpec& spec) {
  ExperimentSpec key = spec;
  key.clear_output();
  key.mutable_runtime()->clear_threads();
  // Runs from before runtime.precision existed were fp32: same key.
  if (key.runtime().precision() == FP32) key.mutable_runtime()->clear_precision();
  std::string bytes;
  google::protobuf::io::StringOutputStream stream(&bytes);
  {
    google::protobuf::io::CodedOutputStream coded(&stream);
    coded.SetSerializationDeterministic(true);
    key.SerializeToCodedStream(&coded);
  }
  // FNV-1a: stable across processes and versions, unlike absl::Hash.
  uint64_t hash = 1469598103934665603ull;
  for (unsigned char c : bytes) {
    hash ^= c;
    hash *= 1099511628211ull;
  }
  return absl::StrFormat("%016x", hash);
}

std::string SpecToText(const ExperimentSpec& spec) {
  std::string text;
  google::protobuf::TextFormat::PrintToString(spec, &text);
  return text;
}

}  // namespace moelab
