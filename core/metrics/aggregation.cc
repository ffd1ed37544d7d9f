// "aggregation_self_weight" and "aggregation_effective_neighbours": for a
// router that aggregates the gate over tokens, p_i = sum_j W_ij r_j, the
// mean weight a token keeps on itself (W_ii) and the mean effective number
// of tokens it aggregates over, exp(H(W_i)). A self-weight near 1 means
// p = r: the aggregation does nothing, and the run flags the layer
// (kIdentityAggregationSelfWeight, core/routing_metrics.h). The router
// reports both per token or neither; one without the other applies nowhere.

#include <ATen/ATen.h>

#include "core/layer_metric.h"

namespace moelab {
namespace {

bool ReportsAggregation(const RoutingDecision& d) {
  return d.aggregation_self_weight.defined() && d.aggregation_effective_neighbours.defined();
}

LayerMetricSum MeanOverTokens(const at::Tensor& per_token) {
  return {.sum = per_token.detach().to(at::kDouble).sum().item<double>(),
          .count = static_cast<double>(per_token.numel())};
}

MOELAB_REGISTER_LAYER_METRIC("aggregation_self_weight",
                             {.description = "mean self-weight W_ii of a router that aggregates "
                                             "the gate over tokens (1: p = r)",
                              .title = "Aggregation self-weight W_ii",
                              .accumulate = [](const RoutingDecision& d) -> LayerMetricSum {
                                if (!ReportsAggregation(d)) return {};
                                return MeanOverTokens(d.aggregation_self_weight);
                              }});

MOELAB_REGISTER_LAYER_METRIC("aggregation_effective_neighbours",
                             {.description = "mean effective number of tokens aggregated over, "
                                             "exp(H(W_i))",
                              .title = "Aggregation neighbours exp(H(W_i))",
                              .accumulate = [](const RoutingDecision& d) -> LayerMetricSum {
                                if (!ReportsAggregation(d)) return {};
                                return MeanOverTokens(d.aggregation_effective_neighbours);
                              }});

}  // namespace
}  // namespace moelab
