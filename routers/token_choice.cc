#include "routers/token_choice.h"

#include <ATen/ATen.h>

#include <cmath>
#include <memory>
#include <tuple>

#include "absl/strings/str_cat.h"
#include "core/batch_collective.h"
#include "routers/router_util.h"

namespace moelab {

TokenChoiceOptions ResolvedTokenChoiceOptions(const RouterSpec& spec) {
  TokenChoiceOptions options = spec.token_choice();
  if (options.gate() == GATE_UNSPECIFIED) options.set_gate(SOFTMAX);
  if (options.drop_policy() == DROP_POLICY_UNSPECIFIED) {
    options.set_drop_policy(DROP_BY_SCORE);
  }
  return options;
}

int64_t TokenChoiceCapacity(double capacity_factor, int64_t num_tokens, int64_t k,
                            int64_t num_experts) {
  return static_cast<int64_t>(std::ceil(capacity_factor * num_tokens * k / num_experts));
}

TokenChoiceRouter::TokenChoiceRouter(const RouterSpec& spec, const RouterDims& dims)
    : spec_(spec),
      options_(ResolvedTokenChoiceOptions(spec)),
      num_experts_(dims.num_experts),
      top_k_(WholeTopK(spec)) {
  gate_weight_ =
      register_parameter("gate_weight", InitGateWeight(dims.num_experts, dims.model_dim));
}

RoutingDecision TokenChoiceRouter::Route(const at::Tensor& hidden, const RoutingContext& context) {
  const int64_t batch = hidden.size(0), tokens = hidden.size(1);
  const int64_t num_tokens = batch * tokens;
  at::Tensor input = hidden;
  if (context.training && options_.jitter_eps() > 0) {
    const double eps = options_.jitter_eps();
    input = hidden * at::empty_like(hidden).uniform_(1.0 - eps, 1.0 + eps);
  }

  RoutingDecision d;
  d.logits = GateLogits(input, gate_weight_);           // [B, T, E]
  d.gate_probs = ApplyGate(d.logits, options_.gate());  // r
  // Indices in descending r: column j holds each token's (j+1)-th choice.
  at::Tensor choices = std::get<1>(at::topk(d.gate_probs.detach(), top_k_, -1));
  at::Tensor chosen = IndicesToMask(choices, num_experts_);  // [B, T, E]
  at::Tensor weights = SelectedWeights(d.gate_probs, chosen, options_.renormalize());

  if (options_.capacity_factor() <= 0) {
    d.selected = chosen;
    d.combine_weights = weights;
    AddStandardAuxLosses(spec_, &d, chosen);
    return d;
  }

  // Capacity is the whole batch's: under data parallelism the experts'
  // queues and scores span every rank's shard (core/batch_collective.h), so
  // that the decisions are those of one process on the whole batch.
  const int64_t shards = BatchShards(), shard = BatchShardIndex();
  const int64_t capacity =
      TokenChoiceCapacity(options_.capacity_factor(), num_tokens * shards, top_k_, num_experts_);
  at::Tensor kept = chosen;
  if (capacity < num_tokens * shards) {  // otherwise no expert can overflow
    at::Tensor flat_chosen = chosen.reshape({num_tokens, num_experts_});
    if (options_.drop_policy() == DROP_BY_SCORE) {
      // Each expert keeps its `capacity` highest-scoring pairs; unchosen
      // pairs rank below every chosen one (r >= 0) and are masked off again.
      at::Tensor ranked =
          d.gate_probs.detach().reshape({num_tokens, num_experts_}).masked_fill(~flat_chosen, -1.0);
      at::Tensor all_ranked =
          GatherBatchShards(ranked).reshape({shards * num_tokens, num_experts_});
      at::Tensor best = std::get<1>(at::topk(all_ranked, capacity, /*dim=*/0));
      kept = at::zeros({shards * num_tokens, num_experts_}, flat_chosen.options())
                 .scatter_(0, best, true)
                 .slice(0, shard * num_tokens, (shard + 1) * num_tokens) &
             flat_chosen;
    } else {
      // Queue pairs in priority order (every first choice, then every second
      // choice ..., each in flattened position order, shard after shard);
      // an expert accepts the first `capacity` pairs of its queue.
      at::Tensor by_choice = at::one_hot(choices.reshape({num_tokens, top_k_}), num_experts_)
                                 .transpose(0, 1);                   // [k, N, E]
      at::Tensor every_shard = GatherBatchShards(by_choice.sum(1));  // [shards, k, E]
      at::Tensor per_choice = every_shard.sum(0);                    // [k, E]
      // Pairs queued ahead of this shard's block of choice j at expert e:
      // every shard's earlier choices, then earlier shards' choice j.
      at::Tensor ahead = per_choice.cumsum(0) - per_choice + every_shard.slice(0, 0, shard).sum(0);
      at::Tensor queue_position = by_choice.cumsum(1) + ahead.unsqueeze(1);  // [k, N, E]
      kept = ((by_choice > 0) & (queue_position <= capacity)).any(0);
    }
    kept = kept.reshape({batch, tokens, num_experts_});
  }
  d.selected = kept;
  d.dropped = (chosen & ~kept).any(-1);
  d.combine_weights = weights * kept.to(weights.scalar_type());
  // The load-balance loss counts the choices before capacity (Switch at
  // k = 1, Megatron-Core) unless the spec asks for the kept pairs.
  AddStandardAuxLosses(spec_, &d, chosen);
  return d;
}

std::string TokenChoiceRouter::BatchScope() const {
  if (options_.capacity_factor() <= 0) return "";
  return absl::StrCat(
      "token choice capacity (",
      options_.drop_policy() == DROP_BY_SCORE ? "DROP_BY_SCORE" : "DROP_BY_POSITION",
      "): over the whole batch (",
      options_.drop_policy() == DROP_BY_SCORE ? "scores gathered from every worker)"
                                              : "queue counts exchanged between workers)");
}

bool TokenChoiceRouter::IsCausal(bool causal_model) const {
  return options_.capacity_factor() <= 0;
}

namespace {

absl::Status ValidateTokenChoice(const RouterSpec& spec, const RouterDims& dims) {
  if (absl::Status s = CheckWholeTopK(spec, dims); !s.ok()) return s;
  const TokenChoiceOptions options = ResolvedTokenChoiceOptions(spec);
  if (options.gate() != SOFTMAX && options.gate() != SIGMOID) {
    return absl::InvalidArgumentError(
        absl::StrCat("router.token_choice.gate: must be SOFTMAX or SIGMOID, got ", options.gate()));
  }
  if (options.drop_policy() != DROP_BY_SCORE && options.drop_policy() != DROP_BY_POSITION) {
    return absl::InvalidArgumentError(
        absl::StrCat("router.token_choice.drop_policy: must be DROP_BY_SCORE or "
                     "DROP_BY_POSITION, got ",
                     options.drop_policy()));
  }
  if (!(options.jitter_eps() >= 0 && options.jitter_eps() < 1)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "router.token_choice.jitter_eps: must be in [0, 1), got ", options.jitter_eps()));
  }
  if (!(options.capacity_factor() >= 0) || !std::isfinite(options.capacity_factor())) {
    return absl::InvalidArgumentError(
        absl::StrCat("router.token_choice.capacity_factor: must be >= 0 (0 = dropless), "
                     "got ",
                     options.capacity_factor()));
  }
  return CheckRenormalizeLetsTheGateLearn(spec, options.renormalize(),
                                          "router.token_choice.renormalize", "r");
}

MOELAB_REGISTER_ROUTER("token_choice",
                       {.options = RouterSpec::kTokenChoice,
                        .description = "top-k experts per token of a softmax/sigmoid gate; "
                                       "optional renormalisation and expert capacity "
                                       "(SMoE/Switch/GShard)",
                        .resolve =
                            [](RouterSpec* spec, const RouterDims&) {
                              *spec->mutable_token_choice() = ResolvedTokenChoiceOptions(*spec);
                            },
                        .validate = ValidateTokenChoice,
                        .create = [](const RouterSpec& spec,
                                     const RouterDims& dims) -> std::shared_ptr<Router> {
                          return std::make_shared<TokenChoiceRouter>(spec, dims);
                        }});

}  // namespace
}  // namespace moelab
