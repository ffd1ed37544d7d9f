#include "models/model_spec_util.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/Generator.h>

#include <cmath>
#include <mutex>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "models/moe_layer.h"

namespace moelab {

void ApplyMoeDefaults(const MoeDefaults& defaults, MoeSpec* moe) {
  if (!moe->has_num_experts()) moe->set_num_experts(defaults.num_experts);
  if (!moe->has_expert_hidden()) moe->set_expert_hidden(defaults.expert_hidden);
  if (!moe->has_moe_every()) moe->set_moe_every(defaults.moe_every);
  if (moe->activation() == ACTIVATION_UNSPECIFIED) {
    moe->set_activation(defaults.activation);
  }
}

absl::Status ValidateMoeSpec(const MoeSpec& moe, int32_t num_layers) {
  if (moe.num_experts() < 1) {
    return FieldError("model.moe.num_experts",
                      absl::StrCat("must be >= 1, got ", moe.num_experts()));
  }
  if (moe.expert_hidden() < 1) {
    return FieldError("model.moe.expert_hidden",
                      absl::StrCat("must be >= 1, got ", moe.expert_hidden()));
  }
  if (moe.moe_every() < 1 || moe.moe_every() > num_layers) {
    return FieldError("model.moe.moe_every",
                      absl::StrCat("must be in [1, num_layers = ", num_layers,
                                   "] so that the model has an MoE layer, got ", moe.moe_every()));
  }
  if (moe.activation() != GELU && moe.activation() != RELU) {
    return FieldError("model.moe.activation", "must be GELU or RELU");
  }
  return absl::OkStatus();
}

bool IsMoeBlock(int64_t layer, int64_t moe_every) { return (layer + 1) % moe_every == 0; }

absl::Status UnknownPresetError(absl::string_view preset, absl::string_view model_name,
                                const std::vector<std::string>& known) {
  return FieldError("model.preset",
                    absl::StrCat("unknown preset '", preset, "' for model '", model_name,
                                 "'; known presets: ", absl::StrJoin(known, ", ")));
}

void AccumulateAuxLosses(const RoutingDecision& decision, at::Tensor* total) {
  for (const auto& [name, loss] : decision.aux_losses) {
    *total = *total + loss.to(total->scalar_type());
  }
}

double TransformerStackFlopsPerToken(const TransformerStackShape& shape) {
  const double d = shape.model_dim;
  const double attention = 8 * d * d + 4 * double(shape.tokens) * d;
  const double dense = 4 * d * shape.dense_hidden;
  const double expert = ExpertFlopsPerToken(shape);
  const double moe = 2 * d * shape.moe.num_experts() + shape.top_k * expert +
                     (shape.moe.shared_expert() ? expert : 0.0);
  const int64_t num_moe = NumMoeBlocks(shape);
  return shape.num_layers * attention + num_moe * moe + (shape.num_layers - num_moe) * dense;
}

int64_t NumMoeBlocks(const TransformerStackShape& shape) {
  int64_t count = 0;
  for (int64_t layer = 0; layer < shape.num_layers; ++layer) {
    if (IsMoeBlock(layer, shape.moe.moe_every())) ++count;
  }
  return count;
}

double ExpertFlopsPerToken(const TransformerStackShape& shape) {
  return 4.0 * shape.model_dim * shape.moe.expert_hidden();
}

int64_t ParametersPerExpert(const TransformerStackShape& shape) {
  return ExpertParameterCount(shape.model_dim, shape.moe.expert_hidden());
}

int64_t ActiveParametersPerToken(const TransformerStackShape& shape, int64_t total) {
  const double inactive_experts = shape.moe.num_experts() - shape.top_k;
  return total -
         std::llround(NumMoeBlocks(shape) * inactive_experts * double(ParametersPerExpert(shape)));
}

namespace {

// While alive, the global CPU generator runs a stream seeded with `seed`; on
// destruction it returns to the state (engine and cached normal samples) it
// had before.
class ScopedGeneratorStream {
 public:
  explicit ScopedGeneratorStream(uint64_t seed) {
    at::Generator global = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(global.mutex());
    saved_ = global.clone();
    global.set_current_seed(seed);  // also drops the cached normal samples
  }
  ~ScopedGeneratorStream() {
    at::Generator global = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(global.mutex());
    global.set_state(saved_.get_state());
  }
  ScopedGeneratorStream(const ScopedGeneratorStream&) = delete;
  ScopedGeneratorStream& operator=(const ScopedGeneratorStream&) = delete;

 private:
  at::Generator saved_;
};

uint64_t SplitMix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

}  // namespace

uint64_t RouterStreamKey() {
  at::Generator global = at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lock(global.mutex());
  at::Generator copy = global.clone();
  return copy.get<at::CPUGeneratorImpl>()->random64();
}

uint64_t RouterStreamSeed(uint64_t key, int64_t layer) {
  constexpr uint64_t kRouterSalt = 0x726f75746572ull;  // "router"
  return SplitMix64(SplitMix64(key ^ kRouterSalt) + static_cast<uint64_t>(layer));
}

absl::StatusOr<std::shared_ptr<Router>> CreateRouterOnOwnStream(const RouterSpec& spec,
                                                                const RouterDims& dims,
                                                                uint64_t key, int64_t layer) {
  ScopedGeneratorStream stream(RouterStreamSeed(key, layer));
  return CreateRouter(spec, dims);
}

absl::Status FieldError(absl::string_view field, absl::string_view message) {
  return absl::InvalidArgumentError(absl::StrCat(field, ": ", message));
}

ModelStats StackStats(const TransformerStackShape& shape, int64_t total_parameters,
                      double extra_flops_per_token) {
  ModelStats stats;
  stats.total_parameters = total_parameters;
  stats.active_parameters_per_token = ActiveParametersPerToken(shape, total_parameters);
  stats.flops_per_token = TransformerStackFlopsPerToken(shape) + extra_flops_per_token;
  stats.flops_per_expert_per_token = ExpertFlopsPerToken(shape);
  stats.num_moe_layers = NumMoeBlocks(shape);
  return stats;
}

}  // namespace moelab
