#include "experiments/testing/tiny_lm.h"

#include <ATen/ATen.h>

#include "core/router.h"
#include "core/tasks/language_modeling_name.h"

namespace moelab {

ExperimentSpec TinyMoeLmSpec(const std::string& router, double top_k) {
  ExperimentSpec spec;
  spec.set_name("tiny_lm");
  spec.mutable_model()->set_name("moe_transformer_lm");
  TransformerLmOptions* o = spec.mutable_model()->mutable_transformer_lm();
  o->set_num_layers(kTinyLayers);
  o->set_model_dim(kTinyDim);
  o->set_num_heads(kTinyHeads);
  o->set_dense_hidden(kTinyDim);
  o->set_dropout(0.0f);
  MoeSpec* moe = spec.mutable_model()->mutable_moe();
  moe->set_num_experts(kTinyExperts);
  moe->set_expert_hidden(kTinyDim);
  moe->set_moe_every(1);
  spec.mutable_router()->set_name(router);
  spec.mutable_router()->set_top_k(top_k);
  return spec;
}

absl::StatusOr<std::shared_ptr<Model>> MakeTinyMoeLm(ExperimentSpec* spec, uint64_t seed) {
  absl::StatusOr<const ModelRegistration*> model_entry = ModelRegistry().Find(spec->model().name());
  if (!model_entry.ok()) return model_entry.status();
  if (absl::Status s = ResolveModelSpec(**model_entry, spec->mutable_model()); !s.ok()) return s;
  absl::StatusOr<const RouterRegistration*> router_entry =
      RouterRegistry().Find(spec->router().name());
  if (!router_entry.ok()) return router_entry.status();
  ResolveRouterSpec(**router_entry, spec->mutable_router(),
                    (*model_entry)->router_dims(spec->model()));
  DatasetInfo info;
  info.task = kLanguageModelingTask;
  info.vocab_size = kTinyVocab;
  info.sequence_length = kTinyTokens;
  at::manual_seed(seed);
  return CreateModel(*spec, info);
}

Batch TinyLmBatch(uint64_t seed) {
  at::Generator gen = at::detail::createCPUGenerator(seed);
  Batch batch;
  batch.inputs = at::randint(kTinyVocab, {kTinyBatch, kTinyTokens}, gen);
  batch.targets = at::randint(kTinyVocab, {kTinyBatch, kTinyTokens}, gen);
  return batch;
}

}  // namespace moelab
