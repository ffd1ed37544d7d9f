#ifndef MOELAB_MODELS_ATTENTION_KERNEL_H_
#define MOELAB_MODELS_ATTENTION_KERNEL_H_

// Scaled dot-product attention over many small matrices as one autograd
// function with hand-written CPU forward and backward kernels.
//
// LibTorch's CPU bmm loops over the batch calling a GEMM per matrix, which
// for attention's [T, Dh] x [Dh, T] matrices (Dh = 16, T = 128) is dominated
// by per-call overhead; the scores, softmax, context and all their gradients
// are instead computed here in one at::parallel_for over the matrices
// (forward and backward each), skipping the masked half entirely when
// causal. The per-matrix kernels (attention_kernel_impl.inc) use GCC vector
// extensions and run in the widest build the CPU supports: AVX-512F, AVX2 +
// FMA, or the portable one.

#include <ATen/core/Tensor.h>

#include <utility>

namespace moelab {

// q, k, v: [N, T, Dh] (N = batch * heads), float or double, same dtype and
// sizes. Returns {context [N, T, Dh], probs [N, T, T]} with
//   probs[n, i, :] = softmax_j(scale * q[n, i] . k[n, j]) over j (j <= i
//                    when causal; probs is exactly 0 above the diagonal),
//   context[n, i]  = sum_j probs[n, i, j] v[n, j].
// Differentiable in q, k and v through both outputs (gradients arriving at
// probs are honoured); the backward is not itself differentiable.
std::pair<at::Tensor, at::Tensor> ScaledDotProductAttention(const at::Tensor& q,
                                                            const at::Tensor& k,
                                                            const at::Tensor& v, double scale,
                                                            bool causal);

// The builds of the kernels, narrowest first. The AVX2 and AVX-512 ones take
// the same sums in the same order and agree to a few ulps (the compiler
// fuses multiply-adds in places that differ between them); the portable one
// rounds each product separately.
enum class AttentionKernelIsa { kBaseline, kAvx2, kAvx512 };

// The widest build the CPU supports, within the limit below: the one
// ScaledDotProductAttention runs, but for heads whose rows are not whole
// 64-byte vectors (Dh not a multiple of 16 in float, 8 in double), which
// the AVX-512 build would take one row at a time and so leaves to AVX2.
AttentionKernelIsa AttentionKernelIsaInUse();

// For tests and benchmarks: runs no build wider than `limit` from now on
// (process wide); returns the previous limit.
AttentionKernelIsa LimitAttentionKernelIsaForTesting(AttentionKernelIsa limit);

}  // namespace moelab

#endif  // MOELAB_MODELS_ATTENTION_KERNEL_H_
