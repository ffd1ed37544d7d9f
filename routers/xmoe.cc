#include "routers/xmoe.h"

#include <ATen/ATen.h>
#include <torch/nn/init.h>

#include <cmath>
#include <memory>
#include <tuple>

#include "absl/strings/str_cat.h"
#include "routers/router_util.h"

namespace moelab {
namespace {

// F.normalize semantics: x / max(||x||_2, 1e-12) along the last dimension.
at::Tensor L2Normalize(const at::Tensor& x) {
  return x / x.norm(2, {-1}, /*keepdim=*/true).clamp_min(1e-12);
}

}  // namespace

XMoeOptions ResolvedXMoeOptions(const RouterSpec& spec) {
  XMoeOptions options = spec.xmoe();
  if (!options.has_projection_dim()) options.set_projection_dim(16);
  if (!options.has_initial_temperature()) options.set_initial_temperature(0.07f);
  return options;
}

XMoeRouter::XMoeRouter(const RouterSpec& spec, const RouterDims& dims)
    : spec_(spec), num_experts_(dims.num_experts), top_k_(WholeTopK(spec)) {
  const XMoeOptions options = ResolvedXMoeOptions(spec);
  projection_ = register_parameter(
      "projection",
      at::empty({options.projection_dim(), dims.model_dim}, at::kFloat).normal_(0.0, 0.02));
  // X-MoE initialises the expert embeddings orthogonally (gain 0.32); only
  // their directions matter after normalisation.
  at::Tensor embeddings = at::empty({dims.num_experts, options.projection_dim()}, at::kFloat);
  torch::nn::init::orthogonal_(embeddings, 0.32);
  expert_embeddings_ = register_parameter("expert_embeddings", embeddings);
  temperature_ =
      register_parameter("temperature", at::full({}, options.initial_temperature(), at::kFloat));
}

RoutingDecision XMoeRouter::Route(const at::Tensor& hidden, const RoutingContext& context) {
  at::Tensor routed = L2Normalize(at::matmul(hidden.to(at::kFloat), projection_.t()));  // [B, T, P]
  at::Tensor cosine = at::matmul(routed, L2Normalize(expert_embeddings_).t());          // [B, T, E]
  RoutingDecision d;
  d.logits = cosine / temperature_.clamp_min(0.01);
  d.gate_probs = ApplyGate(d.logits, SOFTMAX);
  d.selected = TopKMask(d.gate_probs.detach(), top_k_);
  d.combine_weights = d.gate_probs * d.selected.to(d.gate_probs.scalar_type());
  AddStandardAuxLosses(spec_, &d);
  return d;
}

namespace {

absl::Status ValidateXMoe(const RouterSpec& spec, const RouterDims& dims) {
  if (absl::Status s = CheckWholeTopK(spec, dims); !s.ok()) return s;
  const XMoeOptions options = ResolvedXMoeOptions(spec);
  if (options.projection_dim() < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("router.xmoe.projection_dim: must be >= 1, got ", options.projection_dim()));
  }
  // The temperature is floored at 0.01; below the floor it would get no
  // gradient and never move.
  if (!(options.initial_temperature() >= 0.01f) || !std::isfinite(options.initial_temperature())) {
    return absl::InvalidArgumentError(
        absl::StrCat("router.xmoe.initial_temperature: must be > 0 and at least the "
                     "floor 0.01, got ",
                     options.initial_temperature()));
  }
  return absl::OkStatus();
}

MOELAB_REGISTER_ROUTER(
    "xmoe",
    {.options = RouterSpec::kXmoe,
     .description = "X-MoE cosine router: low-dimensional projection, L2 "
                    "normalisation, learnable temperature (Chi et al., 2022)",
     .resolve = [](RouterSpec* spec,
                   const RouterDims&) { *spec->mutable_xmoe() = ResolvedXMoeOptions(*spec); },
     .validate = ValidateXMoe,
     .create = [](const RouterSpec& spec, const RouterDims& dims) -> std::shared_ptr<Router> {
       return std::make_shared<XMoeRouter>(spec, dims);
     }});

}  // namespace
}  // namespace moelab
