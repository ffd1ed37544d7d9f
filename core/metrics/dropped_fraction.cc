// "dropped_fraction": the share of tokens that lost at least one of their
// choices to an expert's capacity (token choice with capacity_factor > 0;
// 0 for every router that does not drop). A dropped choice's share of the
// token goes through the residual only.

#include <ATen/ATen.h>

#include "core/layer_metric.h"

namespace moelab {
namespace {

MOELAB_REGISTER_LAYER_METRIC(
    "dropped_fraction",
    {.description = "share of tokens that lost a choice to expert capacity",
     .title = "Dropped tokens (%)",
     .table_scale = 100,
     .accumulate = [](const RoutingDecision& d) -> LayerMetricSum {
       const int64_t experts = d.selected.size(-1);
       const double tokens = static_cast<double>(experts > 0 ? d.selected.numel() / experts : 0);
       const double dropped =
           d.dropped.defined() ? static_cast<double>(d.dropped.detach().sum().item<int64_t>()) : 0;
       return {.sum = dropped, .count = tokens};
     }});

}  // namespace
}  // namespace moelab
