#ifndef MOELAB_EXPERIMENTS_GEMM_PEAKS_H_
#define MOELAB_EXPERIMENTS_GEMM_PEAKS_H_

// This machine's matrix-product speed at moelab's shapes, through each
// library LibTorch can reach: the roofline a training step is judged
// against. fp32 goes through ATen's BLAS (OpenBLAS here) or oneDNN (on
// oneDNN-layout tensors); bf16 through ATen, which hands it to oneDNN.

#include <cstdint>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

namespace moelab {

enum class GemmPath {
  kFp32Blas,    // at::linear on float32 tensors (OpenBLAS)
  kFp32OneDnn,  // at::mkldnn_linear on oneDNN-layout float32 tensors
  kBf16,        // at::linear on bfloat16 tensors (oneDNN)
};

const char* GemmPathName(GemmPath path);

// Whether this LibTorch build can run `path` at all.
bool GemmPathAvailable(GemmPath path);

// x [M, K] times w [N, K] transposed, as a linear layer computes it, through
// `path`; returns a float32 strided [M, N] result.
at::Tensor LinearThrough(GemmPath path, const at::Tensor& x, const at::Tensor& w);

struct GemmShape {
  int64_t m = 0, k = 0, n = 0;
};

// moelab's shapes: the output layer's backward ([2048, 10000] x [10000, 128]),
// an expert FFN ([4096, 128] x [128, 512]), a square 2048^3, and the output
// layer's forward ([2048, 128] x [128, 10000]).
std::vector<GemmShape> MoelabGemmShapes();

// Median GFLOP/s (2 M K N per product) of `reps` timed products after one
// untimed one; operands are converted to the path's type before timing.
double MeasureGemmGflops(GemmPath path, const GemmShape& shape, int reps);

}  // namespace moelab

#endif  // MOELAB_EXPERIMENTS_GEMM_PEAKS_H_
