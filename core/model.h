#ifndef MOELAB_CORE_MODEL_H_
#define MOELAB_CORE_MODEL_H_

// The model contract. Models are plugins registered by name with
// MOELAB_REGISTER_MODEL; they live in models/.
//
// Example (hypothetical, not in the tree): a bag-of-words classifier with one
// MoE layer, for the text-classification task of core/task.h's example:
//
//   class BowMoe : public Model {
//    public:
//     BowMoe(const ExperimentSpec& spec, const DatasetInfo& info) { ... }
//     ModelOutput Forward(const Batch& batch, const ForwardOptions& options) override {
//       at::Tensor x = embedding_->forward(batch.inputs);   // [B, T, D]
//       MoeLayerOutput moe = moe_->forward(x, context);     // routes [B, T] tokens
//       ModelOutput out;
//       out.logits = head_->forward(moe.hidden.mean(1));    // [B, C]
//       out.loss = at::cross_entropy_loss(out.logits, batch.targets);
//       out.aux_loss = at::zeros({});
//       AccumulateAuxLosses(moe.decision, &out.aux_loss);  // model_spec_util.h
//       if (options.keep_routing) out.routing.push_back(moe.decision);
//       return out;
//     }
//     ModelStats Stats() const override { ... }
//     bool IsCausal() const override { return false; }
//     std::vector<std::shared_ptr<Router>> Routers() const override {
//       return {moe_->router()};
//     }
//   };
//
//   MOELAB_REGISTER_MODEL("bow_moe",
//       {.description = "bag of words with one MoE layer",
//        .resolve = ..., .validate = ..., .router_dims = ...,
//        .create = [](const ExperimentSpec& spec, const DatasetInfo& info)
//            -> absl::StatusOr<std::shared_ptr<Model>> {
//          return std::make_shared<BowMoe>(spec, info);
//        },
//        .task = kTextClassificationTask});
//
// Transformer models build their blocks with models/block_stack.h; see
// models/transformer_lm.cc and models/vit.cc.

#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/dataset.h"
#include "core/expert_exchange.h"
#include "core/registry.h"
#include "core/router.h"
#include "proto/experiment.pb.h"

namespace moelab {

struct ForwardOptions {
  // Return every MoE layer's RoutingDecision (analytics, probes).
  bool keep_routing = false;
  // Training steps set this to false: a model may then leave
  // ModelOutput::logits undefined and compute the loss without them (an LM
  // fuses its vocabulary projection with the cross-entropy).
  bool need_logits = true;
};

struct ModelOutput {
  // LM: [B, T, V] next-token logits. Vision: [B, C] class logits. May be
  // undefined when ForwardOptions::need_logits is false.
  at::Tensor logits;
  // Scalar mean cross-entropy over all targets.
  at::Tensor loss;
  // Scalar sum of every MoE layer's auxiliary router losses (already
  // weighted by their coefficients); zero when there are none.
  at::Tensor aux_loss;
  // One per MoE layer, in depth order, when ForwardOptions::keep_routing.
  std::vector<RoutingDecision> routing;
};

struct ModelStats {
  int64_t total_parameters = 0;
  // Parameters touched by one token at the configured k (experts counted k
  // times, embeddings once).
  int64_t active_parameters_per_token = 0;
  // Forward multiply-adds x2 per token at the configured k, attention over
  // the full sequence included.
  double flops_per_token = 0;
  // Forward FLOPs of one expert applied to one token.
  double flops_per_expert_per_token = 0;
  int64_t num_moe_layers = 0;
};

class Model : public torch::nn::Module {
 public:
  virtual ModelOutput Forward(const Batch& batch, const ForwardOptions& options) = 0;
  virtual ModelStats Stats() const = 0;
  // True for autoregressive models, whose outputs at position i may depend
  // only on inputs 0..i.
  virtual bool IsCausal() const = 0;
  // The routers of the MoE layers, in depth order.
  virtual std::vector<std::shared_ptr<Router>> Routers() const = 0;
  // Expert parallelism: every MoE layer keeps only this rank's share of its
  // experts and exchanges tokens with the ranks of `exchange` for the rest
  // (core/expert_exchange.h). Returns the parameters it kept that are split
  // over the ranks. The default refuses: a model supports it by handing the
  // call to its MoE layers (models/block_stack.h).
  virtual absl::StatusOr<std::vector<at::Tensor>> ShardExperts(
      std::shared_ptr<ExpertExchange> exchange) {
    return absl::UnimplementedError("this model cannot split its experts over ranks");
  }
};

struct ModelRegistration {
  // The field of ModelSpec's options oneof this model reads (e.g.
  // ModelSpec::kVit); OPTIONS_NOT_SET when it takes none. Another model's
  // options are refused for it (core/plugin_options.h) before `resolve`.
  ModelSpec::OptionsCase options = ModelSpec::OPTIONS_NOT_SET;
  std::string description;
  // Applies model.preset and fills documented defaults in place. Errors
  // name the field (an unknown preset lists the known ones).
  std::function<absl::Status(ModelSpec*)> resolve;
  // Checks a resolved model spec.
  std::function<absl::Status(const ModelSpec&)> validate;
  // The shapes this model builds its routers for (from a resolved spec).
  std::function<RouterDims(const ModelSpec&)> router_dims;
  // Builds the model, its routers from spec.router, its parameters seeded
  // by the caller (torch::manual_seed) before the call.
  std::function<absl::StatusOr<std::shared_ptr<Model>>(const ExperimentSpec&, const DatasetInfo&)>
      create;
  // The task (core/task.h) the model solves; a spec pairs it only with a
  // dataset of the same task.
  std::string task;
};

Registry<ModelRegistration>& ModelRegistry();

// Refuses another model's options, then applies registration.resolve.
absl::Status ResolveModelSpec(const ModelRegistration& registration, ModelSpec* spec);

// Refuses another model's options, then runs registration.validate.
absl::Status ValidateModelSpec(const ModelRegistration& registration, const ModelSpec& spec);

// Looks the model up by spec.model.name, validates and builds it.
absl::StatusOr<std::shared_ptr<Model>> CreateModel(const ExperimentSpec& spec,
                                                   const DatasetInfo& info);

}  // namespace moelab

#define MOELAB_REGISTER_MODEL(name, ...)                                        \
  static const bool MOELAB_REGISTRY_CONCAT(kMoelabModelRegistered_, __LINE__) = \
      ::moelab::ModelRegistry().Register(name, ::moelab::ModelRegistration __VA_ARGS__)

#endif  // MOELAB_CORE_MODEL_H_
