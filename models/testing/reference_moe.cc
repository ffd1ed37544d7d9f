#include "models/testing/reference_moe.h"

#include <ATen/ops/matmul.h>
#include <ATen/ops/stack.h>
#include <ATen/ops/zeros.h>

#include <vector>

#include "models/feed_forward.h"

namespace moelab {

at::Tensor ReferenceMoe(MoeLayerImpl& layer, const at::Tensor& hidden,
                        const RoutingDecision& decision) {
  const int64_t b = hidden.size(0), t = hidden.size(1), dim = hidden.size(2);
  const int64_t e = layer.options.num_experts();
  const at::Tensor x = hidden.reshape({b * t, dim});
  const at::Tensor selected = decision.selected.reshape({b * t, e}).to(at::kCPU);
  const at::Tensor combine = decision.combine_weights.reshape({b * t, e});
  std::vector<at::Tensor> rows;
  for (int64_t n = 0; n < b * t; ++n) {
    at::Tensor acc = at::zeros({dim}, hidden.options());
    for (int64_t j = 0; j < e; ++j) {
      if (!selected[n][j].item<bool>()) continue;
      const at::Tensor h =
          ApplyActivation(at::matmul(x[n], layer.w1[j]) + layer.b1[j], layer.options.activation());
      acc = acc + combine[n][j] * (at::matmul(h, layer.w2[j]) + layer.b2[j]);
    }
    if (layer.shared) acc = acc + layer.shared->forward(x[n]);
    rows.push_back(acc);
  }
  return at::stack(rows).view({b, t, dim});
}

}  // namespace moelab
