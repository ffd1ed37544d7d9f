#include "core/routing_metrics.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <numeric>

#include "absl/base/casts.h"
#include "google/protobuf/unknown_field_set.h"

namespace moelab {
ProbeAssignment AssignmentOf(const RoutingDecision& decision) {
  const int64_t experts = decision.selected.size(-1);
  ProbeAssignment a;
  a.selected = decision.selected.detach().reshape({-1, experts}).to(at::kCPU);
  at::Tensor weights = decision.combine_weights.detach().reshape({-1, experts}).to(at::kCPU);
  // Unselected experts must never win the argmax, even with weight 0.
  weights =
      at::where(a.selected, weights.to(at::kDouble), at::full_like(weights, -1.0, at::kDouble));
  a.top1 =
      at::where(a.selected.any(1), weights.argmax(1), at::full({weights.size(0)}, -1, at::kLong));
  if (decision.aggregation_head.defined()) {
    a.head = decision.aggregation_head.detach().reshape({-1}).to(at::kCPU, at::kLong);
  }
  return a;
}

bool HeadChange(const ProbeAssignment& before, const ProbeAssignment& after, double* share) {
  if (!before.head.defined() || !after.head.defined() ||
      before.head.sizes() != after.head.sizes()) {
    return false;
  }
  *share = before.head.numel() == 0
               ? 0
               : before.head.ne(after.head).to(at::kDouble).mean().item<double>();
  return true;
}

double Top1Fluctuation(const ProbeAssignment& before, const ProbeAssignment& after) {
  TORCH_CHECK(before.top1.sizes() == after.top1.sizes(), "probe sets differ in size");
  if (before.top1.numel() == 0) return 0;
  return before.top1.ne(after.top1).to(at::kDouble).mean().item<double>();
}

double SetFluctuation(const ProbeAssignment& before, const ProbeAssignment& after) {
  TORCH_CHECK(before.selected.sizes() == after.selected.sizes(), "probe sets differ in size");
  if (before.selected.numel() == 0) return 0;
  return before.selected.ne(after.selected).any(1).to(at::kDouble).mean().item<double>();
}

LayerRoutingAccumulator::LayerRoutingAccumulator(int64_t num_experts)
    : num_experts_(num_experts), pairs_per_expert_(num_experts, 0.0) {}

void LayerRoutingAccumulator::Add(const RoutingDecision& decision) {
  at::Tensor selected = decision.selected.detach().reshape({-1, num_experts_}).to(at::kCPU);
  at::Tensor counts = selected.sum(0).to(at::kDouble).contiguous();
  const double* c = counts.data_ptr<double>();
  for (int64_t e = 0; e < num_experts_; ++e) pairs_per_expert_[e] += c[e];
  tokens_ += selected.size(0);
  for (const auto& [name, metric] : LayerMetricRegistry().entries()) {
    const LayerMetricSum batch = metric.accumulate(decision);
    if (batch.count <= 0) continue;
    LayerMetricSum& total = registered_[name];
    total.sum += batch.sum;
    total.count += batch.count;
  }
}

std::vector<double> LayerRoutingAccumulator::Sums() const {
  std::vector<double> sums = pairs_per_expert_;
  sums.push_back(static_cast<double>(tokens_));
  // Every registered metric, in the registry's order, applied or not.
  for (const auto& [name, metric] : LayerMetricRegistry().entries()) {
    const auto it = registered_.find(name);
    sums.push_back(it != registered_.end() ? it->second.sum : 0);
    sums.push_back(it != registered_.end() ? it->second.count : 0);
  }
  return sums;
}

void LayerRoutingAccumulator::SetSums(const std::vector<double>& sums) {
  TORCH_CHECK(sums.size() == Sums().size(), "SetSums: ", sums.size(), " values, expected ",
              Sums().size());
  std::copy(sums.begin(), sums.begin() + num_experts_, pairs_per_expert_.begin());
  size_t i = num_experts_;
  tokens_ = static_cast<int64_t>(sums[i++]);
  registered_.clear();
  for (const auto& [name, metric] : LayerMetricRegistry().entries()) {
    const double sum = sums[i++], count = sums[i++];
    if (count > 0) registered_[name] = LayerMetricSum{.sum = sum, .count = count};
  }
}

LayerRoutingMetrics LayerRoutingAccumulator::Finish(int layer) const {
  LayerRoutingMetrics m;
  m.set_layer(layer);
  const double total = std::accumulate(pairs_per_expert_.begin(), pairs_per_expert_.end(), 0.0);
  const double mean = total / num_experts_;
  double squares = 0, largest = 0;
  int dead = 0;
  for (double pairs : pairs_per_expert_) {
    m.add_expert_share(total > 0 ? pairs / total : 0);
    squares += (pairs - mean) * (pairs - mean);
    largest = std::max(largest, pairs);
    dead += pairs == 0;
  }
  if (mean > 0) {
    m.set_load_cv(std::sqrt(squares / num_experts_) / mean);
    m.set_load_max_over_mean(largest / mean);
  }
  m.set_dead_experts(dead);
  for (const auto& [name, total] : registered_) {
    (*m.mutable_values())[name] = total.sum / total.count;
  }
  return m;
}

std::optional<double> LayerValue(const LayerRoutingMetrics& layer, const std::string& name) {
  const auto found = layer.values().find(name);
  if (found == layer.values().end()) return std::nullopt;
  return found->second;
}

namespace {

void MoveLegacyFields(LayerRoutingMetrics* layer) {
  google::protobuf::UnknownFieldSet* unknown = layer->GetReflection()->MutableUnknownFields(layer);
  std::map<std::string, double> old_fields;
  for (int i = 0; i < unknown->field_count(); ++i) {
    const google::protobuf::UnknownField& field = unknown->field(i);
    for (const auto& [number, name] : kLegacyLayerFields) {
      if (field.number() != number) continue;
      if (field.type() == google::protobuf::UnknownField::TYPE_FIXED64) {
        old_fields[name] = absl::bit_cast<double>(field.fixed64());
      } else if (field.type() == google::protobuf::UnknownField::TYPE_VARINT) {
        old_fields[name] = static_cast<double>(field.varint());
      }
    }
  }
  if (old_fields.empty()) return;
  for (const auto& [metric, value] : LegacyLayerValues(old_fields)) {
    layer->mutable_values()->try_emplace(metric, value);
  }
  for (const auto& [number, name] : kLegacyLayerFields) unknown->DeleteByNumber(number);
}

}  // namespace

void MoveLegacyLayerFields(RunResult* result) {
  for (EpochMetrics& epoch : *result->mutable_epochs()) {
    for (LayerRoutingMetrics& layer : *epoch.mutable_layers()) MoveLegacyFields(&layer);
  }
  for (LayerRoutingMetrics& layer : *result->mutable_final()->mutable_layers()) {
    MoveLegacyFields(&layer);
  }
}

std::map<std::string, double> LegacyLayerValues(const std::map<std::string, double>& old_fields) {
  if (old_fields.empty()) return {};
  auto old = [&](const char* name) {
    const auto found = old_fields.find(name);
    return found != old_fields.end() ? found->second : 0.0;  // proto3: absent is 0
  };
  std::map<std::string, double> values = {{kGateEntropyMetric, old("gate_entropy")},
                                          {kExpertsPerTokenMetric, old("experts_per_token")},
                                          {kDroppedFractionMetric, old("dropped_fraction")}};
  // Written only for routers with p; a NaN there was measured.
  const double aggregated = old("aggregated_entropy");
  if (aggregated > 0 || std::isnan(aggregated)) values[kAggregatedEntropyMetric] = aggregated;
  if (old("has_aggregation") != 0) {
    values[kAggregationSelfWeightMetric] = old("aggregation_self_weight");
    values[kAggregationEffectiveNeighboursMetric] = old("aggregation_effective_neighbours");
  }
  return values;
}

double PearsonCorrelation(const std::vector<double>& x, const std::vector<double>& y) {
  TORCH_CHECK(x.size() == y.size(), "series differ in length");
  const double n = static_cast<double>(x.size());
  if (n < 2) return 0;
  const double mx = std::accumulate(x.begin(), x.end(), 0.0) / n;
  const double my = std::accumulate(y.begin(), y.end(), 0.0) / n;
  double sxy = 0, sxx = 0, syy = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    sxy += (x[i] - mx) * (y[i] - my);
    sxx += (x[i] - mx) * (x[i] - mx);
    syy += (y[i] - my) * (y[i] - my);
  }
  if (sxx == 0 || syy == 0) return 0;
  return sxy / std::sqrt(sxx * syy);
}

}  // namespace moelab
