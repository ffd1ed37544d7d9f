#ifndef MOELAB_ROUTERS_SINKHORN_H_
#define MOELAB_ROUTERS_SINKHORN_H_

// Sinkhorn-balanced routing (BASE layers' balanced assignment, as
// approximated in Megatron-LM): in training, tokens take the top-k of the
// Sinkhorn-normalised score matrix of the batch, which spreads them evenly
// over the experts without an auxiliary loss; in evaluation, plain top-k.

#include <ATen/core/Tensor.h>

#include <cstdint>

#include "core/router.h"
#include "proto/experiment.pb.h"

namespace moelab {

// spec.sinkhorn with the documented defaults filled in (iterations 8).
SinkhornOptions ResolvedSinkhornOptions(const RouterSpec& spec);

// log of the Sinkhorn-balanced matrix diag(d0) exp(logits) diag(d1) of
// logits [N, E]: each iteration scales the rows to sum 1/N, then the
// columns to sum 1/E. Computed in the log domain, so large logits cannot
// overflow.
at::Tensor SinkhornLogBalance(const at::Tensor& logits, int64_t iterations);

class SinkhornRouter : public Router {
 public:
  // `spec` must have passed the registered `validate`.
  SinkhornRouter(const RouterSpec& spec, const RouterDims& dims);

  // hidden: [B, T, D]. combine = sigmoid(logits) at the chosen experts
  // (Megatron's form); gate_probs = softmax(logits).
  RoutingDecision Route(const at::Tensor& hidden, const RoutingContext& context) override;

  // In training the balance couples every token of the batch.
  bool IsCausal(bool causal_model) const override { return false; }

  std::string BatchScope() const override {
    return "Sinkhorn balancing: over each worker's shard of the batch";
  }

 private:
  RouterSpec spec_;
  int64_t iterations_;
  int64_t num_experts_;
  int64_t top_k_;
  at::Tensor gate_weight_;  // [E, D]
};

}  // namespace moelab

#endif  // MOELAB_ROUTERS_SINKHORN_H_
