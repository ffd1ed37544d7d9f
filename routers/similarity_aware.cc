#include "routers/similarity_aware.h"

#include <ATen/ATen.h>

#include <cmath>
#include <limits>
#include <memory>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "routers/router_util.h"

namespace moelab {
namespace {

constexpr char kField[] = "router.similarity_aware";

absl::Status FieldError(absl::string_view field, absl::string_view problem) {
  return absl::InvalidArgumentError(absl::StrCat(kField, ".", field, ": ", problem));
}

absl::Status ValidateSimilarityAware(const RouterSpec& spec, const RouterDims& dims) {
  if (absl::Status s = CheckWholeTopK(spec, dims); !s.ok()) return s;
  const SimilarityAwareOptions options = ResolvedSimilarityAwareOptions(spec, dims);
  if (options.scale() != COSINE_SIMILARITY && options.scale() != RAW_DOT_PRODUCT) {
    return FieldError("scale", absl::StrCat("must be COSINE_SIMILARITY or "
                                            "RAW_DOT_PRODUCT, got ",
                                            options.scale()));
  }
  if (!(options.temperature() > 0)) {
    return FieldError("temperature", absl::StrCat("must be > 0, got ", options.temperature()));
  }
  if (!std::isfinite(options.temperature())) {
    return FieldError("temperature", absl::StrCat("must be finite, got ", options.temperature()));
  }
  switch (options.projection()) {
    case IDENTITY:
    case FULL:
      if (options.projection_rank() != 0) {
        return FieldError("projection_rank",
                          absl::StrCat("must be 0 unless projection is LOW_RANK, got ",
                                       options.projection_rank()));
      }
      break;
    case LOW_RANK:
      if (options.projection_rank() < 1 || options.projection_rank() > dims.model_dim) {
        return FieldError("projection_rank",
                          absl::StrCat("must be in [1, ", dims.model_dim,
                                       "] (the model dimension) with projection LOW_RANK, got ",
                                       options.projection_rank()));
      }
      break;
    default:
      return FieldError("projection", absl::StrCat("unknown value ", options.projection()));
  }
  if (options.gate() != SOFTMAX && options.gate() != SIGMOID) {
    return FieldError("gate", absl::StrCat("unknown value ", options.gate()));
  }
  return CheckRenormalizeLetsTheGateLearn(spec, options.renormalize(),
                                          absl::StrCat(kField, ".renormalize"), "p");
}

}  // namespace

SimilarityAwareOptions ResolvedSimilarityAwareOptions(const RouterSpec& spec,
                                                      const RouterDims& dims) {
  SimilarityAwareOptions options = spec.similarity_aware();
  if (options.scale() == SIMILARITY_SCALE_UNSPECIFIED) {
    options.set_scale(COSINE_SIMILARITY);
  }
  if (!options.has_temperature()) {
    // The paper's tau = 1 belongs to its raw dot products.
    options.set_temperature(options.scale() == RAW_DOT_PRODUCT ? 1.0f : kDefaultCosineTemperature);
  }
  if (options.projection() == PROJECTION_UNSPECIFIED) {
    options.set_projection(IDENTITY);
  }
  if (options.gate() == GATE_UNSPECIFIED) options.set_gate(SOFTMAX);
  if (!options.has_causal()) options.set_causal(dims.causal_model);
  return options;
}

SimilarityAwareRouter::SimilarityAwareRouter(const RouterSpec& spec, const RouterDims& dims)
    : spec_(spec), options_(ResolvedSimilarityAwareOptions(spec, dims)), top_k_(WholeTopK(spec)) {
  TORCH_CHECK(top_k_ >= 1 && top_k_ <= dims.num_experts, "similarity_aware: top_k=", spec.top_k(),
              " with ", dims.num_experts, " experts; validate the spec first");
  const int64_t model_dim = dims.model_dim;
  gate_weight_ = register_parameter("gate_weight", InitGateWeight(dims.num_experts, model_dim));
  if (options_.projection() == FULL) {
    similarity_weight_ = register_parameter("similarity_weight", at::eye(model_dim));
  } else if (options_.projection() == LOW_RANK) {
    // Orthonormal columns Q make W_s = Q Q^T an orthogonal projection: the
    // rank-limited counterpart of the paper's W_s = I.
    at::Tensor q = std::get<0>(at::linalg_qr(at::randn({model_dim, options_.projection_rank()})));
    similarity_a_ = register_parameter("similarity_a", q.clone());
    similarity_b_ = register_parameter("similarity_b", q.clone());
  }
}

at::Tensor SimilarityAwareRouter::Similarity(const at::Tensor& hidden,
                                             const at::Tensor& padding_mask) const {
  TORCH_CHECK(hidden.dim() == 3, "similarity_aware: hidden must be [B, T, D], got ",
              hidden.sizes());
  at::Tensor u = hidden.to(at::kFloat);  // [B, T, D]
  if (options_.scale() == COSINE_SIMILARITY) {
    // û_i = u_i / max(||u_i||, 1e-12): a zero vector stays zero, never NaN.
    u = u / at::linalg_vector_norm(u, 2, /*dim=*/{-1}, /*keepdim=*/true).clamp_min(1e-12);
  }
  const int64_t tokens = u.size(1);
  // u_i^T W_s u_j as (U W_s) U^T, or (U A)(U B)^T for W_s = A B^T.
  at::Tensor left = u, right = u;
  if (options_.projection() == FULL) {
    left = at::matmul(u, similarity_weight_);
  } else if (options_.projection() == LOW_RANK) {
    left = at::matmul(u, similarity_a_);
    right = at::matmul(u, similarity_b_);
  }
  at::Tensor scores =
      at::matmul(left, right.transpose(1, 2)) / options_.temperature();  // [B, T, T]

  const at::TensorOptions bool_options = u.options().dtype(at::kBool);
  at::Tensor allowed = at::ones({1, tokens, tokens}, bool_options);
  if (options_.causal()) {
    at::Tensor position = at::arange(tokens, u.options().dtype(at::kLong));
    allowed = (position.unsqueeze(0) <= position.unsqueeze(1)).unsqueeze(0);
  }
  if (padding_mask.defined()) {
    TORCH_CHECK(padding_mask.dim() == 2 && padding_mask.size(0) == u.size(0) &&
                    padding_mask.size(1) == tokens,
                "similarity_aware: padding_mask must be [B, T] = [", u.size(0), ", ", tokens,
                "], got ", padding_mask.sizes());
    allowed = allowed & padding_mask.to(at::kBool).unsqueeze(1);
  }
  at::Tensor lonely = at::logical_not(allowed.any(-1, /*keepdim=*/true));
  allowed = allowed | (lonely & at::eye(tokens, bool_options).unsqueeze(0));
  scores = scores.masked_fill(at::logical_not(allowed), -std::numeric_limits<float>::infinity());
  return at::softmax(scores, -1);
}

RoutingDecision SimilarityAwareRouter::Route(const at::Tensor& hidden,
                                             const RoutingContext& context) {
  TORCH_CHECK(hidden.dim() == 3 && hidden.size(2) == gate_weight_.size(1),
              "similarity_aware: hidden must be [B, T, ", gate_weight_.size(1), "], got ",
              hidden.sizes());
  const at::Tensor u = hidden.to(at::kFloat);
  RoutingDecision d;
  d.logits = GateLogits(u, gate_weight_);  // [B, T, E]
  d.gate_probs = ApplyGate(d.logits, options_.gate());
  if (options_.ablate_aggregation()) {
    // W = I: p is r itself, bit for bit (not S at a vanishing temperature,
    // which would only approach it), so the row differs from the full router
    // in the aggregation alone. S is not formed and W_s (FULL, LOW_RANK) is
    // unused, so it gets no gradient.
    d.aggregated_probs = d.gate_probs;
    if (!context.training) {
      // W = I as DescribeAggregation would describe it: W_ii = 1 and
      // exp(H(W_i)) = exp(0) = 1, without a [B, T, T] identity.
      const at::Tensor ones = at::ones({u.size(0), u.size(1)}, u.options());
      d.aggregation_self_weight = ones;
      d.aggregation_effective_neighbours = ones.clone();
    }
  } else {
    // p_i = sum_j S_ij r_j: [B, T, T] x [B, T, E].
    const at::Tensor similarity = Similarity(u, context.padding_mask);
    d.aggregated_probs = at::matmul(similarity, d.gate_probs);
    // The diagnostics are read only in evaluation (the trainer's validation
    // and probe passes, the route tool without --training), and describing S
    // (a log and two selects over [B, T, T]) costs a large share of this
    // forward at sequence lengths in the thousands: skipped in training.
    if (!context.training) DescribeAggregation(similarity, &d);
  }
  d.selected = TopKMask(d.aggregated_probs.detach(), top_k_);
  d.combine_weights = SelectedWeights(d.aggregated_probs, d.selected, options_.renormalize());
  AddStandardAuxLosses(spec_, &d);
  return d;
}

MOELAB_REGISTER_ROUTER(
    "similarity_aware",
    {.options = RouterSpec::kSimilarityAware,
     .description = "Similarity-Aware SMoE (graph of tokens): top-k of p_i = sum_j S_ij "
                    "r_j with S = softmax(U W_s U^T / tau) on unit-length rows of U "
                    "(COSINE_SIMILARITY, ours) or raw ones (RAW_DOT_PRODUCT, the paper's)",
     .resolve =
         [](RouterSpec* spec, const RouterDims& dims) {
           *spec->mutable_similarity_aware() = ResolvedSimilarityAwareOptions(*spec, dims);
         },
     .validate = ValidateSimilarityAware,
     .create = [](const RouterSpec& spec, const RouterDims& dims) -> std::shared_ptr<Router> {
       return std::make_shared<SimilarityAwareRouter>(spec, dims);
     }});

}  // namespace moelab
