#include "routers/expert_choice.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <tuple>

#include "absl/strings/str_cat.h"
#include "routers/router_util.h"

namespace moelab {

ExpertChoiceOptions ResolvedExpertChoiceOptions(const RouterSpec& spec) {
  ExpertChoiceOptions options = spec.expert_choice();
  if (!options.has_capacity_factor()) options.set_capacity_factor(1.0f);
  return options;
}

int64_t ExpertChoiceCapacity(double capacity_factor, int64_t tokens, int64_t k,
                             int64_t num_experts) {
  const auto c = static_cast<int64_t>(std::ceil(capacity_factor * tokens * k / num_experts));
  return std::min(tokens, c);
}

ExpertChoiceRouter::ExpertChoiceRouter(const RouterSpec& spec, const RouterDims& dims)
    : spec_(spec),
      capacity_factor_(ResolvedExpertChoiceOptions(spec).capacity_factor()),
      num_experts_(dims.num_experts),
      top_k_(WholeTopK(spec)) {
  gate_weight_ =
      register_parameter("gate_weight", InitGateWeight(dims.num_experts, dims.model_dim));
}

RoutingDecision ExpertChoiceRouter::Route(const at::Tensor& hidden, const RoutingContext& context) {
  const int64_t tokens = hidden.size(1);
  RoutingDecision d;
  d.logits = GateLogits(hidden, gate_weight_);  // [B, T, E]
  d.gate_probs = ApplyGate(d.logits, SOFTMAX);  // r
  const int64_t capacity = ExpertChoiceCapacity(capacity_factor_, tokens, top_k_, num_experts_);
  // Top-c along the token axis: [B, c, E] token indices per expert.
  at::Tensor picks = std::get<1>(at::topk(d.gate_probs.detach(), capacity, /*dim=*/1));
  d.selected = at::zeros_like(d.gate_probs, d.gate_probs.options().dtype(at::kBool))
                   .scatter_(1, picks, true);
  d.combine_weights = d.gate_probs * d.selected.to(d.gate_probs.scalar_type());
  AddStandardAuxLosses(spec_, &d);
  return d;
}

namespace {

absl::Status ValidateExpertChoice(const RouterSpec& spec, const RouterDims& dims) {
  if (absl::Status s = CheckWholeTopK(spec, dims); !s.ok()) return s;
  const float factor = ResolvedExpertChoiceOptions(spec).capacity_factor();
  // c = 0 would route nothing at all.
  if (!(factor > 0) || !std::isfinite(factor)) {
    return absl::InvalidArgumentError(
        absl::StrCat("router.expert_choice.capacity_factor: must be > 0, got ", factor));
  }
  return absl::OkStatus();
}

MOELAB_REGISTER_ROUTER("expert_choice",
                       {.options = RouterSpec::kExpertChoice,
                        .description = "each expert takes its top-c tokens of the sequence, "
                                       "c = capacity_factor * T * k / E (Zhou et al., 2022)",
                        .resolve =
                            [](RouterSpec* spec, const RouterDims&) {
                              *spec->mutable_expert_choice() = ResolvedExpertChoiceOptions(*spec);
                            },
                        .validate = ValidateExpertChoice,
                        .create = [](const RouterSpec& spec,
                                     const RouterDims& dims) -> std::shared_ptr<Router> {
                          return std::make_shared<ExpertChoiceRouter>(spec, dims);
                        }});

}  // namespace
}  // namespace moelab
