#include "core/evaluation.h"

#include <ATen/ATen.h>
#include <torch/utils.h>

#include <algorithm>

#include "core/batch_collective.h"
#include "core/corruption.h"

namespace moelab {

absl::StatusOr<Evaluation> Evaluate(Model& model, const Dataset& data, Split split,
                                    int64_t batch_size, int max_batches, const c10::Device& device,
                                    EvaluationShards* shards) {
  torch::NoGradGuard no_grad;
  // Each batch is routed whole, by itself, even inside a training job's
  // batch collective.
  ScopedBatchCollective local(nullptr);
  model.eval();
  int64_t batches = data.NumBatches(split, batch_size);
  if (max_batches > 0) batches = std::min<int64_t>(batches, max_batches);
  const int processes = shards != nullptr ? shards->count() : 1;
  const int index = shards != nullptr ? shards->index() : 0;
  std::vector<LayerRoutingAccumulator> layers;
  double nll = 0, correct = 0;
  int64_t count = 0;
  const int64_t rounds = (batches + processes - 1) / processes;
  for (int64_t round = 0; round < rounds; ++round) {
    const int64_t i = round * processes + index;
    const bool own = i < batches;  // else a stand-in, to keep in step
    Batch batch = ToDevice(data.GetBatch(split, batch_size, own ? i : i % batches, 0, 0), device);
    ModelOutput out = model.Forward(batch, ForwardOptions{.keep_routing = true});
    if (layers.empty()) {
      for (const RoutingDecision& d : out.routing) {
        layers.emplace_back(d.selected.size(-1));
      }
    }
    if (!own) continue;
    const int64_t n = batch.targets.numel();
    nll += out.loss.item<double>() * n;
    correct += out.logits.argmax(-1).eq(batch.targets).sum().item<double>();
    count += n;
    for (size_t l = 0; l < out.routing.size(); ++l) layers[l].Add(out.routing[l]);
  }
  if (shards != nullptr && shards->count() > 1) {
    std::vector<double> sums = {nll, correct, static_cast<double>(count)};
    for (const LayerRoutingAccumulator& layer : layers) {
      const std::vector<double> layer_sums = layer.Sums();
      sums.insert(sums.end(), layer_sums.begin(), layer_sums.end());
    }
    if (absl::Status s = shards->Sum(&sums); !s.ok()) return s;
    nll = sums[0];
    correct = sums[1];
    count = static_cast<int64_t>(sums[2]);
    size_t offset = 3;
    for (LayerRoutingAccumulator& layer : layers) {
      const size_t n = layer.Sums().size();
      layer.SetSums(std::vector<double>(sums.begin() + offset, sums.begin() + offset + n));
      offset += n;
    }
  }
  Evaluation e;
  e.targets = count;
  if (count > 0) {
    e.loss = nll / count;
    e.accuracy = correct / count;
  }
  for (size_t l = 0; l < layers.size(); ++l) e.layers.push_back(layers[l].Finish(l));
  return e;
}

absl::StatusOr<CorruptedMetrics> EvaluateCorrupted(Model& model, const Dataset& data,
                                                   const CorruptionSpec& corruption,
                                                   int64_t batch_size, int max_batches,
                                                   int64_t change_batches, uint64_t seed,
                                                   const c10::Device& device) {
  torch::NoGradGuard no_grad;
  ScopedBatchCollective local(nullptr);  // every batch routed by itself
  model.eval();
  int64_t batches = data.NumBatches(Split::kValid, batch_size);
  if (max_batches > 0) batches = std::min<int64_t>(batches, max_batches);
  const bool aligned = PreservesPositions(corruption.kind());
  double nll = 0, correct = 0, changed = 0;
  int64_t count = 0, compared = 0;
  for (int64_t i = 0; i < batches; ++i) {
    absl::StatusOr<Batch> corrupted =
        CorruptedBatch(data, Split::kValid, batch_size, i, corruption, seed);
    if (!corrupted.ok()) return corrupted.status();
    Batch batch = ToDevice(*corrupted, device);
    const bool compare = aligned && i < change_batches;
    ModelOutput out = model.Forward(batch, ForwardOptions{.keep_routing = compare});
    const int64_t n = batch.targets.numel();
    nll += out.loss.item<double>() * n;
    correct += out.logits.argmax(-1).eq(batch.targets).sum().item<double>();
    count += n;
    if (!compare) continue;
    Batch clean = ToDevice(data.GetBatch(Split::kValid, batch_size, i, 0, 0), device);
    ModelOutput reference = model.Forward(clean, ForwardOptions{.keep_routing = true});
    for (size_t l = 0; l < out.routing.size(); ++l) {
      ProbeAssignment a = AssignmentOf(reference.routing[l]);
      ProbeAssignment b = AssignmentOf(out.routing[l]);
      changed += SetFluctuation(a, b) * a.top1.numel();
      compared += a.top1.numel();
    }
  }
  CorruptedMetrics m;
  *m.mutable_corruption() = corruption;
  if (count > 0) {
    m.set_loss(nll / count);
    m.set_accuracy(correct / count);
  }
  m.set_expert_change(compared > 0 ? changed / compared : -1);
  return m;
}

std::vector<int64_t> ProbeIndices(const Dataset& data, int count, uint64_t seed) {
  const int64_t available = data.NumExamples(Split::kValid);
  at::Generator gen = at::detail::createCPUGenerator(seed ^ 0x9e3779b97f4a7c15ull);
  at::Tensor perm = at::randperm(available, gen, at::kLong);
  const int64_t n = std::min<int64_t>(count, available);
  at::Tensor chosen = std::get<0>(perm.slice(0, 0, n).sort());
  return std::vector<int64_t>(chosen.data_ptr<int64_t>(), chosen.data_ptr<int64_t>() + n);
}

std::vector<ProbeAssignment> ProbeRouting(Model& model, const Dataset& data,
                                          const std::vector<int64_t>& indices, int64_t batch_size,
                                          const c10::Device& device) {
  torch::NoGradGuard no_grad;
  ScopedBatchCollective local(nullptr);  // every batch routed by itself
  model.eval();
  std::vector<std::vector<at::Tensor>> top1, selected, head;
  for (size_t start = 0; start < indices.size(); start += batch_size) {
    std::vector<int64_t> chunk(indices.begin() + start,
                               indices.begin() + std::min(indices.size(), start + batch_size));
    Batch batch = ToDevice(data.GetExamples(Split::kValid, chunk), device);
    ModelOutput out = model.Forward(batch, ForwardOptions{.keep_routing = true});
    top1.resize(out.routing.size());
    selected.resize(out.routing.size());
    head.resize(out.routing.size());
    for (size_t l = 0; l < out.routing.size(); ++l) {
      ProbeAssignment a = AssignmentOf(out.routing[l]);
      top1[l].push_back(a.top1);
      selected[l].push_back(a.selected);
      if (a.head.defined()) head[l].push_back(a.head);
    }
  }
  std::vector<ProbeAssignment> result(top1.size());
  for (size_t l = 0; l < top1.size(); ++l) {
    result[l].top1 = at::cat(top1[l]);
    result[l].selected = at::cat(selected[l]);
    if (!head[l].empty()) result[l].head = at::cat(head[l]);
  }
  return result;
}

}  // namespace moelab
