// "experts_per_token": the mean number of experts a token is routed to, the
// selected (token, expert) pairs over the tokens. k for token choice;
// varies per token under expert-choice and unified routing, whose compute
// budget is stated as it. The final figure drives the expert FLOPs per
// token that tables report (FinalMetrics.expert_flops_per_token).

#include <ATen/ATen.h>

#include "core/layer_metric.h"

namespace moelab {
namespace {

MOELAB_REGISTER_LAYER_METRIC(
    "experts_per_token",
    {.description = "mean number of experts a token is routed to",
     .title = "Experts/token",
     .accumulate = [](const RoutingDecision& d) -> LayerMetricSum {
       const int64_t experts = d.selected.size(-1);
       return {.sum = static_cast<double>(d.selected.detach().sum().item<int64_t>()),
               .count = static_cast<double>(experts > 0 ? d.selected.numel() / experts : 0)};
     }});

}  // namespace
}  // namespace moelab
