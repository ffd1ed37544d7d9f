#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "core/layer_metric.h"
#include "core/testing/layer_metric_sum.h"

namespace moelab {
namespace {

TEST(DroppedFractionTest, DroppedTokensOverTokensAndZeroForARouterThatNeverDrops) {
  absl::StatusOr<const LayerMetricRegistration*> metric =
      LayerMetricRegistry().Find(kDroppedFractionMetric);
  ASSERT_TRUE(metric.ok()) << metric.status();
  EXPECT_EQ((*metric)->table_scale, 100);  // shown in percent
  RoutingDecision d;
  d.selected = at::ones({2, 2, 4}, at::kBool);
  LayerMetricSum sum = AccumulateLayerMetric(kDroppedFractionMetric, d);
  EXPECT_DOUBLE_EQ(sum.sum, 0);
  EXPECT_DOUBLE_EQ(sum.count, 4);
  d.dropped = at::tensor({0, 1, 1, 0}).to(at::kBool).reshape({2, 2});
  sum = AccumulateLayerMetric(kDroppedFractionMetric, d);
  EXPECT_DOUBLE_EQ(sum.sum, 2);
  EXPECT_DOUBLE_EQ(sum.count, 4);
}

}  // namespace
}  // namespace moelab
