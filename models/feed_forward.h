#ifndef MOELAB_MODELS_FEED_FORWARD_H_
#define MOELAB_MODELS_FEED_FORWARD_H_

// The position-wise feed-forward network D -> H -> D of a transformer block:
// the dense FFN of non-MoE blocks and the MoE layer's shared expert.

#include <ATen/core/Tensor.h>
#include <torch/arg.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

#include <cstdint>

#include "proto/experiment.pb.h"

namespace moelab {

// GELU (exact, erf form) or ReLU; ACTIVATION_UNSPECIFIED means GELU.
at::Tensor ApplyActivation(const at::Tensor& x, Activation activation);

struct FeedForwardOptions {
  FeedForwardOptions(int64_t model_dim, int64_t hidden_dim)
      : model_dim_(model_dim), hidden_dim_(hidden_dim) {}
  TORCH_ARG(int64_t, model_dim);
  TORCH_ARG(int64_t, hidden_dim);
  TORCH_ARG(Activation, activation) = GELU;
};

class FeedForwardImpl : public torch::nn::Module {
 public:
  explicit FeedForwardImpl(const FeedForwardOptions& options);

  // x: [..., D] -> [..., D].
  at::Tensor forward(const at::Tensor& x);

  FeedForwardOptions options;
  torch::nn::Linear up{nullptr};    // D -> H
  torch::nn::Linear down{nullptr};  // H -> D
};
TORCH_MODULE(FeedForward);

}  // namespace moelab

#endif  // MOELAB_MODELS_FEED_FORWARD_H_
