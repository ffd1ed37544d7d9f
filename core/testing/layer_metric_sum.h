#ifndef MOELAB_CORE_TESTING_LAYER_METRIC_SUM_H_
#define MOELAB_CORE_TESTING_LAYER_METRIC_SUM_H_

// For tests of a registered layer metric: its contribution from one
// decision, found by name (a test fails when the name is not registered).

#include <gtest/gtest.h>

#include "core/layer_metric.h"

namespace moelab {

inline LayerMetricSum AccumulateLayerMetric(const char* name, const RoutingDecision& decision) {
  absl::StatusOr<const LayerMetricRegistration*> metric = LayerMetricRegistry().Find(name);
  EXPECT_TRUE(metric.ok()) << metric.status();
  return metric.ok() ? (*metric)->accumulate(decision) : LayerMetricSum{};
}

}  // namespace moelab

#endif  // MOELAB_CORE_TESTING_LAYER_METRIC_SUM_H_
