#include "models/feed_forward.h"

#include <ATen/ops/gelu.h>
#include <ATen/ops/relu.h>

#include "models/linear.h"

namespace moelab {

at::Tensor ApplyActivation(const at::Tensor& x, Activation activation) {
  return activation == RELU ? at::relu(x) : at::gelu(x);
}

FeedForwardImpl::FeedForwardImpl(const FeedForwardOptions& options) : options(options) {
  up = register_module("up", torch::nn::Linear(options.model_dim(), options.hidden_dim()));
  down = register_module("down", torch::nn::Linear(options.hidden_dim(), options.model_dim()));
}

at::Tensor FeedForwardImpl::forward(const at::Tensor& x) {
  return Linear(ApplyActivation(Linear(x, up->weight, up->bias), options.activation()),
                down->weight, down->bias);
}

}  // namespace moelab
