#ifndef MOELAB_ROUTERS_RANDOM_H_
#define MOELAB_ROUTERS_RANDOM_H_

// Random routing: k distinct uniformly random experts per token, a baseline
// with perfect expected balance and no learned routing at all.

#include <ATen/core/Tensor.h>

#include <cstdint>

#include "core/router.h"
#include "proto/experiment.pb.h"
#include "routers/router_util.h"

namespace moelab {

class RandomRouter : public Router {
 public:
  // `spec` must have passed the registered `validate`. With fixed_per_token,
  // draws the salt of its token-id map from the global torch generator.
  RandomRouter(const RouterSpec& spec, const RouterDims& dims);

  // hidden: [B, T, D]. A fresh draw from the global torch generator per
  // call, or with fixed_per_token the experts HashedExperts(id, salt) of
  // context.token_ids. Weight 1/k each.
  RoutingDecision Route(const at::Tensor& hidden, const RoutingContext& context) override;

  bool IsCausal(bool causal_model) const override { return true; }

 private:
  RouterSpec spec_;
  bool fixed_per_token_;
  int64_t num_experts_;
  int64_t top_k_;
  // int64 scalar buffer, so that a checkpoint restores the map.
  at::Tensor salt_;
  HashedExpertTable table_;
};

}  // namespace moelab

#endif  // MOELAB_ROUTERS_RANDOM_H_
