#include "models/attention.h"

#include <ATen/ops/baddbmm.h>
#include <ATen/ops/bmm.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/full.h>
#include <ATen/ops/matmul.h>
#include <ATen/ops/softmax.h>

#include <cmath>
#include <limits>
#include <tuple>

#include "core/step_profiler.h"
#include "models/attention_kernel.h"
#include "models/linear.h"

namespace moelab {

SelfAttentionImpl::SelfAttentionImpl(const SelfAttentionOptions& options) : options(options) {
  const int64_t d = options.model_dim();
  TORCH_CHECK(options.num_heads() >= 1 && d % options.num_heads() == 0, "SelfAttention: num_heads ",
              options.num_heads(), " must divide model_dim ", d);
  query = register_module("query", torch::nn::Linear(d, d));
  key = register_module("key", torch::nn::Linear(d, d));
  value = register_module("value", torch::nn::Linear(d, d));
  out = register_module("out", torch::nn::Linear(d, d));
}

SelfAttentionOutput SelfAttentionImpl::forward(const at::Tensor& x, bool expose_for_routing) {
  // The whole sub-layer, projections included (core/step_profiler.h).
  ScopedPhase phase(kPhaseAttention);
  TORCH_CHECK(x.dim() == 3 && x.size(2) == options.model_dim(), "SelfAttention: x must be [B, T, ",
              options.model_dim(), "], got ", x.sizes());
  const int64_t batch = x.size(0), tokens = x.size(1);
  const int64_t heads = options.num_heads();
  const int64_t head_dim = options.model_dim() / heads;
  // One [B*T, D] x [D, 3D] matmul for q, k and v instead of three, and one
  // head-splitting copy: [B, T, 3, H, D/H] -> [3, B*H, T, D/H].
  const at::Tensor qkv = Linear(x, at::cat({query->weight, key->weight, value->weight}),
                                at::cat({query->bias, key->bias, value->bias}))
                             .view({batch, tokens, 3, heads, head_dim})
                             .permute({2, 0, 3, 1, 4})
                             .reshape({3, batch * heads, tokens, head_dim});
  // unbind, not qkv[0], qkv[1], qkv[2]: its backward stacks the three
  // gradients into one buffer, where each select's would zero-fill a whole
  // [3, B*H, T, D/H] tensor and autograd would add the three up.
  const std::vector<at::Tensor> qkv_heads = qkv.unbind(0);
  const at::Tensor &q = qkv_heads[0], &k = qkv_heads[1], &v = qkv_heads[2];  // [B*H, T, D/H]

  // Scores q k^T / sqrt(D/H), the (causal) softmax and the context in one
  // autograd function over the B*H matrices (models/attention_kernel.h);
  // LibTorch's CPU bmm would call a GEMM per small matrix.
  const double scale = 1.0 / std::sqrt(static_cast<double>(head_dim));
  at::Tensor context_heads, probs;  // [B*H, T, D/H], [B*H, T, T]
  if (x.device().is_cpu()) {
    std::tie(context_heads, probs) = ScaledDotProductAttention(q, k, v, scale, options.causal());
  } else {
    // Other devices batch small matmuls well: plain ATen, the causal mask
    // as an additive -inf riding on the scores' matmul.
    at::Tensor scores;
    if (options.causal()) {
      const at::Tensor mask =
          at::full({tokens, tokens}, -std::numeric_limits<double>::infinity(), x.options()).triu(1);
      scores = at::baddbmm(mask.expand({batch * heads, tokens, tokens}), q, k.transpose(1, 2),
                           /*beta=*/1.0, /*alpha=*/scale);
    } else {
      scores = at::bmm(q, k.transpose(1, 2)).mul_(scale);
    }
    probs = at::softmax(scores, -1);
    context_heads = at::bmm(probs, v);
  }
  const at::Tensor context = context_heads.view({batch, heads, tokens, head_dim})
                                 .transpose(1, 2)
                                 .reshape({batch, tokens, options.model_dim()});
  SelfAttentionOutput result;
  result.output = Linear(context, out->weight, out->bias);
  if (expose_for_routing) {
    result.probs = probs.view({batch, heads, tokens, tokens});
    // out.weight is [D, D] with out = context @ weight^T; head h's rows of
    // weight^T, [D/H, D], map its value vectors into model space.
    const at::Tensor head_out = out->weight.t().reshape({heads, head_dim, options.model_dim()});
    result.values = at::matmul(v.view({batch, heads, tokens, head_dim}),
                               head_out);  // [B, H, T, D]
  }
  return result;
}

}  // namespace moelab
