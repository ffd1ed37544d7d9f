#include "models/vit.h"

#include <ATen/ops/arange.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/cross_entropy_loss.h>
#include <ATen/ops/zeros.h>
#include <torch/csrc/autograd/generated/variable_factories.h>
#include <torch/utils.h>

#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "core/step_profiler.h"
#include "core/tasks/image_classification_name.h"
#include "models/block_stack.h"
#include "models/linear.h"
#include "models/model_spec_util.h"

namespace moelab {
namespace {

constexpr char kModelName[] = "vmoe_vit";

struct VitPreset {
  const char* name;
  int32_t patch_size;
  int32_t num_layers;
  int32_t model_dim;
  int32_t num_heads;
  int32_t dense_hidden;
  Pooling pooling;
  float dropout;
  MoeDefaults moe;
};

// See vit.h. The vmoe_* rows follow the V-MoE paper's S and B sizes
// (experts of the dense MLP's width, 32 experts, every other block).
// clang-format off
const VitPreset kPresets[] = {
  // name      patch layers D   heads dense pooling     dropout E  H     every
  {"cpu_tiny", 4,  4,  128, 4,  256,  CLASS_TOKEN, 0.0f, {8,  256,  2, GELU}},
  {"vmoe_s",   32, 8,  512, 8,  2048, CLASS_TOKEN, 0.0f, {32, 2048, 2, GELU}},
  {"vmoe_s16", 16, 8,  512, 8,  2048, CLASS_TOKEN, 0.0f, {32, 2048, 2, GELU}},
  {"vmoe_b16", 16, 12, 768, 12, 3072, CLASS_TOKEN, 0.1f, {32, 3072, 2, GELU}},
};
// clang-format on

std::vector<std::string> PresetNames() {
  std::vector<std::string> names;
  for (const VitPreset& preset : kPresets) names.push_back(preset.name);
  return names;
}

}  // namespace

absl::Status ResolveVitSpec(ModelSpec* spec) {
  if (spec->preset().empty()) spec->set_preset("cpu_tiny");
  const VitPreset* preset = nullptr;
  for (const VitPreset& p : kPresets) {
    if (spec->preset() == p.name) preset = &p;
  }
  if (preset == nullptr) {
    return UnknownPresetError(spec->preset(), kModelName, PresetNames());
  }
  VitOptions* o = spec->mutable_vit();
  if (!o->has_patch_size()) o->set_patch_size(preset->patch_size);
  if (!o->has_num_layers()) o->set_num_layers(preset->num_layers);
  if (!o->has_model_dim()) o->set_model_dim(preset->model_dim);
  if (!o->has_num_heads()) o->set_num_heads(preset->num_heads);
  if (!o->has_dense_hidden()) o->set_dense_hidden(preset->dense_hidden);
  if (o->pooling() == POOLING_UNSPECIFIED) o->set_pooling(preset->pooling);
  if (!o->has_dropout()) o->set_dropout(preset->dropout);
  ApplyMoeDefaults(preset->moe, spec->mutable_moe());
  return absl::OkStatus();
}

absl::Status ValidateVitSpec(const ModelSpec& spec) {
  if (spec.options_case() != ModelSpec::kVit) {
    return FieldError("model.vit", absl::StrCat("model '", kModelName,
                                                "' needs model.vit options (resolve the "
                                                "spec first)"));
  }
  const VitOptions& o = spec.vit();
  if (o.patch_size() < 1) {
    return FieldError("model.vit.patch_size", absl::StrCat("must be >= 1, got ", o.patch_size()));
  }
  if (o.num_layers() < 1) {
    return FieldError("model.vit.num_layers", absl::StrCat("must be >= 1, got ", o.num_layers()));
  }
  if (o.model_dim() < 1) {
    return FieldError("model.vit.model_dim", absl::StrCat("must be >= 1, got ", o.model_dim()));
  }
  if (o.num_heads() < 1 || o.model_dim() % o.num_heads() != 0) {
    return FieldError("model.vit.num_heads", absl::StrCat("must be >= 1 and divide model_dim (",
                                                          o.model_dim(), "), got ", o.num_heads()));
  }
  if (o.dense_hidden() < 1) {
    return FieldError("model.vit.dense_hidden",
                      absl::StrCat("must be >= 1, got ", o.dense_hidden()));
  }
  if (o.pooling() != CLASS_TOKEN && o.pooling() != MEAN) {
    return FieldError("model.vit.pooling", "must be CLASS_TOKEN or MEAN");
  }
  if (!(o.dropout() >= 0 && o.dropout() < 1)) {
    return FieldError("model.vit.dropout", absl::StrCat("must be in [0, 1), got ", o.dropout()));
  }
  return ValidateMoeSpec(spec.moe(), o.num_layers());
}

RouterDims VitRouterDims(const ModelSpec& spec) {
  return RouterDims{.model_dim = spec.vit().model_dim(),
                    .num_experts = spec.moe().num_experts(),
                    .num_heads = spec.vit().num_heads(),
                    .causal_model = false};
}

VmoeVit::VmoeVit(const ModelSpec& model, double top_k, const DatasetInfo& info)
    : spec_(model),
      top_k_(top_k),
      channels_(info.channels),
      num_classes_(info.num_classes),
      num_patches_((info.height / model.vit().patch_size()) *
                   (info.width / model.vit().patch_size())) {}

absl::StatusOr<std::shared_ptr<VmoeVit>> VmoeVit::Create(const ExperimentSpec& spec,
                                                         const DatasetInfo& info) {
  if (info.task != kImageClassificationTask || info.num_classes < 1 || info.channels < 1 ||
      info.height < 1 || info.width < 1) {
    return FieldError("dataset.name", absl::StrCat("model '", kModelName,
                                                   "' needs an image-classification "
                                                   "dataset; '",
                                                   spec.dataset().name(), "' has ",
                                                   info.num_classes, " classes of ", info.channels,
                                                   "x", info.height, "x", info.width, " images"));
  }
  if (absl::Status s = ValidateVitSpec(spec.model()); !s.ok()) return s;
  const VitOptions& o = spec.model().vit();
  const MoeSpec& moe = spec.model().moe();
  const int64_t p = o.patch_size(), d = o.model_dim();
  if (info.height % p != 0 || info.width % p != 0) {
    return FieldError("model.vit.patch_size",
                      absl::StrCat(p, " does not divide the dataset's ", info.height, "x",
                                   info.width, " images"));
  }
  // Taken before anything is drawn; see CreateRouterOnOwnStream.
  const uint64_t router_key = RouterStreamKey();
  std::shared_ptr<VmoeVit> vit(new VmoeVit(spec.model(), spec.router().top_k(), info));
  vit->patch_embedding_ = vit->register_module(
      "patch_embedding",
      torch::nn::Conv2d(torch::nn::Conv2dOptions(info.channels, d, p).stride(p)));
  const bool class_token = o.pooling() == CLASS_TOKEN;
  const int64_t tokens = vit->num_patches_ + (class_token ? 1 : 0);
  {
    torch::NoGradGuard no_grad;
    if (class_token) {
      vit->class_token_ = vit->register_parameter("class_token", torch::zeros({1, 1, d}));
    }
    vit->position_embedding_ =
        vit->register_parameter("position_embedding", torch::randn({1, tokens, d}) * 0.02);
  }
  vit->embedding_dropout_ = vit->register_module(
      "embedding_dropout", torch::nn::Dropout(torch::nn::DropoutOptions(o.dropout())));

  const RouterDims dims = VitRouterDims(spec.model());
  const auto block_options = TransformerBlockOptions(d, o.num_heads())
                                 .causal(false)
                                 .dropout(o.dropout())
                                 .dense_hidden(o.dense_hidden())
                                 .activation(moe.activation());
  absl::StatusOr<std::vector<TransformerBlock>> blocks =
      BuildBlockStack(*vit, o.num_layers(), moe, block_options, spec.router(), dims, router_key);
  if (!blocks.ok()) return blocks.status();
  vit->blocks_ = *std::move(blocks);
  vit->final_norm_ =
      vit->register_module("final_norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({d})));
  vit->head_ = vit->register_module("head", torch::nn::Linear(d, info.num_classes));
  return vit;
}

ModelOutput VmoeVit::Forward(const Batch& batch, const ForwardOptions& options) {
  const at::Tensor& images = batch.inputs;  // [B, C, H, W]
  TORCH_CHECK(images.dim() == 4 && images.size(1) == channels_, "vmoe_vit: inputs must be [B, ",
              channels_, ", H, W], got ", images.sizes());
  const int64_t batch_size = images.size(0);
  at::Tensor x;  // [B, T, D]
  {
    ScopedPhase phase(kPhaseEmbedding);
    // The stride-p convolution as the linear map it is on non-overlapping
    // patches (p divides H and W), so it runs in the run's precision:
    // [B, C, H, W] -> [B, N, C p p] -> [B, N, D].
    const int64_t p = patch_embedding_->options.kernel_size()->at(0);
    const at::Tensor patches =
        images.view({batch_size, channels_, images.size(2) / p, p, images.size(3) / p, p})
            .permute({0, 2, 4, 1, 3, 5})
            .reshape({batch_size, -1, channels_ * p * p});
    const at::Tensor& w = patch_embedding_->weight;  // [D, C, p, p]
    x = Linear(patches, w.view({w.size(0), -1}), patch_embedding_->bias);
    TORCH_CHECK(x.size(1) == num_patches_, "vmoe_vit: ", x.size(1),
                " patches, the model was built for ", num_patches_);
    if (class_token_.defined()) {
      x = at::cat({class_token_.expand({batch_size, 1, x.size(2)}), x}, 1);
    }
    x = embedding_dropout_->forward(x + position_embedding_);
  }

  RoutingContext context;
  context.token_ids = at::arange(x.size(1), images.options().dtype(at::kLong))
                          .unsqueeze(0)
                          .expand({batch_size, x.size(1)});
  context.training = is_training();
  context.causal = false;

  ModelOutput out;
  out.aux_loss = at::zeros({}, x.options());
  x = RunBlockStack(blocks_, std::move(x), context, options.keep_routing, &out);
  {
    ScopedPhase phase(kPhaseOutput);
    x = final_norm_->forward(x);
    const at::Tensor pooled = class_token_.defined() ? x.select(1, 0) : x.mean(1);  // [B, D]
    out.logits = Linear(pooled, head_->weight, head_->bias);                        // [B, classes]
  }
  if (batch.targets.defined()) {
    ScopedPhase phase(kPhaseLoss);
    out.loss = at::cross_entropy_loss(out.logits, batch.targets);
  }
  return out;
}

ModelStats VmoeVit::Stats() const {
  const VitOptions& o = spec_.vit();
  TransformerStackShape shape;
  shape.model_dim = o.model_dim();
  shape.tokens = num_tokens();
  shape.num_layers = o.num_layers();
  shape.dense_hidden = o.dense_hidden();
  shape.moe = spec_.moe();
  shape.top_k = top_k_;
  int64_t total = 0;
  for (const at::Tensor& p : parameters()) total += p.numel();
  total += ExpertParametersElsewhere(blocks_);
  // Patch embedding (per patch) and head (per image), spread over the
  // image's tokens.
  const double patch_flops =
      2.0 * channels_ * o.patch_size() * o.patch_size() * o.model_dim() * num_patches_;
  const double head_flops = 2.0 * o.model_dim() * num_classes_;
  return StackStats(shape, total, (patch_flops + head_flops) / double(num_tokens()));
}

std::vector<std::shared_ptr<Router>> VmoeVit::Routers() const { return RoutersOf(blocks_); }

absl::StatusOr<std::vector<at::Tensor>> VmoeVit::ShardExperts(
    std::shared_ptr<ExpertExchange> exchange) {
  return ShardExpertsOf(blocks_, std::move(exchange));
}

MOELAB_REGISTER_MODEL(kModelName,
                      {.options = ModelSpec::kVit,
                       .description = "vision transformer with MoE FFNs every moe_every-th "
                                      "block (V-MoE); presets cpu_tiny (default), vmoe_s, "
                                      "vmoe_s16, vmoe_b16",
                       .resolve = ResolveVitSpec,
                       .validate = ValidateVitSpec,
                       .router_dims = VitRouterDims,
                       .create = [](const ExperimentSpec& spec, const DatasetInfo& info)
                           -> absl::StatusOr<std::shared_ptr<Model>> {
                         absl::StatusOr<std::shared_ptr<VmoeVit>> vit = VmoeVit::Create(spec, info);
                         if (!vit.ok()) return vit.status();
                         return std::shared_ptr<Model>(*std::move(vit));
                       },
                       .task = kImageClassificationTask});

}  // namespace moelab
