#ifndef MOELAB_EXPERIMENTS_GEMM_PEAKS_H_
#define MOELAB_EXPERIMENTS_GEMM_PEAKS_H_

// This machine's matrix-product speed at moelab's shapes, through each
// library LibTorch can reach: the roofline a training step is judged
// against. fp32 goes through ATen's BLAS (OpenBLAS here) or oneDNN (on
// oneDNN-layout tensors); bf16 through ATen, which hands it to oneDNN. The
// two paths moelab's layers take (models/matmul.h: oneDNN's sgemm for fp32,
// its bf16 x bf16 -> fp32 GEMM for bf16) are measured beside them.

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

namespace moelab {

enum class GemmPath {
  kFp32Blas,    // at::linear on float32 tensors (OpenBLAS)
  kFp32OneDnn,  // at::mkldnn_linear on oneDNN-layout float32 tensors
  kBf16,        // at::linear on bfloat16 tensors (oneDNN), bf16 result
  kFp32Moelab,  // moelab::Matmul on float32 operands (dnnl_sgemm)
  kBf16Moelab,  // moelab::Matmul on bfloat16 operands (dnnl_gemm_bf16bf16f32),
                // fp32 result
};

// Every path, fp32 ones first.
std::vector<GemmPath> AllGemmPaths();

const char* GemmPathName(GemmPath path);

// Whether the path's operands are bfloat16 (its rate counts toward the bf16
// peak).
bool GemmPathIsBf16(GemmPath path);

// Whether this build and processor can run `path` as itself: LibTorch's
// oneDNN for the ATen oneDNN paths; oneDNN's bf16 GEMM for kBf16Moelab
// (where it is missing, moelab::Matmul forms the product in fp32, which is
// no bf16 rate).
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
