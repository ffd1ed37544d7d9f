#ifndef MOELAB_ROUTERS_HASH_H_
#define MOELAB_ROUTERS_HASH_H_

// Hash routing (Roller et al., 2021): a token's experts are a fixed function
// of its id, with no learned parameters; a baseline that cannot fluctuate.

#include <ATen/core/Tensor.h>

#include <cstdint>

#include "core/router.h"
#include "proto/experiment.pb.h"
#include "routers/router_util.h"

namespace moelab {

class HashRouter : public Router {
 public:
  // `spec` must have passed the registered `validate`.
  HashRouter(const RouterSpec& spec, const RouterDims& dims);

  // hidden: [B, T, D]; reads context.token_ids [B, T] (int64, >= 0).
  // Each token gets the k experts of HashedExperts(id, salt), weight 1/k.
  RoutingDecision Route(const at::Tensor& hidden, const RoutingContext& context) override;

  bool IsCausal(bool causal_model) const override { return true; }

 private:
  RouterSpec spec_;
  uint64_t salt_;
  int64_t num_experts_;
  HashedExpertTable table_;
};

}  // namespace moelab

#endif  // MOELAB_ROUTERS_HASH_H_
