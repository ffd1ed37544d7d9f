#ifndef MOELAB_MODELS_TRANSFORMER_LM_H_
#define MOELAB_MODELS_TRANSFORMER_LM_H_

// `moe_transformer_lm`: a decoder-only (causal) transformer language model
// whose FFNs are MoE layers in every moe_every-th block.
//
//   x = token_embedding(ids) + position_embedding(0..T-1); dropout
//   pre-LN blocks (transformer_block.h), MoE in blocks (i+1) % moe_every == 0
//   logits = LN_f(x) @ W_out^T,  W_out = token embedding when tied
//   loss = mean cross-entropy over all targets;
//   aux_loss = sum of the routers' (already weighted) auxiliary losses
//
// Presets (model.preset; explicitly set fields override them):
//   cpu_tiny    D 128, 2 layers, 4 heads, 8 experts of width 256, dense 256,
//               MoE in every block, tied embeddings, dropout 0.1: trains on
//               two CPU cores in minutes.
//   cpu_small   D 256, 4 layers, 8 heads, 16 experts of width 512, dense 512:
//               the USMoE authors' from-scratch LM size (their
//               Transformer-XL: 4 layers, d 256, 8 heads, d_inner 512, 16
//               experts).
//   smoe_small  D 128, 3 layers, 8 heads, 16 experts of width 128, ReLU,
//               dropout 0.7, untied.
//   smoe_medium D 352, 6 layers, 8 heads, 16 experts of width 352, ReLU,
//               dropout 0.1, untied: the "SMoE-medium" of the graph-of-tokens
//               paper's WikiText-103 runs.
//   glam_style  D 352, 8 blocks alternating MoE and dense FFN (both width
//               352), 8 heads, 16 experts, ReLU, dropout 0.1: the GLaM-style
//               medium model of the same line of work.
// The smoe_* and glam_style presets approximate the settings of the public
// SMoE/CompeteSMoE WikiText-103 scripts (the graph-of-tokens paper gives no
// code): those models are post-LN Transformer-XL style with relative
// positions and an attention span (block 256/512); here they are pre-LN with
// learned absolute positions over dataset.sequence_length tokens. Top-k
// (2 in those scripts) is router.top_k.
// An empty model.preset resolves to cpu_tiny (written into the spec).

#include <ATen/core/Tensor.h>
#include <torch/nn/modules/dropout.h>
#include <torch/nn/modules/embedding.h>
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
absl::Status ResolveTransformerLmSpec(ModelSpec* spec);
absl::Status ValidateTransformerLmSpec(const ModelSpec& spec);
RouterDims TransformerLmRouterDims(const ModelSpec& spec);

class MoeTransformerLm : public Model {
 public:
  // `spec.model` resolved and validated; every MoE layer gets its own router
  // built from spec.router. Parameters are drawn from the global generator,
  // each router's on a stream of its own derived from the generator's state
  // (CreateRouterOnOwnStream), so that the other parameters do not depend
  // on the router.
  static absl::StatusOr<std::shared_ptr<MoeTransformerLm>> Create(const ExperimentSpec& spec,
                                                                  const DatasetInfo& info);

  // batch.inputs: [B, T] int64 with T <= the dataset's sequence_length;
  // batch.targets [B, T] (loss is left undefined without targets).
  ModelOutput Forward(const Batch& batch, const ForwardOptions& options) override;
  ModelStats Stats() const override;
  bool IsCausal() const override { return true; }
  std::vector<std::shared_ptr<Router>> Routers() const override;
  absl::StatusOr<std::vector<at::Tensor>> ShardExperts(
      std::shared_ptr<ExpertExchange> exchange) override;

  const std::vector<TransformerBlock>& blocks() const { return blocks_; }

 private:
  MoeTransformerLm(const ModelSpec& model, double top_k, const DatasetInfo& info);

  ModelSpec spec_;  // model part, resolved
  double top_k_;
  int64_t vocab_size_;
  int64_t max_tokens_;
  torch::nn::Embedding token_embedding_{nullptr};
  torch::nn::Embedding position_embedding_{nullptr};
  torch::nn::Dropout embedding_dropout_{nullptr};
  std::vector<TransformerBlock> blocks_;
  torch::nn::LayerNorm final_norm_{nullptr};
  torch::nn::Linear output_{nullptr};  // untied only
};

}  // namespace moelab

#endif  // MOELAB_MODELS_TRANSFORMER_LM_H_
