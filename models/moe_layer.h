#ifndef MOELAB_MODELS_MOE_LAYER_H_
#define MOELAB_MODELS_MOE_LAYER_H_

// A sparse Mixture-of-Experts FFN layer: a router picks (token, expert) pairs,
// each pair's expert FFN runs on exactly that token, and the results are
// summed with the router's combine weights.
//
// Dispatch and combine work on index lists, never on a dense [T, E, D]
// tensor: the selected [B, T, E] mask becomes (expert, token) pairs sorted by
// expert (`nonzero` of the transposed mask is already in that order), the
// token rows are gathered once, GroupedExpertFfn runs one matrix multiply
// per expert on its contiguous block of rows (grouped_ffn.h explains its
// hand-written backward), every row is scaled by its pair's combine weight
// and `index_add` sums the rows back into the tokens. A token may have any
// number of experts, 0..E: one with none gets zero from the layer, and the
// block's residual carries it.
//
// Capacity and dropping are the router's business (routers/token_choice):
// the layer computes exactly the pairs the decision selects.

#include <ATen/core/Tensor.h>
#include <torch/arg.h>
#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "core/expert_exchange.h"
#include "core/router.h"
#include "models/feed_forward.h"
#include "proto/experiment.pb.h"

namespace moelab {

struct MoeLayerOptions {
  MoeLayerOptions(int64_t model_dim, int64_t num_experts, int64_t expert_hidden)
      : model_dim_(model_dim), num_experts_(num_experts), expert_hidden_(expert_hidden) {}
  TORCH_ARG(int64_t, model_dim);      // D
  TORCH_ARG(int64_t, num_experts);    // E
  TORCH_ARG(int64_t, expert_hidden);  // H
  TORCH_ARG(Activation, activation) = GELU;
  // An always-on dense FFN of width H added to every token's output.
  TORCH_ARG(bool, shared_expert) = false;
};

// Parameters of one expert FFN on `model_dim` of width `expert_hidden`: its
// two weight matrices and two biases, 2 D H + H + D.
int64_t ExpertParameterCount(int64_t model_dim, int64_t expert_hidden);

struct MoeLayerOutput {
  // [B, T, D]
  at::Tensor output;
  RoutingDecision decision;
};

class MoeLayerImpl : public torch::nn::Module {
 public:
  // `router` becomes the submodule "router"; it must have been built for
  // options.num_experts() experts of width options.model_dim().
  MoeLayerImpl(const MoeLayerOptions& options, std::shared_ptr<Router> router);

  // hidden: [B, T, D] -> output [B, T, D] and the router's decision.
  MoeLayerOutput forward(const at::Tensor& hidden, const RoutingContext& context);

  // The experts (and shared expert) applied as `selected` and
  // `combine_weights` ([B, T, E] each) say, without routing.
  at::Tensor ApplyExperts(const at::Tensor& hidden, const at::Tensor& selected,
                          const at::Tensor& combine_weights);

  // nn.Linear's default initialisation, per expert: U(-1/sqrt(fan_in),
  // 1/sqrt(fan_in)) for weights and biases.
  void reset_parameters();

  const std::shared_ptr<Router>& router() const { return router_; }

  // ExpertParameterCount of this layer's experts.
  int64_t ParametersPerExpert() const;

  // Expert parallelism (core/expert_exchange.h): keeps only this rank's
  // experts, [rank * E/n, (rank + 1) * E/n) of the n ranks of `exchange`,
  // as they were initialised (so that a sharded layer starts as the
  // single-process one), and sends tokens to the other ranks' experts from
  // now on. Returns the expert parameters it kept (w1, b1, w2, b2), whose
  // gradients the data-parallel averaging must treat apart. Errors: E not a
  // multiple of n, or the layer already sharded.
  absl::StatusOr<std::vector<at::Tensor>> ShardExperts(std::shared_ptr<ExpertExchange> exchange);

  // Experts whose parameters this rank holds (E without expert parallelism).
  int64_t LocalExperts() const { return w1.size(0); }

  MoeLayerOptions options;
  at::Tensor w1;  // [E, D, H]
  at::Tensor b1;  // [E, H]
  at::Tensor w2;  // [E, H, D]
  at::Tensor b2;  // [E, D]
  FeedForward shared{nullptr};

 private:
  std::shared_ptr<Router> router_;
  // Set by ShardExperts: the ranks holding the other experts.
  std::shared_ptr<ExpertExchange> exchange_;
};
TORCH_MODULE(MoeLayer);

}  // namespace moelab

#endif  // MOELAB_MODELS_MOE_LAYER_H_
