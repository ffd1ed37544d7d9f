#include "models/transformer_block.h"

#include <utility>
#include <vector>

namespace moelab {

TransformerBlockImpl::TransformerBlockImpl(const TransformerBlockOptions& options)
    : options(options) {
  BuildCommon();
  ffn = register_module("ffn",
                        FeedForward(FeedForwardOptions(options.model_dim(), options.dense_hidden())
                                        .activation(options.activation())));
}

TransformerBlockImpl::TransformerBlockImpl(const TransformerBlockOptions& options,
                                           MoeLayer moe_layer)
    : options(options) {
  TORCH_CHECK(moe_layer->options.model_dim() == options.model_dim(), "TransformerBlock: MoE width ",
              moe_layer->options.model_dim(), " != model_dim ", options.model_dim());
  BuildCommon();
  moe = register_module("moe", std::move(moe_layer));
}

void TransformerBlockImpl::BuildCommon() {
  const std::vector<int64_t> shape = {options.model_dim()};
  ln1 = register_module("ln1", torch::nn::LayerNorm(torch::nn::LayerNormOptions(shape)));
  attention = register_module(
      "attention",
      SelfAttention(
          SelfAttentionOptions(options.model_dim(), options.num_heads()).causal(options.causal())));
  ln2 = register_module("ln2", torch::nn::LayerNorm(torch::nn::LayerNormOptions(shape)));
  dropout =
      register_module("dropout", torch::nn::Dropout(torch::nn::DropoutOptions(options.dropout())));
}

TransformerBlockOutput TransformerBlockImpl::forward(const at::Tensor& x,
                                                     const RoutingContext& context) {
  const bool expose = is_moe() && moe->router()->NeedsAttention();
  SelfAttentionOutput attended = attention->forward(ln1->forward(x), expose);
  TransformerBlockOutput result;
  const at::Tensor h = x + dropout->forward(attended.output);
  const at::Tensor u = ln2->forward(h);
  if (!is_moe()) {
    result.hidden = h + dropout->forward(ffn->forward(u));
    return result;
  }
  RoutingContext moe_context = context;
  if (expose) {
    moe_context.attention_probs = std::move(attended.probs);
    moe_context.attention_values = std::move(attended.values);
  }
  MoeLayerOutput moe_out = moe->forward(u, moe_context);
  result.hidden = h + dropout->forward(moe_out.output);
  result.decision = std::move(moe_out.decision);
  return result;
}

}  // namespace moelab
