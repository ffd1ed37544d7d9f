#ifndef MOELAB_MODELS_VIT_H_
#define MOELAB_MODELS_VIT_H_

// `vmoe_vit`: a vision transformer with MoE FFNs, V-MoE style
// (Riquelme et al., 2021).
//
//   patches: a p x p, stride-p convolution C -> D (p = vit.patch_size, which
//            must divide the image's height and width)
//   tokens:  [class token] + patches, plus learned position embeddings
//   pre-LN bidirectional blocks, MoE in blocks (i+1) % moe_every == 0
//            (moe_every 2: every other block, as in V-MoE)
//   LN_f, pooling (class token, or mean over the patch tokens), linear head
//   loss = mean cross-entropy; aux_loss = sum of the routers' aux losses
// RoutingContext::token_ids holds each token's position (0..T-1, the class
// token at 0), so position-keyed routers (hash) see patch positions.
//
// Presets (model.preset; explicitly set fields override them):
//   cpu_tiny  D 128, 4 layers, 4 heads, patch 4 (49 patches on 28 x 28),
//             8 experts of width 256, dense 256, MoE every other block,
//             class token: Fashion-MNIST on two CPU cores in minutes.
//   vmoe_s    V-MoE-S/32: D 512, 8 layers, 8 heads, patch 32, dense 2048,
//             32 experts of width 2048, every other block (ImageNet 224px).
//   vmoe_s16  the same with patch 16 (196 patches at 224px).
//   vmoe_b16  V-MoE-B/16: D 768, 12 layers, 12 heads, patch 16, dense 3072,
//             32 experts of width 3072, every other block.
// An empty model.preset resolves to cpu_tiny (written into the spec).

#include <ATen/core/Tensor.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/dropout.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/dataset.h"
#include "core/model.h"
#include "core/router.h"
#include "models/transformer_block.h"
#include "proto/experiment.pb.h"

namespace moelab {

// The plugin's registration functions, exposed for tests.
absl::Status ResolveVitSpec(ModelSpec* spec);
absl::Status ValidateVitSpec(const ModelSpec& spec);
RouterDims VitRouterDims(const ModelSpec& spec);

class VmoeVit : public Model {
 public:
  // `spec.model` resolved and validated; `info` an image-classification
  // dataset whose height and width patch_size divides (else an error naming
  // model.vit.patch_size). Parameters are drawn from the global generator,
  // each router's on a stream of its own (as in MoeTransformerLm::Create).
  static absl::StatusOr<std::shared_ptr<VmoeVit>> Create(const ExperimentSpec& spec,
                                                         const DatasetInfo& info);

  // batch.inputs: [B, C, H, W] float; batch.targets [B] int64 (loss is left
  // undefined without targets). logits: [B, num_classes].
  ModelOutput Forward(const Batch& batch, const ForwardOptions& options) override;
  ModelStats Stats() const override;
  bool IsCausal() const override { return false; }
  std::vector<std::shared_ptr<Router>> Routers() const override;
  absl::StatusOr<std::vector<at::Tensor>> ShardExperts(
      std::shared_ptr<ExpertExchange> exchange) override;

  // Tokens per image: patches, plus one with a class token.
  int64_t num_tokens() const { return num_patches_ + (class_token_.defined() ? 1 : 0); }

 private:
  VmoeVit(const ModelSpec& model, double top_k, const DatasetInfo& info);

  ModelSpec spec_;  // model part, resolved
  double top_k_;
  int64_t channels_;
  int64_t num_classes_;
  int64_t num_patches_;
  torch::nn::Conv2d patch_embedding_{nullptr};
  at::Tensor class_token_;         // [1, 1, D], CLASS_TOKEN pooling only
  at::Tensor position_embedding_;  // [1, T, D]
  torch::nn::Dropout embedding_dropout_{nullptr};
  std::vector<TransformerBlock> blocks_;
  torch::nn::LayerNorm final_norm_{nullptr};
  torch::nn::Linear head_{nullptr};
};

}  // namespace moelab

#endif  // MOELAB_MODELS_VIT_H_
