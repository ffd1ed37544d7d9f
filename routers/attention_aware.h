#ifndef MOELAB_ROUTERS_ATTENTION_AWARE_H_
#define MOELAB_ROUTERS_ATTENTION_AWARE_H_

// Attention-Aware SMoE ("graph of tokens", arXiv 2505.00792): routing reuses
// the attention layer right before the MoE layer. Per head h, the posterior
// A^p_h[i, j] ∝ A_h[i, j] N(u_i; V_h[j], sigma^2 I) says how much token j
// explains token i's representation; a head is chosen per token (or per
// sequence, or all heads are weighted) by the posterior's entropy, and
// p_i = sum_j A^p_{h*}[i, j] r_j replaces r_i for top-k selection.
// Registered as "attention_aware".
//
// `likelihood_scale` RELATIVE (default, ours) measures sigma in units of the
// token's own norm, N(u_i; V_h[j], (sigma ||u_i||)^2 I); ABSOLUTE is the
// paper's formula as written, whose posterior is one-hot on a single j at
// sigma = 1 and a trained model's hidden scale.
//
// `ablate_aggregation` (ours) replaces the posterior by the identity, so
// p = r exactly, while the gate, top-k over p, renormalisation, auxiliary
// losses and diagnostics run as usual, and the head is still chosen from
// the attention (so the head-change diagnostics of a table row with it
// compare with the full router's): the row tells whether the aggregation,
// rather than anything else in this router, moves a metric.

#include <ATen/core/Tensor.h>

#include <cstdint>

#include "core/router.h"
#include "proto/experiment.pb.h"

namespace moelab {

// `spec.attention_aware` with every unset option at its documented default
// (what the registration's `resolve` writes).
AttentionAwareOptions ResolvedAttentionAwareOptions(const RouterSpec& spec);

class AttentionAwareRouter : public Router {
 public:
  // `spec` must pass the registration's validation; unset options take their
  // defaults. Parameter: `gate_weight` [E, D].
  AttentionAwareRouter(const RouterSpec& spec, const RouterDims& dims);

  // hidden: [B, T, D]. Needs context.attention_probs [B, H, T, T] and
  // context.attention_values [B, H, T, D] (a missing one is a programmer
  // error in the model: TORCH_CHECK); reads context.padding_mask. The
  // aggregation diagnostics (aggregation_self_weight,
  // aggregation_effective_neighbours, aggregation_head) are filled only when
  // context.training is false. With ablate_aggregation aggregated_probs is
  // gate_probs itself, the diagnostics describe W = I (self-weight 1,
  // effective neighbours 1), and aggregation_head is the head the full router
  // would choose; the posterior is computed only for that head, so not in
  // training, where nothing reads it.
  RoutingDecision Route(const at::Tensor& hidden, const RoutingContext& context) override;

  // Also with ablate_aggregation: the head is still chosen from the attention.
  bool NeedsAttention() const override { return true; }

  // One head per sequence reads every token's row, so that choice is never
  // causal; per-token choices are causal when the attention is. With
  // ablate_aggregation the decision is p = r, which reads only token i
  // (the reported head may still read later tokens, but no decision does).
  bool IsCausal(bool causal_model) const override {
    return options_.ablate_aggregation() ||
           (causal_model && options_.head_selection() != LOWEST_MEAN_ENTROPY);
  }

  // [B, H, T, T] the posterior A^p_h[i, :] (float32, rows sum to one),
  // computed in log space: entries with A = 0 and padded keys j are exactly
  // 0, never NaN. A row with no admissible j (a padded query whose keys are
  // all padded) keeps only its own token.
  at::Tensor Posterior(const at::Tensor& hidden, const RoutingContext& context) const;

  struct Aggregation {
    // [B, T, T] the token-to-token weights p is aggregated with: the chosen
    // head's posterior rows (or the entropy-weighted mix of all heads).
    at::Tensor weights;
    // [B, T] int64: token i's head: its lowest-entropy head (LOWEST_ENTROPY;
    // also the largest-weight head of ALL_HEADS_WEIGHTED), or its sequence's
    // head (LOWEST_MEAN_ENTROPY). Ties go to the lower index.
    at::Tensor head;
    // [B, T] float32, detached: H(weights[b, i, :]) in nats, the entropy the
    // head was chosen by, gathered at `head` (LOWEST_ENTROPY,
    // LOWEST_MEAN_ENTROPY); undefined for ALL_HEADS_WEIGHTED, whose mixed
    // rows are no single head's.
    at::Tensor row_entropy;
  };
  // `head` and `row_entropy` are by-products of the choice of head, O(B H T)
  // next to the O(B H T^2) posterior; Route reports them only outside
  // training.
  Aggregation Aggregate(const at::Tensor& hidden, const RoutingContext& context) const;

 private:
  RouterSpec spec_;
  AttentionAwareOptions options_;
  int64_t top_k_;
  at::Tensor gate_weight_;  // [E, D]
};

}  // namespace moelab

#endif  // MOELAB_ROUTERS_ATTENTION_AWARE_H_
