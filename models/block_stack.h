#ifndef MOELAB_MODELS_BLOCK_STACK_H_
#define MOELAB_MODELS_BLOCK_STACK_H_

// The stack of transformer blocks both model plugins share: built with an
// MoE layer in every moe_every-th block, run with the MoE blocks' auxiliary
// losses summed and their routing decisions kept.

#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "core/model.h"
#include "core/router.h"
#include "models/transformer_block.h"
#include "proto/experiment.pb.h"

namespace moelab {

// Builds `num_layers` blocks of `block_options`, block l holding an MoE
// layer of `moe` iff IsMoeBlock(l, moe.moe_every()), its router built from
// `router` on its own stream (CreateRouterOnOwnStream with `router_key`),
// and registers each on `owner` as "block<l>" (the names checkpoints hold).
absl::StatusOr<std::vector<TransformerBlock>> BuildBlockStack(
    torch::nn::Module& owner, int64_t num_layers, const MoeSpec& moe,
    const TransformerBlockOptions& block_options, const RouterSpec& router, const RouterDims& dims,
    uint64_t router_key);

// Runs hidden states [B, T, D] through `blocks` and returns them [B, T, D];
// adds every MoE block's auxiliary losses to out->aux_loss (a scalar) and,
// when `keep_routing`, appends its RoutingDecision to out->routing.
at::Tensor RunBlockStack(std::vector<TransformerBlock>& blocks, at::Tensor hidden,
                         const RoutingContext& context, bool keep_routing, ModelOutput* out);

// The routers of the MoE blocks, in depth order (Model::Routers()).
std::vector<std::shared_ptr<Router>> RoutersOf(const std::vector<TransformerBlock>& blocks);

// Model::ShardExperts for a block stack: every MoE block's layer keeps this
// rank's experts (MoeLayerImpl::ShardExperts); returns all they kept.
absl::StatusOr<std::vector<at::Tensor>> ShardExpertsOf(std::vector<TransformerBlock>& blocks,
                                                       std::shared_ptr<ExpertExchange> exchange);

// Parameters of the experts other ranks hold (0 without expert
// parallelism), so that a model's Stats() counts the whole model.
int64_t ExpertParametersElsewhere(const std::vector<TransformerBlock>& blocks);

}  // namespace moelab

#endif  // MOELAB_MODELS_BLOCK_STACK_H_
