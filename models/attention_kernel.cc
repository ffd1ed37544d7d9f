#include "models/attention_kernel.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/csrc/autograd/custom_function.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#include "models/kernel_isa.h"

namespace moelab {

// The builds of the kernels for other instruction sets: attention_kernel_avx2.cc
// (AVX2 + FMA) and attention_kernel_avx512.cc (AVX-512F).
#if defined(MOELAB_ATTENTION_HAVE_X86_BUILDS)
namespace attention_avx2 {
#include "models/attention_kernel_entry_points.inc"
}  // namespace attention_avx2
namespace attention_avx512 {
#include "models/attention_kernel_entry_points.inc"
}  // namespace attention_avx512
#endif

// The portable build of the kernels (SSE2 on x86-64).
#define MOELAB_ATTENTION_ISA attention_baseline
#define MOELAB_KERNEL_VECTOR_BYTES 32
#include "models/attention_kernel_impl.inc"
#undef MOELAB_KERNEL_VECTOR_BYTES
#undef MOELAB_ATTENTION_ISA

namespace {

// A transposed [T, Dh] matrix and a block of score rows, both padded to
// whole 16-element blocks. The other builds include the same .inc, so their
// kMaxRowsPerBlock is this one; each kernel static_asserts its rows per
// block against it.
int64_t ScratchSize(int64_t t, int64_t dh) {
  const int64_t ld = (t + 15) / 16 * 16;
  return ld * dh + attention_baseline::kMaxRowsPerBlock * ld;
}

// The build for heads of `row_bytes` bytes: the AVX-512 one takes rows as
// whole 64-byte vectors (Dh a multiple of 16 in float, 8 in double) and runs
// others a row at a time, where the AVX2 one still takes several.
KernelIsa IsaForRowBytes(int64_t row_bytes) {
  const KernelIsa isa = KernelIsaInUse();
  if (isa == KernelIsa::kAvx512 && row_bytes % 64 != 0) return KernelIsa::kAvx2;
  return isa;
}

template <typename T>
void ForwardRange(const T* q, const T* k, const T* v, T* context, T* probs, int64_t begin,
                  int64_t end, int64_t t, int64_t dh, T scale, bool causal, T* scratch) {
  switch (IsaForRowBytes(dh * static_cast<int64_t>(sizeof(T)))) {
#if defined(MOELAB_ATTENTION_HAVE_X86_BUILDS)
    case KernelIsa::kAvx512:
      return attention_avx512::Forward(q, k, v, context, probs, begin, end, t, dh, scale, causal,
                                       scratch);
    case KernelIsa::kAvx2:
      return attention_avx2::Forward(q, k, v, context, probs, begin, end, t, dh, scale, causal,
                                     scratch);
#endif
    default:
      return attention_baseline::Forward(q, k, v, context, probs, begin, end, t, dh, scale, causal,
                                         scratch);
  }
}

template <typename T>
void BackwardRange(const T* q, const T* k, const T* v, const T* probs, const T* grad_context,
                   const T* grad_probs, T* grad_q, T* grad_k, T* grad_v, int64_t begin, int64_t end,
                   int64_t t, int64_t dh, T scale, bool causal, T* scratch) {
  switch (IsaForRowBytes(dh * static_cast<int64_t>(sizeof(T)))) {
#if defined(MOELAB_ATTENTION_HAVE_X86_BUILDS)
    case KernelIsa::kAvx512:
      return attention_avx512::Backward(q, k, v, probs, grad_context, grad_probs, grad_q, grad_k,
                                        grad_v, begin, end, t, dh, scale, causal, scratch);
    case KernelIsa::kAvx2:
      return attention_avx2::Backward(q, k, v, probs, grad_context, grad_probs, grad_q, grad_k,
                                      grad_v, begin, end, t, dh, scale, causal, scratch);
#endif
    default:
      return attention_baseline::Backward(q, k, v, probs, grad_context, grad_probs, grad_q, grad_k,
                                          grad_v, begin, end, t, dh, scale, causal, scratch);
  }
}

struct Dims {
  int64_t n, t, dh;
};

class AttentionFunction : public torch::autograd::Function<AttentionFunction> {
 public:
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx,
                                                const at::Tensor& q_in, const at::Tensor& k_in,
                                                const at::Tensor& v_in, double scale, bool causal) {
    const at::Tensor q = q_in.contiguous(), k = k_in.contiguous(), v = v_in.contiguous();
    const Dims dims{q.size(0), q.size(1), q.size(2)};
    at::Tensor context = at::empty(q.sizes(), q.options());
    at::Tensor probs = at::empty({dims.n, dims.t, dims.t}, q.options());
    AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "ScaledDotProductAttention", [&] {
      const scalar_t* qp = q.data_ptr<scalar_t>();
      const scalar_t* kp = k.data_ptr<scalar_t>();
      const scalar_t* vp = v.data_ptr<scalar_t>();
      scalar_t* cp = context.data_ptr<scalar_t>();
      scalar_t* pp = probs.data_ptr<scalar_t>();
      at::parallel_for(0, dims.n, 1, [&](int64_t begin, int64_t end) {
        std::vector<scalar_t> scratch(ScratchSize(dims.t, dims.dh));
        ForwardRange<scalar_t>(qp, kp, vp, cp, pp, begin, end, dims.t, dims.dh,
                               static_cast<scalar_t>(scale), causal, scratch.data());
      });
    });
    ctx->set_materialize_grads(false);
    ctx->saved_data["scale"] = scale;
    ctx->saved_data["causal"] = causal;
    ctx->save_for_backward({q, k, v, probs});
    return {context, probs};
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &q = saved[0], &k = saved[1], &v = saved[2], &probs = saved[3];
    const double scale = ctx->saved_data["scale"].toDouble();
    const bool causal = ctx->saved_data["causal"].toBool();
    at::Tensor grad_context = grad_outputs[0], grad_probs = grad_outputs[1];
    if (!grad_context.defined() && !grad_probs.defined()) {
      return {at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
    }
    if (grad_context.defined()) {
      grad_context = grad_context.to(q.scalar_type()).contiguous();
    }
    if (grad_probs.defined()) {
      grad_probs = grad_probs.to(q.scalar_type()).contiguous();
    }
    const Dims dims{q.size(0), q.size(1), q.size(2)};
    at::Tensor grad_q = at::zeros(q.sizes(), q.options());
    at::Tensor grad_k = at::zeros(q.sizes(), q.options());
    at::Tensor grad_v = at::zeros(q.sizes(), q.options());
    AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "ScaledDotProductAttentionBackward", [&] {
      const scalar_t* qp = q.data_ptr<scalar_t>();
      const scalar_t* kp = k.data_ptr<scalar_t>();
      const scalar_t* vp = v.data_ptr<scalar_t>();
      const scalar_t* pp = probs.data_ptr<scalar_t>();
      const scalar_t* dcp = grad_context.defined() ? grad_context.data_ptr<scalar_t>() : nullptr;
      const scalar_t* dpp = grad_probs.defined() ? grad_probs.data_ptr<scalar_t>() : nullptr;
      scalar_t* dqp = grad_q.data_ptr<scalar_t>();
      scalar_t* dkp = grad_k.data_ptr<scalar_t>();
      scalar_t* dvp = grad_v.data_ptr<scalar_t>();
      at::parallel_for(0, dims.n, 1, [&](int64_t begin, int64_t end) {
        std::vector<scalar_t> scratch(ScratchSize(dims.t, dims.dh));
        BackwardRange<scalar_t>(qp, kp, vp, pp, dcp, dpp, dqp, dkp, dvp, begin, end, dims.t,
                                dims.dh, static_cast<scalar_t>(scale), causal, scratch.data());
      });
    });
    if (!grad_context.defined()) grad_v = at::Tensor();
    return {grad_q, grad_k, grad_v, at::Tensor(), at::Tensor()};
  }
};

}  // namespace

