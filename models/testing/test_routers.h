#ifndef MOELAB_MODELS_TESTING_TEST_ROUTERS_H_
#define MOELAB_MODELS_TESTING_TEST_ROUTERS_H_

// A small router for the models' tests, independent of routers/: a linear
// gate r = softmax(hidden @ gate_weight^T); selected = the top-k of r per
// token, or a mask the test fixes (any number of experts per token);
// combine = r at the selected experts. It records the hidden states and
// context it was last given. Registered (test only) as
// "testing_models_top_k" and, with NeedsAttention() true,
// "testing_models_attention".

#include <ATen/core/Tensor.h>

#include <cstdint>

#include "core/router.h"
#include "proto/experiment.pb.h"

namespace moelab {

class TestRouter : public Router {
 public:
  TestRouter(int64_t model_dim, int64_t num_experts, int64_t top_k, bool needs_attention = false,
             RouterSpec spec = RouterSpec());

  RoutingDecision Route(const at::Tensor& hidden, const RoutingContext& context) override;
  bool NeedsAttention() const override { return needs_attention_; }
  bool IsCausal(bool) const override { return true; }

  // [B, T, E] bool used instead of the top-k from now on; undefined restores
  // top-k.
  void set_fixed_selection(const at::Tensor& selected) { fixed_ = selected; }

  const at::Tensor& last_hidden() const { return last_hidden_; }
  const RoutingContext& last_context() const { return last_context_; }

  at::Tensor gate_weight;  // [E, D]

 private:
  int64_t top_k_;
  bool needs_attention_;
  RouterSpec spec_;
  at::Tensor fixed_;
  at::Tensor last_hidden_;
  RoutingContext last_context_;
};

}  // namespace moelab

#endif  // MOELAB_MODELS_TESTING_TEST_ROUTERS_H_
