// "gate_margin": the mean over tokens of r_(1) - r_(2), the gap between a
// token's largest and second-largest gate probabilities. A token with a
// small margin changes its top-1 expert under a small change of its hidden
// state or of the gate, which is what routing fluctuation counts; a router
// that claims to fluctuate less should route with larger margins, or keep
// them from closing.

#include <ATen/ATen.h>

#include <tuple>

#include "core/layer_metric.h"

namespace moelab {
namespace {

LayerMetricSum GateMarginSum(const RoutingDecision& decision) {
  if (!decision.gate_probs.defined() || decision.gate_probs.size(-1) < 2) return {};
  const at::Tensor r =  // [N, E]
      decision.gate_probs.detach().to(at::kDouble).reshape({-1, decision.gate_probs.size(-1)});
  const at::Tensor top2 = std::get<0>(r.topk(2, /*dim=*/-1));  // [N, 2]
  return {.sum = (top2.select(1, 0) - top2.select(1, 1)).sum().item<double>(),
          .count = static_cast<double>(r.size(0))};
}

MOELAB_REGISTER_LAYER_METRIC("gate_margin",
                             {.description = "mean gap between a token's two largest gate "
                                             "probabilities, r_(1) - r_(2)",
                              .title = "Gate margin r(1) − r(2)",
                              .accumulate = GateMarginSum});

}  // namespace
}  // namespace moelab
