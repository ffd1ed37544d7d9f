#ifndef MOELAB_MODELS_TRANSFORMER_BLOCK_H_
#define MOELAB_MODELS_TRANSFORMER_BLOCK_H_

// One pre-LN transformer block, shared by the language model and the vision
// transformer:
//   x = x + dropout(attention(LN1(x)))
//   x = x + dropout(ffn(LN2(x)))      ffn: a dense FFN or an MoE layer
// In an MoE block the router sees u = LN2(x), and when it NeedsAttention()
// the attention of the same block hands it its probabilities and per-head
// value contributions.

#include <ATen/core/Tensor.h>
#include <torch/arg.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/dropout.h>
#include <torch/nn/modules/normalization.h>
#include <torch/nn/pimpl.h>

#include <cstdint>

#include "core/router.h"
#include "models/attention.h"
#include "models/feed_forward.h"
#include "models/moe_layer.h"
#include "proto/experiment.pb.h"

namespace moelab {

struct TransformerBlockOptions {
  TransformerBlockOptions(int64_t model_dim, int64_t num_heads)
      : model_dim_(model_dim), num_heads_(num_heads) {}
  TORCH_ARG(int64_t, model_dim);
  TORCH_ARG(int64_t, num_heads);
  TORCH_ARG(bool, causal) = false;
  // On the attention and FFN outputs before each residual addition.
  TORCH_ARG(double, dropout) = 0.0;
  // Width of the dense FFN; unused by an MoE block.
  TORCH_ARG(int64_t, dense_hidden) = 0;
  TORCH_ARG(Activation, activation) = GELU;
};

struct TransformerBlockOutput {
  // [B, T, D]
  at::Tensor hidden;
  // The MoE layer's decision; empty for a dense block.
  RoutingDecision decision;
};

class TransformerBlockImpl : public torch::nn::Module {
 public:
  // A dense block (FFN of width options.dense_hidden()).
  explicit TransformerBlockImpl(const TransformerBlockOptions& options);
  // An MoE block; the MoE layer's width must be options.model_dim().
  TransformerBlockImpl(const TransformerBlockOptions& options, MoeLayer moe);

  // x: [B, T, D]. `context` carries the token ids, training flag and
  // causality; the block adds the attention fields its router needs.
  TransformerBlockOutput forward(const at::Tensor& x, const RoutingContext& context);

  bool is_moe() const { return !moe.is_empty(); }

  TransformerBlockOptions options;
  torch::nn::LayerNorm ln1{nullptr};
  SelfAttention attention{nullptr};
  torch::nn::LayerNorm ln2{nullptr};
  FeedForward ffn{nullptr};  // dense blocks
  MoeLayer moe{nullptr};     // MoE blocks
  torch::nn::Dropout dropout{nullptr};

 private:
  void BuildCommon();
};
TORCH_MODULE(TransformerBlock);

}  // namespace moelab

#endif  // MOELAB_MODELS_TRANSFORMER_BLOCK_H_
