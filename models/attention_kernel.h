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
// FMA, or the portable one (models/kernel_isa.h). The AVX2 and AVX-512 builds
// take the same sums in the same order and agree to a few ulps (the compiler
// fuses multiply-adds in places that differ between them); the portable one
// rounds each product separately. The AVX-512 build takes heads whose rows
// are whole 64-byte vectors (Dh a multiple of 16 in float, 8 in double) and
// leaves the others to AVX2, which still takes several rows at a time.

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

}  // namespace moelab

#endif  // MOELAB_MODELS_ATTENTION_KERNEL_H_
