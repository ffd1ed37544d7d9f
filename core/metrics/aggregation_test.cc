#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "core/layer_metric.h"
#include "core/testing/layer_metric_sum.h"

namespace moelab {
namespace {

TEST(AggregationMetricsTest, MeansOverTokensOfWhatTheRouterReports) {
  RoutingDecision d;
  d.selected = at::zeros({2, 2, 3}, at::kBool);
  // [B, T] = [2, 2]: self-weights 1, 0.5, 0.25, 0.25; neighbours 1, 2, 4, 4.
  d.aggregation_self_weight = at::tensor({1.0f, 0.5f, 0.25f, 0.25f}).reshape({2, 2});
  d.aggregation_effective_neighbours = at::tensor({1.0f, 2.0f, 4.0f, 4.0f}).reshape({2, 2});
  const LayerMetricSum w = AccumulateLayerMetric(kAggregationSelfWeightMetric, d);
  EXPECT_DOUBLE_EQ(w.count, 4);
  EXPECT_DOUBLE_EQ(w.sum, 2.0);
  const LayerMetricSum n = AccumulateLayerMetric(kAggregationEffectiveNeighboursMetric, d);
  EXPECT_DOUBLE_EQ(n.count, 4);
  EXPECT_DOUBLE_EQ(n.sum, 11.0);
}

TEST(AggregationMetricsTest, OneWithoutTheOtherAppliesNowhere) {
  RoutingDecision d;
  d.selected = at::zeros({1, 2, 3}, at::kBool);
  d.aggregation_self_weight = at::tensor({1.0f, 0.5f}).reshape({1, 2});
  EXPECT_EQ(AccumulateLayerMetric(kAggregationSelfWeightMetric, d).count, 0);
  EXPECT_EQ(AccumulateLayerMetric(kAggregationEffectiveNeighboursMetric, d).count, 0);
}

}  // namespace
}  // namespace moelab
