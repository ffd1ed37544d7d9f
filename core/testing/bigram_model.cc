#include "core/testing/bigram_model.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <utility>

#include "core/data/corpus.h"
#include "core/tasks/language_modeling_name.h"

namespace moelab {

BigramModel::BigramModel(bool sees_the_end) : sees_the_end_(sees_the_end) {
  std::vector<double> flat;
  for (const auto& row : kBigramProbabilities) flat.insert(flat.end(), row, row + 4);
  log_p_ = at::log(at::tensor(flat, at::kDouble).reshape({4, 4})).to(at::kFloat);
}

ModelOutput BigramModel::Forward(const Batch& batch, const ForwardOptions& options) {
  at::Tensor inputs = batch.inputs;  // [B, T]
  if (sees_the_end_) inputs = inputs.select(1, -1).unsqueeze(1).expand_as(inputs);
  ModelOutput out;
  out.logits = log_p_.index_select(0, inputs.reshape({-1})).reshape({inputs.size(0), -1, 4});
  out.loss = at::cross_entropy_loss(out.logits.reshape({-1, 4}), batch.targets.reshape({-1}));
  out.aux_loss = at::zeros({});
  if (options.keep_routing) {
    RoutingDecision d;
    const at::Tensor odd = batch.inputs.remainder(2).eq(1);  // [B, T]
    d.selected = at::stack({odd.logical_not(), odd}, -1);    // [B, T, 2]
    d.combine_weights = d.selected.to(at::kFloat);
    d.gate_probs = d.combine_weights * 0.5 + 0.25;
    d.logits = at::log(d.gate_probs);
    out.routing.push_back(std::move(d));
  }
  return out;
}

std::unique_ptr<TokenStreamDataset> SmallTokenStream() {
  TokenizedCorpus corpus;
  corpus.vocab_size = 4;
  corpus.unk_id = 0;
  corpus.split(Split::kTrain) = {2, 3, 2, 0, 2, 3, 1};
  corpus.split(Split::kValid) = {3, 0, 0, 1, 2};
  corpus.split(Split::kTest) = {2, 2, 2};
  auto dataset = TokenStreamDataset::Create(std::move(corpus), 2, {"tr", "va", "te"});
  EXPECT_TRUE(dataset.ok()) << dataset.status();
  return dataset.ok() ? *std::move(dataset) : nullptr;
}

}  // namespace moelab
