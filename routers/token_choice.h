#ifndef MOELAB_ROUTERS_TOKEN_CHOICE_H_
#define MOELAB_ROUTERS_TOKEN_CHOICE_H_

// Token-choice routing (Switch / GShard / the SMoE baseline): each token
// takes the top-k experts of its gate distribution r = gate(x W_g^T),
// optionally renormalised, optionally limited by a per-expert capacity.

#include <ATen/core/Tensor.h>

#include <cstdint>

#include "core/router.h"
#include "proto/experiment.pb.h"

namespace moelab {

// spec.token_choice with the documented defaults filled in (gate SOFTMAX,
// drop policy DROP_BY_SCORE).
TokenChoiceOptions ResolvedTokenChoiceOptions(const RouterSpec& spec);

// Per-expert capacity C = ceil(capacity_factor * N * k / E) over the N tokens
// of a batch.
int64_t TokenChoiceCapacity(double capacity_factor, int64_t num_tokens, int64_t k,
                            int64_t num_experts);

class TokenChoiceRouter : public Router {
 public:
  // `spec` must have passed the registered `validate`.
  TokenChoiceRouter(const RouterSpec& spec, const RouterDims& dims);

  // hidden: [B, T, D].
  RoutingDecision Route(const at::Tensor& hidden, const RoutingContext& context) override;

  // With a capacity, whether a token keeps an expert depends on the other
  // tokens of the batch, later ones included.
  bool IsCausal(bool causal_model) const override;

  std::string BatchScope() const override;

 private:
  RouterSpec spec_;
  TokenChoiceOptions options_;
  int64_t num_experts_;
  int64_t top_k_;
  at::Tensor gate_weight_;  // [E, D]
};

}  // namespace moelab

#endif  // MOELAB_ROUTERS_TOKEN_CHOICE_H_
