#ifndef MOELAB_CORE_LAYER_METRIC_H_
#define MOELAB_CORE_LAYER_METRIC_H_

// The routing-metric seam: a per-layer metric defined once, as a sum over
// the tokens of each evaluated batch divided by a count. Every evaluation
// accumulates every registered metric over the same tokens as the load
// (core/routing_metrics.h), and the value reaches
//   - result.json, as LayerRoutingMetrics.values["NAME"] of every epoch and
//     of the final evaluation;
//   - metrics.csv, as the column lL_NAME of each MoE layer L;
//   - tables, by naming it in TableSpec.layer_metrics (the mean over MoE
//     layers of the final evaluation, mean ± std over seeds), and in a
//     claim (Claim.layer_metric, judged on per-seed paired differences) or
//     a sweep's selection rule.
// The entropies H(r) and H(p), experts per token, the dropped share and the
// aggregation diagnostics are such metrics (core/metrics/); only the load,
// a per-expert vector, and the fluctuations, which compare two epochs, are
// not sums over tokens and stay fields of LayerRoutingMetrics.
// A metric is one .cc file in core/metrics/ and its test beside it; the
// folder's BUILD globs both, so nothing else changes.
//
// Example: the share of tokens whose gate puts more than half its mass on
// one expert (core/metrics/confident_share.cc):
//
//   MOELAB_REGISTER_LAYER_METRIC(
//       "confident_share",
//       {.description = "share of tokens with max_e r_e > 0.5",
//        .title = "Confident tokens (%)",
//        .table_scale = 100,
//        .accumulate = [](const RoutingDecision& d) -> LayerMetricSum {
//          const at::Tensor r = d.gate_probs.detach().reshape({-1, d.gate_probs.size(-1)});
//          return {.sum = r.amax(-1).gt(0.5).sum().item<double>(),
//                  .count = static_cast<double>(r.size(0))};
//        }});
//
// A metric that does not apply to a decision (it needs aggregated_probs,
// say) returns count 0 there; a layer where it never applied has no value,
// an empty CSV cell and no table entry.

#include <functional>
#include <string>

#include "core/registry.h"
#include "core/router.h"

namespace moelab {

// One batch's contribution: the metric over an evaluation is the sum of
// `sum` divided by the sum of `count`.
struct LayerMetricSum {
  double sum = 0;
  double count = 0;
};

struct LayerMetricRegistration {
  // One line for `run --list`.
  std::string description;
  // A table's column title, e.g. "Gate margin (top-1 − top-2)".
  std::string title;
  // Tables show the value times this (100 for a share shown in percent).
  double table_scale = 1;
  // The contribution of one MoE layer's decision over a batch [B, T].
  std::function<LayerMetricSum(const RoutingDecision&)> accumulate;
};

Registry<LayerMetricRegistration>& LayerMetricRegistry();

// The metrics of core/metrics/ that moelab itself reads beyond the writers:
// the run's identity-aggregation check and summary, the final experts per
// token (and so expert FLOPs), and the tables' built-in columns.
inline constexpr char kGateEntropyMetric[] = "gate_entropy";
inline constexpr char kAggregatedEntropyMetric[] = "aggregated_entropy";
inline constexpr char kExpertsPerTokenMetric[] = "experts_per_token";
inline constexpr char kDroppedFractionMetric[] = "dropped_fraction";
inline constexpr char kAggregationSelfWeightMetric[] = "aggregation_self_weight";
inline constexpr char kAggregationEffectiveNeighboursMetric[] = "aggregation_effective_neighbours";

}  // namespace moelab

#define MOELAB_REGISTER_LAYER_METRIC(name, ...)                                       \
  static const bool MOELAB_REGISTRY_CONCAT(kMoelabLayerMetricRegistered_, __LINE__) = \
      ::moelab::LayerMetricRegistry().Register(name,                                  \
                                               ::moelab::LayerMetricRegistration __VA_ARGS__)

#endif  // MOELAB_CORE_LAYER_METRIC_H_