std::pair<at::Tensor, at::Tensor> ScaledDotProductAttention(const at::Tensor& q,
                                                            const at::Tensor& k,
                                                            const at::Tensor& v, double scale,
                                                            bool causal) {
  TORCH_CHECK(q.dim() == 3 && q.sizes() == k.sizes() && q.sizes() == v.sizes(),
              "ScaledDotProductAttention: q, k and v must be [N, T, Dh] of one "
              "size, got ",
              q.sizes(), ", ", k.sizes(), ", ", v.sizes());
  TORCH_CHECK(q.scalar_type() == k.scalar_type() && q.scalar_type() == v.scalar_type() &&
                  (q.scalar_type() == at::kFloat || q.scalar_type() == at::kDouble),
              "ScaledDotProductAttention: q, k and v must all be float or all "
              "double");
  TORCH_CHECK(q.device().is_cpu() && k.device().is_cpu() && v.device().is_cpu(),
              "ScaledDotProductAttention: CPU tensors only");
  TORCH_CHECK(q.size(1) >= 1 && q.size(2) >= 1,
              "ScaledDotProductAttention: T and Dh must be positive, got ", q.sizes());
  torch::autograd::variable_list out = AttentionFunction::apply(q, k, v, scale, causal);
  return {out[0], out[1]};
}

}  // namespace moelab
