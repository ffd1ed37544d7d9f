#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "core/layer_metric.h"
#include "core/testing/layer_metric_sum.h"

namespace moelab {
namespace {

TEST(ExpertsPerTokenTest, SelectedPairsOverTokens) {
  RoutingDecision d;
  // Three tokens over 3 experts with 2, 0 and 3 experts (expert-choice-like).
  d.selected = at::tensor({1, 1, 0, 0, 0, 0, 1, 1, 1}).to(at::kBool).reshape({1, 3, 3});
  const LayerMetricSum sum = AccumulateLayerMetric(kExpertsPerTokenMetric, d);
  EXPECT_DOUBLE_EQ(sum.sum, 5);
  EXPECT_DOUBLE_EQ(sum.count, 3);
}

}  // namespace
}  // namespace moelab
