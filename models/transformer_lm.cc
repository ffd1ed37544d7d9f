#include "models/transformer_lm.h"

#include <ATen/ops/arange.h>
#include <ATen/ops/matmul.h>
#include <ATen/ops/zeros.h>
#include <torch/utils.h>

#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "core/step_profiler.h"
#include "core/tasks/language_modeling_name.h"
#include "models/block_stack.h"
#include "models/cross_entropy.h"
#include "models/linear.h"
#include "models/model_spec_util.h"

namespace moelab {
namespace {

constexpr char kModelName[] = "moe_transformer_lm";

struct LmPreset {
  const char* name;
  int32_t num_layers;
  int32_t model_dim;
  int32_t num_heads;
  int32_t dense_hidden;
  bool tie_embeddings;
  float dropout;
  MoeDefaults moe;
};

// See transformer_lm.h for where each comes from.
// clang-format off
const LmPreset kPresets[] = {
  // name         layers D  heads dense tied  dropout  E   H    every
  {"cpu_tiny",    2, 128, 4, 256, true,  0.1f, {8,  256, 1, GELU}},
  {"cpu_small",   4, 256, 8, 512, true,  0.1f, {16, 512, 1, GELU}},
  // Approximations of the SMoE/CompeteSMoE WikiText-103 scripts
  // (transformers/small, transformers/medium, glam/medium).
  {"smoe_small",  3, 128, 8, 128, false, 0.7f, {16, 128, 1, RELU}},
  {"smoe_medium", 6, 352, 8, 352, false, 0.1f, {16, 352, 1, RELU}},
  {"glam_style",  8, 352, 8, 352, false, 0.1f, {16, 352, 2, RELU}},
};
// clang-format on

std::vector<std::string> PresetNames() {
  std::vector<std::string> names;
  for (const LmPreset& preset : kPresets) names.push_back(preset.name);
  return names;
}

TransformerStackShape StackShape(const ModelSpec& spec, int64_t tokens, double top_k) {
  const TransformerLmOptions& o = spec.transformer_lm();
  TransformerStackShape shape;
  shape.model_dim = o.model_dim();
  shape.tokens = tokens;
  shape.num_layers = o.num_layers();
  shape.dense_hidden = o.dense_hidden();
  shape.moe = spec.moe();
  shape.top_k = top_k;
  return shape;
}

}  // namespace

absl::Status ResolveTransformerLmSpec(ModelSpec* spec) {
  if (spec->preset().empty()) spec->set_preset("cpu_tiny");
  const LmPreset* preset = nullptr;
  for (const LmPreset& p : kPresets) {
    if (spec->preset() == p.name) preset = &p;
  }
  if (preset == nullptr) {
    return UnknownPresetError(spec->preset(), kModelName, PresetNames());
  }
  TransformerLmOptions* o = spec->mutable_transformer_lm();
  if (!o->has_num_layers()) o->set_num_layers(preset->num_layers);
  if (!o->has_model_dim()) o->set_model_dim(preset->model_dim);
  if (!o->has_num_heads()) o->set_num_heads(preset->num_heads);
  if (!o->has_dense_hidden()) o->set_dense_hidden(preset->dense_hidden);
  if (!o->has_tie_embeddings()) o->set_tie_embeddings(preset->tie_embeddings);
  if (!o->has_dropout()) o->set_dropout(preset->dropout);
  ApplyMoeDefaults(preset->moe, spec->mutable_moe());
  return absl::OkStatus();
}

absl::Status ValidateTransformerLmSpec(const ModelSpec& spec) {
  if (spec.options_case() != ModelSpec::kTransformerLm) {
    return FieldError("model.transformer_lm", absl::StrCat("model '", kModelName,
                                                           "' needs model.transformer_lm options "
                                                           "(resolve the spec first)"));
  }
  const TransformerLmOptions& o = spec.transformer_lm();
  if (o.num_layers() < 1) {
    return FieldError("model.transformer_lm.num_layers",
                      absl::StrCat("must be >= 1, got ", o.num_layers()));
  }
  if (o.model_dim() < 1) {
    return FieldError("model.transformer_lm.model_dim",
                      absl::StrCat("must be >= 1, got ", o.model_dim()));
  }
  if (o.num_heads() < 1 || o.model_dim() % o.num_heads() != 0) {
    return FieldError("model.transformer_lm.num_heads",
                      absl::StrCat("must be >= 1 and divide model_dim (", o.model_dim(), "), got ",
                                   o.num_heads()));
  }
  if (o.dense_hidden() < 1) {
    return FieldError("model.transformer_lm.dense_hidden",
                      absl::StrCat("must be >= 1, got ", o.dense_hidden()));
  }
  if (!(o.dropout() >= 0 && o.dropout() < 1)) {
    return FieldError("model.transformer_lm.dropout",
                      absl::StrCat("must be in [0, 1), got ", o.dropout()));
  }
  return ValidateMoeSpec(spec.moe(), o.num_layers());
}

RouterDims TransformerLmRouterDims(const ModelSpec& spec) {
  return RouterDims{.model_dim = spec.transformer_lm().model_dim(),
                    .num_experts = spec.moe().num_experts(),
                    .num_heads = spec.transformer_lm().num_heads(),
                    .causal_model = true};
}

MoeTransformerLm::MoeTransformerLm(const ModelSpec& model, double top_k, const DatasetInfo& info)
    : spec_(model),
      top_k_(top_k),
      vocab_size_(info.vocab_size),
      max_tokens_(info.sequence_length) {}

absl::StatusOr<std::shared_ptr<MoeTransformerLm>> MoeTransformerLm::Create(
    const ExperimentSpec& spec, const DatasetInfo& info) {
  if (info.task != kLanguageModelingTask || info.vocab_size < 1 || info.sequence_length < 1) {
    return FieldError("dataset.name",
                      absl::StrCat("model '", kModelName,
                                   "' needs a language-modelling "
                                   "dataset with a vocabulary and a sequence length; '",
                                   spec.dataset().name(), "' has vocab_size ", info.vocab_size,
                                   ", sequence_length ", info.sequence_length));
  }
  if (absl::Status s = ValidateTransformerLmSpec(spec.model()); !s.ok()) {
    return s;
  }
  // Taken before anything is drawn; see CreateRouterOnOwnStream.
  const uint64_t router_key = RouterStreamKey();
  std::shared_ptr<MoeTransformerLm> lm(
      new MoeTransformerLm(spec.model(), spec.router().top_k(), info));
  const TransformerLmOptions& o = spec.model().transformer_lm();
  const MoeSpec& moe = spec.model().moe();
  const int64_t d = o.model_dim();

  lm->token_embedding_ =
      lm->register_module("token_embedding", torch::nn::Embedding(info.vocab_size, d));
  lm->position_embedding_ =
      lm->register_module("position_embedding", torch::nn::Embedding(info.sequence_length, d));
  {
    // GPT-2's N(0, 0.02): keeps tied output logits small at the start.
    torch::NoGradGuard no_grad;
    lm->token_embedding_->weight.normal_(0.0, 0.02);
    lm->position_embedding_->weight.normal_(0.0, 0.02);
  }
  lm->embedding_dropout_ = lm->register_module(
      "embedding_dropout", torch::nn::Dropout(torch::nn::DropoutOptions(o.dropout())));

  const RouterDims dims = TransformerLmRouterDims(spec.model());
  const auto block_options = TransformerBlockOptions(d, o.num_heads())
                                 .causal(true)
                                 .dropout(o.dropout())
                                 .dense_hidden(o.dense_hidden())
                                 .activation(moe.activation());
  absl::StatusOr<std::vector<TransformerBlock>> blocks =
      BuildBlockStack(*lm, o.num_layers(), moe, block_options, spec.router(), dims, router_key);
  if (!blocks.ok()) return blocks.status();
  lm->blocks_ = *std::move(blocks);
  lm->final_norm_ =
      lm->register_module("final_norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({d})));
  if (!o.tie_embeddings()) {
    lm->output_ = lm->register_module(
        "output", torch::nn::Linear(torch::nn::LinearOptions(d, info.vocab_size).bias(false)));
  }
  return lm;
}

ModelOutput MoeTransformerLm::Forward(const Batch& batch, const ForwardOptions& options) {
  const at::Tensor& ids = batch.inputs;  // [B, T]
  TORCH_CHECK(ids.dim() == 2, "moe_transformer_lm: inputs must be [B, T]");
  const int64_t tokens = ids.size(1);
  TORCH_CHECK(tokens <= max_tokens_, "moe_transformer_lm: ", tokens, " tokens exceed the ",
              max_tokens_, " position embeddings");
  at::Tensor x;  // [B, T, D]
  {
    ScopedPhase phase(kPhaseEmbedding);
    const at::Tensor positions = at::arange(tokens, ids.options());
    x = token_embedding_->forward(ids) + position_embedding_->forward(positions);
    x = embedding_dropout_->forward(x);
  }

  RoutingContext context;
  context.token_ids = ids;
  context.training = is_training();
  context.causal = true;

  ModelOutput out;
  out.aux_loss = at::zeros({}, x.options());
  x = RunBlockStack(blocks_, std::move(x), context, options.keep_routing, &out);
  const at::Tensor& output_weight =
      output_.is_empty() ? token_embedding_->weight : output_->weight;  // [V, D]
  if (!options.need_logits && batch.targets.defined()) {
    ScopedPhase phase(kPhaseOutputAndLoss);
    x = final_norm_->forward(x);
    out.loss = MeanLinearCrossEntropy(x.reshape({-1, x.size(2)}), output_weight,
                                      batch.targets.reshape({-1}));
    return out;
  }
  {
    ScopedPhase phase(kPhaseOutput);
    x = final_norm_->forward(x);
    out.logits = Linear(x, output_weight, at::Tensor());  // [B, T, V]
  }
  if (batch.targets.defined()) {
    ScopedPhase phase(kPhaseLoss);
    out.loss = MeanCrossEntropy(out.logits.reshape({-1, vocab_size_}), batch.targets.reshape({-1}));
  }
  return out;
}

ModelStats MoeTransformerLm::Stats() const {
  const TransformerStackShape shape = StackShape(spec_, max_tokens_, top_k_);
  int64_t total = 0;
  for (const at::Tensor& p : parameters()) total += p.numel();
  total += ExpertParametersElsewhere(blocks_);
  // The output projection to the vocabulary.
  return StackStats(shape, total, 2.0 * shape.model_dim * vocab_size_);
}

std::vector<std::shared_ptr<Router>> MoeTransformerLm::Routers() const {
  return RoutersOf(blocks_);
}

absl::StatusOr<std::vector<at::Tensor>> MoeTransformerLm::ShardExperts(
    std::shared_ptr<ExpertExchange> exchange) {
  return ShardExpertsOf(blocks_, std::move(exchange));
}

MOELAB_REGISTER_MODEL(kModelName, {.options = ModelSpec::kTransformerLm,
                                   .description = "decoder-only transformer LM with MoE FFNs every "
                                                  "moe_every-th block; presets cpu_tiny (default), "
                                                  "cpu_small, smoe_small, smoe_medium, glam_style",
                                   .resolve = ResolveTransformerLmSpec,
                                   .validate = ValidateTransformerLmSpec,
                                   .router_dims = TransformerLmRouterDims,
                                   .create = [](const ExperimentSpec& spec, const DatasetInfo& info)
                                       -> absl::StatusOr<std::shared_ptr<Model>> {
                                     absl::StatusOr<std::shared_ptr<MoeTransformerLm>> lm =
                                         MoeTransformerLm::Create(spec, info);
                                     if (!lm.ok()) return lm.status();
                                     return std::shared_ptr<Model>(*std::move(lm));
                                   },
                                   .task = kLanguageModelingTask});

}  // namespace moelab
