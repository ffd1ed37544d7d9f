#ifndef MOELAB_ROUTERS_XMOE_H_
#define MOELAB_ROUTERS_XMOE_H_

// X-MoE cosine routing (Chi et al., 2022): tokens are projected to a small
// routing space and scored by cosine similarity with learned expert
// embeddings over a learnable temperature, which keeps the router from
// collapsing tokens onto expert centroids.

#include <ATen/core/Tensor.h>

#include <cstdint>

#include "core/router.h"
#include "proto/experiment.pb.h"

namespace moelab {

// spec.xmoe with the documented defaults filled in (projection_dim 16,
// initial_temperature 0.07).
XMoeOptions ResolvedXMoeOptions(const RouterSpec& spec);

class XMoeRouter : public Router {
 public:
  // `spec` must have passed the registered `validate`.
  XMoeRouter(const RouterSpec& spec, const RouterDims& dims);

  // hidden: [B, T, D]. logits = cos(x P^T, expert_embeddings) /
  // max(temperature, 0.01); r = softmax; top-k; combine = r at the top-k.
  RoutingDecision Route(const at::Tensor& hidden, const RoutingContext& context) override;

  bool IsCausal(bool causal_model) const override { return true; }

 private:
  RouterSpec spec_;
  int64_t num_experts_;
  int64_t top_k_;
  at::Tensor projection_;         // [P, D]
  at::Tensor expert_embeddings_;  // [E, P]
  at::Tensor temperature_;        // scalar
};

}  // namespace moelab

#endif  // MOELAB_ROUTERS_XMOE_H_
