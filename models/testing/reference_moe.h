#ifndef MOELAB_MODELS_TESTING_REFERENCE_MOE_H_
#define MOELAB_MODELS_TESTING_REFERENCE_MOE_H_

// The MoE layer written token by token and expert by expert, straight from
// the definition, for tests: out_t = sum over the selected e of
// combine_te * FFN_e(x_t) (+ the shared expert). Differentiable by plain
// autograd; slow.

#include <ATen/core/Tensor.h>

#include "core/router.h"
#include "models/moe_layer.h"

namespace moelab {

// hidden: [B, T, D]; decision.selected / combine_weights: [B, T, E].
at::Tensor ReferenceMoe(MoeLayerImpl& layer, const at::Tensor& hidden,
                        const RoutingDecision& decision);

}  // namespace moelab

#endif  // MOELAB_MODELS_TESTING_REFERENCE_MOE_H_
