// "gate_entropy" and "aggregated_entropy": the mean entropy (nats) of the
// gate distribution r of every token, and of the distribution p the router
// selects on when it aggregates r over tokens (p_i = sum_j W_ij r_j,
// similarity- and attention-aware routing). Proposition 1 of the graph-of-
// tokens paper says H(p) < H(r); the entropy-vs-fluctuation table pairs
// them with fluctuation. Both are computed in float64.

#include <ATen/ATen.h>

#include "core/layer_metric.h"

namespace moelab {
namespace {

// Sum over the rows of probs [..., E] of each row's entropy, and the rows.
LayerMetricSum EntropySum(const at::Tensor& probs) {
  const at::Tensor p = probs.detach().to(at::kDouble).reshape({-1, probs.size(-1)});  // [N, E]
  const at::Tensor terms = at::where(p > 0, -p * at::log(p.clamp_min(1e-300)), at::zeros_like(p));
  return {.sum = terms.sum().item<double>(), .count = static_cast<double>(p.size(0))};
}

MOELAB_REGISTER_LAYER_METRIC("gate_entropy",
                             {.description = "mean entropy H(r) of the gate distribution (nats)",
                              .title = "Entropy H(r) (nats)",
                              .accumulate = [](const RoutingDecision& d) -> LayerMetricSum {
                                if (!d.gate_probs.defined()) return {};
                                return EntropySum(d.gate_probs);
                              }});

MOELAB_REGISTER_LAYER_METRIC("aggregated_entropy",
                             {.description = "mean entropy H(p) of the aggregated distribution "
                                             "a graph-of-tokens router selects on (nats)",
                              .title = "Entropy H(p) (nats)",
                              .accumulate = [](const RoutingDecision& d) -> LayerMetricSum {
                                if (!d.aggregated_probs.defined()) return {};
                                return EntropySum(d.aggregated_probs);
                              }});

}  // namespace
}  // namespace moelab
