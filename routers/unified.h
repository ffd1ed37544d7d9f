#ifndef MOELAB_ROUTERS_UNIFIED_H_
#define MOELAB_ROUTERS_UNIFIED_H_

// Unified routing (USMoE, Do et al.): a unified score
//   score = alpha * softmax_experts(logits) + beta * f_tokens(logits)
// and the unified mechanism: the top-c (token, expert) pairs of the score
// matrix of a selection scope, with budget c = round(tokens in scope * k).
// Tokens get 0..E experts; k may be fractional.

#include <ATen/core/Tensor.h>

#include <cstdint>

#include "core/router.h"
#include "proto/experiment.pb.h"

namespace moelab {

// spec.unified with the documented defaults filled in: alpha = beta = 0.5
// (when only one is set, the other becomes 1 minus it; the authors' code),
// token_score SIGMOID_SCALED (the authors' code), scope PER_SEQUENCE (ours:
// the selection of the authors' training-free code, while their from-scratch
// LM code selects PER_POSITION; neither is stated as the default).
UnifiedOptions ResolvedUnifiedOptions(const RouterSpec& spec);

// The unified score [B, T, E] from logits [B, T, E] (float32). A
// SOFTMAX_OVER_TOKENS token part normalises over the tokens of the scope.
// When `expert_part` is given it receives softmax_experts(logits).
at::Tensor UnifiedScore(const at::Tensor& logits, const UnifiedOptions& options,
                        at::Tensor* expert_part = nullptr);

// Budget of one selection: std::lround(tokens in the scope * k), clamped to
// [1, entries of the scope's matrix].
int64_t UnifiedBudget(SelectionScope scope, int64_t batch, int64_t tokens, int64_t num_experts,
                      double k);

class UnifiedRouter : public Router {
 public:
  // `spec` must have passed the registered `validate`.
  UnifiedRouter(const RouterSpec& spec, const RouterDims& dims);

  // hidden: [B, T, D].
  RoutingDecision Route(const at::Tensor& hidden, const RoutingContext& context) override;

  // Only PER_POSITION selects among tokens at the same position (of other
  // sequences); the other scopes compare a token with later ones.
  bool IsCausal(bool causal_model) const override;

  std::string BatchScope() const override;

 private:
  RouterSpec spec_;
  UnifiedOptions options_;
  int64_t num_experts_;
  double top_k_;
  at::Tensor gate_weight_;  // [E, D]
};

}  // namespace moelab

#endif  // MOELAB_ROUTERS_UNIFIED_H_
