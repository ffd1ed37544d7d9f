#include "core/layer_metric.h"

namespace moelab {

Registry<LayerMetricRegistration>& LayerMetricRegistry() {
  static auto* registry = new Registry<LayerMetricRegistration>("layer metric");
  return *registry;
}

}  // namespace moelab
