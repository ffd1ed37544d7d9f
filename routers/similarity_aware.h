#ifndef MOELAB_ROUTERS_SIMILARITY_AWARE_H_
#define MOELAB_ROUTERS_SIMILARITY_AWARE_H_

// Similarity-Aware SMoE ("graph of tokens", arXiv 2505.00792): a token's
// expert scores are the similarity-weighted mixture of its neighbours' gate
// distributions, p_i = sum_j S_ij r_j, with
// S = row-softmax(U W_s U^T / tau). Similar tokens thereby share experts and
// an indecisive token borrows the confidence of its neighbours, which lowers
// routing entropy and fluctuation. Registered as "similarity_aware".
//
// `scale` COSINE_SIMILARITY (default, ours) takes U on unit-length rows,
// u_i / ||u_i||, so that tau means the same at every hidden size and scale;
// RAW_DOT_PRODUCT is the paper's formula as written, whose S is one-hot on
// the diagonal for layer-normed states at tau = 1 (u_i.u_i ~ D), making
// p = r.
//
// `ablate_aggregation` (ours) sets W = I in place of S, so p = r exactly,
// while the gate, top-k over p, renormalisation, auxiliary losses and
// diagnostics run as usual: a table row with it tells whether the
// aggregation, rather than anything else in this router, moves a metric.

#include <ATen/core/Tensor.h>

#include <cstdint>

#include "core/router.h"
#include "proto/experiment.pb.h"

namespace moelab {

// The temperature scale COSINE_SIMILARITY resolves to when none is set (ours;
// the paper's tau = 1 was for raw dot products). On unit vectors the logits
// cos(u_i, u_j) / tau span [-1/tau, 1/tau].
inline constexpr float kDefaultCosineTemperature = 0.1f;

// `spec.similarity_aware` with every unset option at its documented default
// (what the registration's `resolve` writes).
SimilarityAwareOptions ResolvedSimilarityAwareOptions(const RouterSpec& spec,
                                                      const RouterDims& dims);

class SimilarityAwareRouter : public Router {
 public:
  // `spec` must pass the registration's validation; unset options take their
  // defaults. Parameters: `gate_weight` [E, D]; with projection FULL also
  // `similarity_weight` [D, D] (initialised to I); with LOW_RANK
  // `similarity_a`, `similarity_b` [D, rank] (both initialised to the same
  // random orthonormal columns, so W_s starts as an orthogonal projection).
  SimilarityAwareRouter(const RouterSpec& spec, const RouterDims& dims);

  // hidden: [B, T, D]. Reads context.padding_mask. The aggregation
  // diagnostics (aggregation_self_weight, aggregation_effective_neighbours)
  // are filled only when context.training is false. With ablate_aggregation
  // S is never formed: aggregated_probs is gate_probs itself and the
  // diagnostics describe W = I (self-weight 1, effective neighbours 1).
  RoutingDecision Route(const at::Tensor& hidden, const RoutingContext& context) override;

  // p = r reads only token i, so the ablation is causal whatever `causal`
  // says about the S it does not form.
  bool IsCausal(bool causal_model) const override {
    return options_.ablate_aggregation() || options_.causal();
  }

  // [B, T, T] the row-stochastic similarity S (float32), from unit-length
  // rows of `hidden` with scale COSINE_SIMILARITY. Entry (i, j) is zero
  // where j is masked (j > i when causal, padded j); a row with no allowed j
  // (a padded token with no unpadded token before it) keeps only its own
  // token, S_ii = 1, so that no row is ever NaN.
  at::Tensor Similarity(const at::Tensor& hidden, const at::Tensor& padding_mask) const;

 private:
  RouterSpec spec_;
  SimilarityAwareOptions options_;
  int64_t top_k_;
  at::Tensor gate_weight_;        // [E, D]
  at::Tensor similarity_weight_;  // [D, D], FULL only
  at::Tensor similarity_a_;       // [D, rank], LOW_RANK only
  at::Tensor similarity_b_;       // [D, rank], LOW_RANK only
};

}  // namespace moelab

#endif  // MOELAB_ROUTERS_SIMILARITY_AWARE_H_
