#include "core/testing/bigram_model.h"

#include <ATen/ATen.h>

#include <utility>

namespace moelab {

BigramModel::BigramModel(bool sees_the_end, bool causal)
    : sees_the_end_(sees_the_end), causal_(causal) {
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

}  // namespace moelab
