#ifndef MOELAB_MODELS_FUSED_KERNELS_H_
#define MOELAB_MODELS_FUSED_KERNELS_H_

// One-pass CPU kernels for the pointwise and row-wise work between the
// models' matrix products: the experts' GELU and its backward, and the
// output layer's softmax cross-entropy with its gradient, each writing the
// next product's operand (models/matmul.h) in the same pass.
//
// Why: ATen runs these as separate passes over [P, H] or [n, V] tensors
// (gelu, a cast; gelu_backward, a cast; softmax, gather, log, scatter, a
// cast). At bench_lm's shapes on 2 Zen 5 cores (`bazel run
// //models:fused_kernels_benchmark`, both sides in each iteration) one
// layer's GELU forward + backward took 1.74 ms in ATen and 1.11 ms here
// with bf16 operands (1.48 and 0.88 in fp32), and one 409-row block of the
// softmax cross-entropy 1.86 and 0.87 ms (1.54 and 0.77): ~7 ms of a step.
// The kernels are compiled per instruction set (models/kernel_isa.h).
//
// An expert layer's forward and backward pass:
//
//   const at::Tensor pre = ...;  // [P, H] fp32: x w1 + b1, kept for backward
//   const at::Tensor h = GeluOperand(pre, precision);  // as MatmulOperand gives
//   ...backward, given grad_h = dL/dh [P, H] fp32 (the layer's own buffer):
//   const at::Tensor grad_pre_op = GeluBackwardInPlace(grad_h, pre, precision);
//   // grad_h now holds dL/dpre in fp32 (for the bias gradient).
//   MatmulInto(grad_w1, x_op.t(), MatmulOperandInPlace(grad_pre_op, precision));
//
// The backward recomputes GELU' from `pre` (the same one exp per element)
// instead of the forward storing it: the forward then writes only its
// operand, and the backward reads `pre` where it would read the derivative.
//
// Float tensors only (doubles take ATen's ops in the callers).

#include <ATen/core/Tensor.h>

#include "proto/experiment.pb.h"

namespace moelab {

// GELU (exact, erf form) of `pre` (float, contiguous), returned as
// MatmulOperand(GELU(pre), precision) would return it: fp32; fp32 holding
// bf16 values; or bf16. Φ is computed as ATen's vectorised GELU computes it
// (Abramowitz & Stegun 7.1.26, absolute error below 1.5e-7), so both agree to
// ~1e-7 times |pre|.
at::Tensor GeluOperand(const at::Tensor& pre, Precision precision);

// grad *= GELU'(pre), in place (float, contiguous, one size): the gradient
// of GELU's input from that of its output. Where the precision's operands
// are bf16 tensors, returns the product as one, rounded in the same pass;
// otherwise returns `grad` itself, for the caller's MatmulOperandInPlace to
// round (in place) once its fp32 uses are done.
at::Tensor GeluBackwardInPlace(at::Tensor& grad, const at::Tensor& pre, Precision precision);

// Softmax cross-entropy of the rows of `logits` [n, V] (float, contiguous)
// against `targets` [n] (int64, each in [0, V)): returns
// Σ_r (log Σ_j exp(logits[r, j]) - logits[r, targets[r]]) in double, each
// row's term from its maximum and sum of exps, so that a target whose
// probability underflows float still counts exactly. With `grad`, also
// writes softmax(logits[r]) - onehot(targets[r]) into it and overwrites
// `logits`: `grad` is [n, V] bf16, or float (`logits` itself is fine) holding
// values rounded to bf16 when `round_to_bf16`. The row sums run in float
// lanes; the result does not depend on the number of threads.
double SoftmaxCrossEntropySum(at::Tensor& logits, const at::Tensor& targets, at::Tensor* grad,
                              bool round_to_bf16 = false);

}  // namespace moelab

#endif  // MOELAB_MODELS_FUSED_KERNELS_H_
