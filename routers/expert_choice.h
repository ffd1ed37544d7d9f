#ifndef MOELAB_ROUTERS_EXPERT_CHOICE_H_
#define MOELAB_ROUTERS_EXPERT_CHOICE_H_

// Expert-choice routing (Zhou et al., 2022): within each sequence every
// expert takes the c tokens that score it highest, so tokens get 0..E
// experts and every expert is exactly full.

#include <ATen/core/Tensor.h>

#include <cstdint>

#include "core/router.h"
#include "proto/experiment.pb.h"

namespace moelab {

// spec.expert_choice with the documented defaults filled in
// (capacity_factor 1.0).
ExpertChoiceOptions ResolvedExpertChoiceOptions(const RouterSpec& spec);

// Tokens per expert and sequence: c = min(T, ceil(capacity_factor * T * k / E)).
int64_t ExpertChoiceCapacity(double capacity_factor, int64_t tokens, int64_t k,
                             int64_t num_experts);

class ExpertChoiceRouter : public Router {
 public:
  // `spec` must have passed the registered `validate`.
  ExpertChoiceRouter(const RouterSpec& spec, const RouterDims& dims);

  // hidden: [B, T, D].
  RoutingDecision Route(const at::Tensor& hidden, const RoutingContext& context) override;

  // An expert compares every token of the sequence, later ones included.
  bool IsCausal(bool causal_model) const override { return false; }

 private:
  RouterSpec spec_;
  double capacity_factor_;
  int64_t num_experts_;
  int64_t top_k_;
  at::Tensor gate_weight_;  // [E, D]
};

}  // namespace moelab

#endif  // MOELAB_ROUTERS_EXPERT_CHOICE_H_
