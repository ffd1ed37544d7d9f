#include "models/block_stack.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "models/model_spec_util.h"
#include "models/moe_layer.h"

namespace moelab {

absl::StatusOr<std::vector<TransformerBlock>> BuildBlockStack(
    torch::nn::Module& owner, int64_t num_layers, const MoeSpec& moe,
    const TransformerBlockOptions& block_options, const RouterSpec& router, const RouterDims& dims,
    uint64_t router_key) {
  std::vector<TransformerBlock> blocks;
  for (int64_t layer = 0; layer < num_layers; ++layer) {
    TransformerBlock block{nullptr};
    if (IsMoeBlock(layer, moe.moe_every())) {
      // On a stream of its own (model_spec_util.h): the experts and every
      // later module get the same initial values whichever router this is.
      absl::StatusOr<std::shared_ptr<Router>> created =
          CreateRouterOnOwnStream(router, dims, router_key, layer);
      if (!created.ok()) return created.status();
      MoeLayer moe_layer(
          MoeLayerOptions(block_options.model_dim(), moe.num_experts(), moe.expert_hidden())
              .activation(moe.activation())
              .shared_expert(moe.shared_expert()),
          *std::move(created));
      block = TransformerBlock(block_options, std::move(moe_layer));
    } else {
      block = TransformerBlock(block_options);
    }
    blocks.push_back(owner.register_module(absl::StrCat("block", layer), block));
  }
  return blocks;
}

at::Tensor RunBlockStack(std::vector<TransformerBlock>& blocks, at::Tensor hidden,
                         const RoutingContext& context, bool keep_routing, ModelOutput* out) {
  for (TransformerBlock& block : blocks) {
    TransformerBlockOutput block_out = block->forward(hidden, context);
    hidden = std::move(block_out.hidden);
    if (block->is_moe()) {
      AccumulateAuxLosses(block_out.decision, &out->aux_loss);
      if (keep_routing) out->routing.push_back(std::move(block_out.decision));
    }
  }
  return hidden;
}

std::vector<std::shared_ptr<Router>> RoutersOf(const std::vector<TransformerBlock>& blocks) {
  std::vector<std::shared_ptr<Router>> routers;
  for (const TransformerBlock& block : blocks) {
    if (block->is_moe()) routers.push_back(block->moe->router());
  }
  return routers;
}

absl::StatusOr<std::vector<at::Tensor>> ShardExpertsOf(std::vector<TransformerBlock>& blocks,
                                                       std::shared_ptr<ExpertExchange> exchange) {
  std::vector<at::Tensor> kept;
  for (TransformerBlock& block : blocks) {
    if (!block->is_moe()) continue;
    absl::StatusOr<std::vector<at::Tensor>> layer = block->moe->ShardExperts(exchange);
    if (!layer.ok()) return layer.status();
    kept.insert(kept.end(), layer->begin(), layer->end());
  }
  return kept;
}

int64_t ExpertParametersElsewhere(const std::vector<TransformerBlock>& blocks) {
  int64_t elsewhere = 0;
  for (const TransformerBlock& block : blocks) {
    if (!block->is_moe()) continue;
    const MoeLayerImpl& moe = *block->moe;
    elsewhere += (moe.options.num_experts() - moe.LocalExperts()) * moe.ParametersPerExpert();
  }
  return elsewhere;
}

}  // namespace moelab
