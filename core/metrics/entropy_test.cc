#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>

#include "core/layer_metric.h"
#include "core/testing/layer_metric_sum.h"

namespace moelab {
namespace {

TEST(EntropyMetricsTest, GateEntropyIsTheSumOfEachTokensEntropyOverTokens) {
  RoutingDecision d;
  // Three tokens over 3 experts: ln 2, 0 and ln 3 nats.
  d.gate_probs = at::tensor({0.5, 0.5, 0.0, 1.0, 0.0, 0.0, 1 / 3.0, 1 / 3.0, 1 / 3.0}, at::kFloat)
                     .reshape({1, 3, 3});
  d.selected = at::zeros({1, 3, 3}, at::kBool);
  const LayerMetricSum h = AccumulateLayerMetric(kGateEntropyMetric, d);
  EXPECT_DOUBLE_EQ(h.count, 3);
  EXPECT_NEAR(h.sum, std::log(2.0) + std::log(3.0), 1e-6);
  // No aggregated distribution: H(p) does not apply.
  EXPECT_EQ(AccumulateLayerMetric(kAggregatedEntropyMetric, d).count, 0);
}

TEST(EntropyMetricsTest, AggregatedEntropyReadsP) {
  RoutingDecision d;
  d.gate_probs = at::tensor({1.0, 0.0, 0.0, 0.0}, at::kFloat).reshape({1, 1, 4});
  d.aggregated_probs = at::full({1, 1, 4}, 0.25, at::kFloat);
  d.selected = at::zeros({1, 1, 4}, at::kBool);
  const LayerMetricSum h = AccumulateLayerMetric(kAggregatedEntropyMetric, d);
  EXPECT_DOUBLE_EQ(h.count, 1);
  EXPECT_NEAR(h.sum, std::log(4.0), 1e-6);
  EXPECT_NEAR(AccumulateLayerMetric(kGateEntropyMetric, d).sum, 0, 1e-12);
}

TEST(EntropyMetricsTest, ADecisionWithoutAGateContributesNothing) {
  RoutingDecision d;
  d.selected = at::ones({1, 2, 2}, at::kBool);
  EXPECT_EQ(AccumulateLayerMetric(kGateEntropyMetric, d).count, 0);
}

}  // namespace
}  // namespace moelab
