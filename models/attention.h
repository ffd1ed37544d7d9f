#ifndef MOELAB_MODELS_ATTENTION_H_
#define MOELAB_MODELS_ATTENTION_H_

// Multi-head self-attention with explicit query/key/value/output projections,
// causal (language models) or bidirectional (vision), that can hand the
// attention it used to the router of the MoE layer after it
// (RoutingContext::attention_probs / attention_values).

#include <ATen/core/Tensor.h>
#include <torch/arg.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

#include <cstdint>

namespace moelab {

struct SelfAttentionOptions {
  SelfAttentionOptions(int64_t model_dim, int64_t num_heads)
      : model_dim_(model_dim), num_heads_(num_heads) {}
  TORCH_ARG(int64_t, model_dim);  // D; num_heads must divide it
  TORCH_ARG(int64_t, num_heads);  // H
  // Position i attends to positions j <= i only.
  TORCH_ARG(bool, causal) = false;
};

struct SelfAttentionOutput {
  // [B, T, D]
  at::Tensor output;
  // Only when requested (see forward), else undefined:
  // [B, H, T, T] the attention probabilities used (rows sum to one).
  at::Tensor probs;
  // [B, H, T, D] head h's value projection of token j mapped through head
  // h's columns of the output projection (no output bias), so that
  // output[b, i] = sum_h sum_j probs[b, h, i, j] values[b, h, j] + out.bias.
  at::Tensor values;
};

class SelfAttentionImpl : public torch::nn::Module {
 public:
  explicit SelfAttentionImpl(const SelfAttentionOptions& options);

  // x: [B, T, D]. With `expose_for_routing`, also returns probs and values
  // (differentiable); otherwise the per-head value contributions are never
  // formed.
  SelfAttentionOutput forward(const at::Tensor& x, bool expose_for_routing = false);

  SelfAttentionOptions options;
  torch::nn::Linear query{nullptr};
  torch::nn::Linear key{nullptr};
  torch::nn::Linear value{nullptr};
  torch::nn::Linear out{nullptr};
};
TORCH_MODULE(SelfAttention);

}  // namespace moelab

#endif  // MOELAB_MODELS_ATTENTION_H_
