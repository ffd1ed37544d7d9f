#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "core/layer_metric.h"
#include "core/routing_metrics.h"

namespace moelab {
namespace {

TEST(GateMarginTest, IsTheMeanGapBetweenTheTwoLargestGateProbabilities) {
  RoutingDecision d;
  // Two tokens over 3 experts: gaps 0.5 - 0.3 = 0.2 and 0.9 - 0.05 = 0.85.
  d.gate_probs = at::tensor({0.2, 0.3, 0.5, 0.9, 0.05, 0.05}, at::kFloat).reshape({1, 2, 3});
  d.selected = at::zeros({1, 2, 3}, at::kBool);
  d.combine_weights = at::zeros({1, 2, 3});
  absl::StatusOr<const LayerMetricRegistration*> metric = LayerMetricRegistry().Find("gate_margin");
  ASSERT_TRUE(metric.ok()) << metric.status();
  const LayerMetricSum sum = (*metric)->accumulate(d);
  EXPECT_DOUBLE_EQ(sum.count, 2);
  EXPECT_NEAR(sum.sum, 0.2 + 0.85, 1e-6);

  // Through the accumulator, over two batches: (0.2 + 0.85 + 0.6) / 3.
  RoutingDecision one;
  one.gate_probs = at::tensor({0.8, 0.2, 0.0}, at::kFloat).reshape({1, 1, 3});
  one.selected = at::zeros({1, 1, 3}, at::kBool);
  one.combine_weights = at::zeros({1, 1, 3});
  LayerRoutingAccumulator accumulator(3);
  accumulator.Add(d);
  accumulator.Add(one);
  const LayerRoutingMetrics m = accumulator.Finish(0);
  ASSERT_EQ(m.values().count("gate_margin"), 1u);
  EXPECT_NEAR(m.values().at("gate_margin"), (0.2 + 0.85 + 0.6) / 3, 1e-6);
}

TEST(GateMarginTest, ADecisionWithoutAGateContributesNothing) {
  RoutingDecision d;
  d.selected = at::ones({1, 2, 2}, at::kBool);
  d.combine_weights = at::ones({1, 2, 2});
  LayerRoutingAccumulator accumulator(2);
  accumulator.Add(d);
  EXPECT_EQ(accumulator.Finish(0).values().count("gate_margin"), 0u);
}

}  // namespace
}  // namespace moelab
