#include "routers/attention_aware.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <cmath>
#include <limits>
#include <memory>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "routers/router_util.h"

namespace moelab {
namespace {

absl::Status FieldError(absl::string_view field, absl::string_view problem) {
  return absl::InvalidArgumentError(absl::StrCat("router.attention_aware.", field, ": ", problem));
}

absl::Status ValidateAttentionAware(const RouterSpec& spec, const RouterDims& dims) {
  if (absl::Status s = CheckWholeTopK(spec, dims); !s.ok()) return s;
  const AttentionAwareOptions options = ResolvedAttentionAwareOptions(spec);
  if (!(options.sigma() > 0)) {
    return FieldError("sigma", absl::StrCat("must be > 0, got ", options.sigma()));
  }
  if (!std::isfinite(options.sigma())) {
    return FieldError("sigma", absl::StrCat("must be finite, got ", options.sigma()));
  }
  if (options.likelihood_scale() != RELATIVE && options.likelihood_scale() != ABSOLUTE) {
    return FieldError("likelihood_scale", absl::StrCat("must be RELATIVE or ABSOLUTE, got ",
                                                       options.likelihood_scale()));
  }
  if (options.head_selection() != LOWEST_ENTROPY &&
      options.head_selection() != LOWEST_MEAN_ENTROPY &&
      options.head_selection() != ALL_HEADS_WEIGHTED) {
    return FieldError("head_selection", absl::StrCat("unknown value ", options.head_selection()));
  }
  if (options.gate() != SOFTMAX && options.gate() != SIGMOID) {
    return FieldError("gate", absl::StrCat("unknown value ", options.gate()));
  }
  return CheckRenormalizeLetsTheGateLearn(spec, options.renormalize(),
                                          "router.attention_aware.renormalize", "p");
}

// A missing attention is a bug in the model (NeedsAttention() is true), with
// the ablation too, even where the posterior is not computed.
void CheckAttentionIsFilled(const RoutingContext& context) {
  TORCH_CHECK(context.attention_probs.defined() && context.attention_values.defined(),
              "attention_aware: the model must fill RoutingContext."
              "attention_probs and attention_values (NeedsAttention() is true)");
}

}  // namespace

AttentionAwareOptions ResolvedAttentionAwareOptions(const RouterSpec& spec) {
  AttentionAwareOptions options = spec.attention_aware();
  if (!options.has_sigma()) options.set_sigma(1.0f);
  if (options.likelihood_scale() == LIKELIHOOD_SCALE_UNSPECIFIED) {
    options.set_likelihood_scale(RELATIVE);
  }
  if (options.head_selection() == HEAD_SELECTION_UNSPECIFIED) {
    options.set_head_selection(LOWEST_ENTROPY);
  }
  if (options.gate() == GATE_UNSPECIFIED) options.set_gate(SOFTMAX);
  return options;
}

AttentionAwareRouter::AttentionAwareRouter(const RouterSpec& spec, const RouterDims& dims)
    : spec_(spec), options_(ResolvedAttentionAwareOptions(spec)), top_k_(WholeTopK(spec)) {
  TORCH_CHECK(top_k_ >= 1 && top_k_ <= dims.num_experts, "attention_aware: top_k=", spec.top_k(),
              " with ", dims.num_experts, " experts; validate the spec first");
  gate_weight_ =
      register_parameter("gate_weight", InitGateWeight(dims.num_experts, dims.model_dim));
}

at::Tensor AttentionAwareRouter::Posterior(const at::Tensor& hidden,
                                           const RoutingContext& context) const {
  CheckAttentionIsFilled(context);
  TORCH_CHECK(hidden.dim() == 3, "attention_aware: hidden must be [B, T, D], got ", hidden.sizes());
  const int64_t batch = hidden.size(0), tokens = hidden.size(1);
  const at::Tensor& probs = context.attention_probs;
  const at::Tensor& values = context.attention_values;
  TORCH_CHECK(probs.dim() == 4 && probs.size(0) == batch && probs.size(2) == tokens &&
                  probs.size(3) == tokens,
              "attention_aware: attention_probs must be [B, H, T, T] with B=", batch,
              ", T=", tokens, ", got ", probs.sizes());
  TORCH_CHECK(values.dim() == 4 && values.size(0) == batch && values.size(1) == probs.size(1) &&
                  values.size(2) == tokens && values.size(3) == hidden.size(2),
              "attention_aware: attention_values must be [B, H, T, D] = [", batch, ", ",
              probs.size(1), ", ", tokens, ", ", hidden.size(2), "], got ", values.sizes());
  const at::Tensor u = hidden.to(at::kFloat).unsqueeze(1);  // [B, 1, T, D]
  const at::Tensor a = probs.to(at::kFloat);                // [B, H, T, T]
  const at::Tensor v = values.to(at::kFloat);               // [B, H, T, D]

  // -||u_i - v_j||^2 / (2 s_i^2) up to -||u_i||^2 / (2 s_i^2), which is
  // constant along j and cancels in the normalisation over j; expanding the
  // square avoids a [B, H, T, T, D] difference tensor. s_i = sigma
  // (ABSOLUTE) or sigma ||u_i|| (RELATIVE, ||u_i||^2 clamped to >= 1e-12).
  const double two_sigma_sq = 2.0 * options_.sigma() * options_.sigma();
  at::Tensor log_likelihood =
      (2.0 * at::matmul(u, v.transpose(-1, -2)) - (v * v).sum(-1).unsqueeze(-2)) /
      two_sigma_sq;  // [B, H, T, T]
  if (options_.likelihood_scale() == RELATIVE) {
    const at::Tensor norm_sq = (u * u).sum(-1, /*keepdim=*/true).clamp_min(1e-12);  // [B, 1, T, 1]
    log_likelihood = log_likelihood / norm_sq;
  }

  const at::TensorOptions bool_options = a.options().dtype(at::kBool);
  at::Tensor positive = a > 0;
  at::Tensor admissible = positive;
  if (context.padding_mask.defined()) {
    TORCH_CHECK(context.padding_mask.dim() == 2 && context.padding_mask.size(0) == batch &&
                    context.padding_mask.size(1) == tokens,
                "attention_aware: padding_mask must be [B, T] = [", batch, ", ", tokens, "], got ",
                context.padding_mask.sizes());
    admissible = admissible & context.padding_mask.to(at::kBool).unsqueeze(1).unsqueeze(1);
  }
  at::Tensor lonely = at::logical_not(admissible.any(-1, /*keepdim=*/true));
  admissible = admissible | (lonely & at::eye(tokens, bool_options));
  // log A where A > 0 (0 elsewhere, used only by lonely rows); the inner
  // `where` keeps log's gradient at A = 0 from becoming 0 * inf = NaN.
  at::Tensor log_prior =
      at::where(positive, at::log(at::where(positive, a, at::ones_like(a))), at::zeros_like(a));
  at::Tensor log_joint = at::where(admissible, log_prior + log_likelihood,
                                   at::full_like(a, -std::numeric_limits<float>::infinity()));
  return at::softmax(log_joint, -1);
}

AttentionAwareRouter::Aggregation AttentionAwareRouter::Aggregate(
    const at::Tensor& hidden, const RoutingContext& context) const {
  const at::Tensor posterior = Posterior(hidden, context);  // [B, H, T, T]
  const int64_t batch = posterior.size(0), tokens = posterior.size(2);
  // Entropy of each posterior row, [B, H, T]; 0 log 0 = 0 taken without
  // forming log 0, which would make the gradient NaN.
  const at::Tensor nonzero = posterior > 0;
  const at::Tensor safe_log = at::log(at::where(nonzero, posterior, at::ones_like(posterior)));
  const at::Tensor entropy = -(posterior * safe_log).sum(-1);

  Aggregation aggregation;
  switch (options_.head_selection()) {
    case ALL_HEADS_WEIGHTED: {
      const at::Tensor head_weight = at::softmax(-entropy, 1);  // [B, H, T]
      aggregation.weights = (head_weight.unsqueeze(-1) * posterior).sum(1);
      // The largest weight softmax(-H) is the lowest entropy.
      aggregation.head = at::argmin(entropy.detach(), 1);  // [B, T]
      // The mixed rows' entropy is not any head's: row_entropy undefined.
      break;
    }
    case LOWEST_MEAN_ENTROPY: {
      at::Tensor mean_entropy;  // [B, H]
      if (context.padding_mask.defined()) {
        const at::Tensor real = context.padding_mask.to(at::kFloat).unsqueeze(1);  // [B, 1, T]
        mean_entropy = (entropy * real).sum(-1) / real.sum(-1).clamp_min(1.0);
      } else {
        mean_entropy = entropy.mean(-1);
      }
      const at::Tensor head = at::argmin(mean_entropy.detach(), 1);  // [B]
      aggregation.weights =
          posterior.gather(1, head.view({batch, 1, 1, 1}).expand({batch, 1, tokens, tokens}))
              .squeeze(1);
      aggregation.head = head.unsqueeze(1).expand({batch, tokens}).contiguous();
      aggregation.row_entropy =
          entropy.detach().gather(1, aggregation.head.unsqueeze(1)).squeeze(1);
      break;
    }
    default: {                                                  // LOWEST_ENTROPY, per token
      const at::Tensor head = at::argmin(entropy.detach(), 1);  // [B, T]
      aggregation.weights =
          posterior.gather(1, head.view({batch, 1, tokens, 1}).expand({batch, 1, tokens, tokens}))
              .squeeze(1);
      aggregation.head = head;
      aggregation.row_entropy = entropy.detach().gather(1, head.unsqueeze(1)).squeeze(1);
    }
  }
  return aggregation;
}

RoutingDecision AttentionAwareRouter::Route(const at::Tensor& hidden,
                                            const RoutingContext& context) {
  TORCH_CHECK(hidden.dim() == 3 && hidden.size(2) == gate_weight_.size(1),
              "attention_aware: hidden must be [B, T, ", gate_weight_.size(1), "], got ",
              hidden.sizes());
  const at::Tensor u = hidden.to(at::kFloat);
  RoutingDecision d;
  d.logits = GateLogits(u, gate_weight_);  // [B, T, E]
  d.gate_probs = ApplyGate(d.logits, options_.gate());
  if (options_.ablate_aggregation()) {
    CheckAttentionIsFilled(context);
    // W = I: p is r itself, bit for bit, so the row differs from the full
    // router in the aggregation alone.
    d.aggregated_probs = d.gate_probs;
    if (!context.training) {
      // The head the full router would aggregate with, so that an ablation
      // row's head change between epochs compares with the full router's.
      // Only the choice (an argmin, no gradient) is kept: no graph.
      at::NoGradGuard no_grad;
      d.aggregation_head = Aggregate(u, context).head;
      // W = I as DescribeAggregation would describe it: W_ii = 1 and
      // exp(H(W_i)) = exp(0) = 1, without a [B, T, T] identity.
      const at::Tensor ones = at::ones({u.size(0), u.size(1)}, u.options());
      d.aggregation_self_weight = ones;
      d.aggregation_effective_neighbours = ones.clone();
    }
  } else {
    // p_i = sum_j A^p_{h*}[i, j] r_j: [B, T, T] x [B, T, E].
    const Aggregation aggregation = Aggregate(u, context);
    d.aggregated_probs = at::matmul(aggregation.weights, d.gate_probs);
    // The diagnostics are read only in evaluation (the trainer's validation
    // and probe passes, the route tool without --training), and describing W
    // over [B, T, T] costs a large share of this forward at sequence lengths
    // in the thousands: skipped in training. A chosen head's row entropy is
    // already known, so only ALL_HEADS_WEIGHTED recomputes it from W.
    if (!context.training) {
      DescribeAggregation(aggregation.weights, &d, aggregation.row_entropy);
      d.aggregation_head = aggregation.head;
    }
  }
  d.selected = TopKMask(d.aggregated_probs.detach(), top_k_);
  d.combine_weights = SelectedWeights(d.aggregated_probs, d.selected, options_.renormalize());
  AddStandardAuxLosses(spec_, &d);
  return d;
}

MOELAB_REGISTER_ROUTER(
    "attention_aware",
    {.options = RouterSpec::kAttentionAware,
     .description = "Attention-Aware SMoE (graph of tokens): top-k of p_i = sum_j "
                    "A^p_h*[i,j] r_j, the posterior of the preceding attention's "
                    "lowest-entropy head; sigma relative to ||u_i|| (RELATIVE, ours) or "
                    "absolute (ABSOLUTE, the paper's)",
     .resolve =
         [](RouterSpec* spec, const RouterDims&) {
           *spec->mutable_attention_aware() = ResolvedAttentionAwareOptions(*spec);
         },
     .validate = ValidateAttentionAware,
     .create = [](const RouterSpec& spec, const RouterDims& dims) -> std::shared_ptr<Router> {
       return std::make_shared<AttentionAwareRouter>(spec, dims);
     }});

}  // namespace moelab
