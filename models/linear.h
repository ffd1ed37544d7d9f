#ifndef MOELAB_MODELS_LINEAR_H_
#define MOELAB_MODELS_LINEAR_H_

// A linear layer's product in the precision in force (core/precision.h):
// y = x weightᵀ + bias, fp32 in and out, with operands in bf16 under BF16
// and every gradient formed in fp32 by oneDNN (models/matmul.h).
//
//   torch::nn::Linear up(128, 512);        // holds the fp32 parameters
//   at::Tensor y = Linear(x, up->weight, up->bias);  // [B, T, 512]
//
// The bf16 copies of x and weight made in the forward pass are what the
// backward pass uses: one cast each per step, and half the saved memory.

#include <ATen/core/Tensor.h>

namespace moelab {

// x: [..., in] float; weight: [out, in] float; bias: [out] float or an
// undefined tensor. Returns [..., out] float. Differentiable once.
at::Tensor Linear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias);

}  // namespace moelab

#endif  // MOELAB_MODELS_LINEAR_H_
