#include "routers/unified.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <utility>

#include "absl/strings/str_cat.h"
#include "core/batch_collective.h"
#include "routers/router_util.h"

namespace moelab {

UnifiedOptions ResolvedUnifiedOptions(const RouterSpec& spec) {
  UnifiedOptions options = spec.unified();
  if (!options.has_alpha() && !options.has_beta()) {
    options.set_alpha(0.5f);
    options.set_beta(0.5f);
  } else if (!options.has_beta()) {
    options.set_beta(1.0f - options.alpha());
  } else if (!options.has_alpha()) {
    options.set_alpha(1.0f - options.beta());
  }
  if (options.token_score() == TOKEN_SCORE_UNSPECIFIED) {
    options.set_token_score(SIGMOID_SCALED);
  }
  // Ours: PER_SEQUENCE is the authors' training-free selection, PER_POSITION
  // that of their from-scratch LM code.
  if (options.scope() == SCOPE_UNSPECIFIED) options.set_scope(PER_SEQUENCE);
  return options;
}

at::Tensor UnifiedScore(const at::Tensor& logits, const UnifiedOptions& options,
                        at::Tensor* expert_part_out) {
  const int64_t batch = logits.size(0), tokens = logits.size(1);
  const int64_t num_experts = logits.size(2);
  at::Tensor expert_part = at::softmax(logits, -1);
  at::Tensor token_part;
  if (options.token_score() == SOFTMAX_OVER_TOKENS) {
    switch (options.scope()) {
      case PER_BATCH:
        token_part = at::softmax(logits.reshape({batch * tokens, num_experts}), 0)
                         .reshape({batch, tokens, num_experts});
        break;
      case PER_POSITION:
        token_part = at::softmax(logits, 0);
        break;
      default:
        token_part = at::softmax(logits, 1);
    }
  } else {
    // A logit of 0 maps to 1/E, the value of a uniform softmax.
    token_part = at::sigmoid(logits) * (2.0 / num_experts);
  }
  if (expert_part_out != nullptr) *expert_part_out = expert_part;
  return static_cast<double>(options.alpha()) * expert_part +
         static_cast<double>(options.beta()) * token_part;
}

int64_t UnifiedBudget(SelectionScope scope, int64_t batch, int64_t tokens, int64_t num_experts,
                      double k) {
  int64_t rows = tokens;  // PER_SEQUENCE
  if (scope == PER_BATCH) rows = batch * tokens;
  if (scope == PER_POSITION) rows = batch;
  const int64_t budget = std::lround(static_cast<double>(rows) * k);
  return std::clamp<int64_t>(budget, 1, rows * num_experts);
}

UnifiedRouter::UnifiedRouter(const RouterSpec& spec, const RouterDims& dims)
    : spec_(spec),
      options_(ResolvedUnifiedOptions(spec)),
      num_experts_(dims.num_experts),
      top_k_(spec.top_k()) {
  gate_weight_ =
      register_parameter("gate_weight", InitGateWeight(dims.num_experts, dims.model_dim));
}

RoutingDecision UnifiedRouter::Route(const at::Tensor& hidden, const RoutingContext& context) {
  const int64_t batch = hidden.size(0), tokens = hidden.size(1);
  RoutingDecision d;
  d.logits = GateLogits(hidden, gate_weight_);  // [B, T, E]
  at::Tensor score = UnifiedScore(d.logits, options_, &d.gate_probs);
  // A selection across sequences spans the whole batch under data
  // parallelism too: every shard's scores are gathered (core/batch_collective.h)
  // and this shard's rows of the whole batch's selection kept.
  const int64_t shards = options_.scope() == PER_SEQUENCE ? 1 : BatchShards();
  const int64_t all = shards * batch;
  at::Tensor ranked = score.detach();
  if (shards > 1) ranked = GatherBatchShards(ranked).reshape({all, tokens, num_experts_});
  const int64_t budget = UnifiedBudget(options_.scope(), all, tokens, num_experts_, top_k_);
  switch (options_.scope()) {
    case PER_BATCH:  // one [1, B*T*E] matrix
      d.selected = TopKMask(ranked.reshape({1, -1}), budget).reshape({all, tokens, num_experts_});
      break;
    case PER_POSITION:  // [T, B*E]: position t's pairs across the batch
      d.selected = TopKMask(ranked.transpose(0, 1).reshape({tokens, all * num_experts_}), budget)
                       .reshape({tokens, all, num_experts_})
                       .transpose(0, 1);
      break;
    default:  // PER_SEQUENCE: [B, T*E], flattened as t*E+e
      d.selected = TopKMask(ranked.reshape({batch, tokens * num_experts_}), budget)
                       .reshape({batch, tokens, num_experts_});
  }
  if (shards > 1) {
    const int64_t first = BatchShardIndex() * batch;
    d.selected = d.selected.slice(0, first, first + batch).contiguous();
  }
  d.combine_weights = score * d.selected.to(score.scalar_type());
  AddStandardAuxLosses(spec_, &d);
  return d;
}

std::string UnifiedRouter::BatchScope() const {
  if (options_.scope() == PER_SEQUENCE) return "";
  const std::string name = options_.scope() == PER_BATCH ? "PER_BATCH" : "PER_POSITION";
  std::string scope = "unified " + name +
                      " top-c selection: over the whole batch (scores gathered from every worker)";
  if (options_.token_score() == SOFTMAX_OVER_TOKENS) {
    scope += "; its SOFTMAX_OVER_TOKENS score normalises over each worker's shard";
  }
  return scope;
}

bool UnifiedRouter::IsCausal(bool causal_model) const { return options_.scope() == PER_POSITION; }

namespace {

absl::Status ValidateUnified(const RouterSpec& spec, const RouterDims& dims) {
  const double k = spec.top_k();
  if (!(k > 0) || k > dims.num_experts) {
    return absl::InvalidArgumentError(
        absl::StrCat("router.top_k: router 'unified' needs 0 < k <= ", dims.num_experts,
                     " (experts per token on average), got ", k));
  }
  const UnifiedOptions options = ResolvedUnifiedOptions(spec);
  for (const auto& [name, value] : {std::pair<const char*, float>{"alpha", options.alpha()},
                                    std::pair<const char*, float>{"beta", options.beta()}}) {
    if (!(value >= 0 && value <= 1)) {
      return absl::InvalidArgumentError(
          absl::StrCat("router.unified.", name, ": must be in [0, 1], got ", value));
    }
  }
  if (std::abs(static_cast<double>(options.alpha()) + options.beta() - 1.0) > 1e-6) {
    return absl::InvalidArgumentError(
        absl::StrCat("router.unified.alpha: alpha + beta must equal 1, got ", options.alpha(),
                     " + ", options.beta()));
  }
  if (options.token_score() != SIGMOID_SCALED && options.token_score() != SOFTMAX_OVER_TOKENS) {
    return absl::InvalidArgumentError(
        absl::StrCat("router.unified.token_score: must be SIGMOID_SCALED or "
                     "SOFTMAX_OVER_TOKENS, got ",
                     options.token_score()));
  }
  if (options.scope() != PER_SEQUENCE && options.scope() != PER_BATCH &&
      options.scope() != PER_POSITION) {
    return absl::InvalidArgumentError(
        absl::StrCat("router.unified.scope: must be PER_SEQUENCE, PER_BATCH or "
                     "PER_POSITION, got ",
                     options.scope()));
  }
  return absl::OkStatus();
}

MOELAB_REGISTER_ROUTER(
    "unified",
    {.options = RouterSpec::kUnified,
     .description = "USMoE: top-c (token, expert) pairs of alpha * softmax "
                    "over experts + beta * token score, c = round(T * k) per "
                    "scope; fractional k",
     .resolve = [](RouterSpec* spec,
                   const RouterDims&) { *spec->mutable_unified() = ResolvedUnifiedOptions(*spec); },
     .validate = ValidateUnified,
     .create = [](const RouterSpec& spec, const RouterDims& dims) -> std::shared_ptr<Router> {
       return std::make_shared<UnifiedRouter>(spec, dims);
     },
     .fractional_top_k = true});

}  // namespace
}  // namespace moelab
