#include "experiments/gemm_peaks.h"

#include <ATen/ATen.h>
#include <ATen/Context.h>

#include <algorithm>
#include <chrono>

#include "models/matmul.h"

namespace moelab {

std::vector<GemmPath> AllGemmPaths() {
  return {GemmPath::kFp32Blas, GemmPath::kFp32OneDnn, GemmPath::kFp32Moelab, GemmPath::kBf16,
          GemmPath::kBf16Moelab};
}

const char* GemmPathName(GemmPath path) {
  switch (path) {
    case GemmPath::kFp32Blas:
      return "fp32 ATen/BLAS";
    case GemmPath::kFp32OneDnn:
      return "fp32 oneDNN";
    case GemmPath::kBf16:
      return "bf16 ATen/oneDNN";
    case GemmPath::kFp32Moelab:
      return "fp32 moelab (oneDNN sgemm)";
    case GemmPath::kBf16Moelab:
      return "bf16 moelab (oneDNN bf16->fp32 gemm)";
  }
  return "?";
}

bool GemmPathIsBf16(GemmPath path) {
  return path == GemmPath::kBf16 || path == GemmPath::kBf16Moelab;
}

bool GemmPathAvailable(GemmPath path) {
  switch (path) {
    case GemmPath::kFp32Blas:
    case GemmPath::kFp32Moelab:
      return true;
    case GemmPath::kFp32OneDnn:
    case GemmPath::kBf16:
      return at::hasMKLDNN();
    case GemmPath::kBf16Moelab:
      return HasOneDnnBf16Matmul();
  }
  return false;
}

namespace {

// The operands in the path's own type and layout, converted once.
struct Operands {
  at::Tensor x, w;
};

Operands Prepare(GemmPath path, const at::Tensor& x, const at::Tensor& w) {
  switch (path) {
    case GemmPath::kFp32OneDnn:
      return {x.to(at::kFloat).contiguous().to_mkldnn(), w.to(at::kFloat).contiguous().to_mkldnn()};
    case GemmPath::kBf16:
    case GemmPath::kBf16Moelab:
      return {x.to(at::kBFloat16).contiguous(), w.to(at::kBFloat16).contiguous()};
    default:
      return {x.to(at::kFloat).contiguous(), w.to(at::kFloat).contiguous()};
  }
}

at::Tensor Run(GemmPath path, const Operands& o) {
  switch (path) {
    case GemmPath::kFp32OneDnn:
      return at::mkldnn_linear(o.x, o.w, {});
    case GemmPath::kFp32Moelab:
    case GemmPath::kBf16Moelab:
      // As moelab's linear layer forms its forward product: x w^T, with w^T
      // passed to the GEMM as a transposed row-major matrix (no copy).
      return Matmul(o.x, o.w.t());
    default:
      return at::linear(o.x, o.w);
  }
}

}  // namespace

at::Tensor LinearThrough(GemmPath path, const at::Tensor& x, const at::Tensor& w) {
  at::Tensor y = Run(path, Prepare(path, x, w));
  if (y.is_mkldnn()) y = y.to_dense();
  return y.to(at::kFloat);
}

std::vector<GemmShape> MoelabGemmShapes() {
  return {{2048, 10000, 128}, {4096, 128, 512}, {2048, 2048, 2048}, {2048, 128, 10000}};
}

double MeasureGemmGflops(GemmPath path, const GemmShape& shape, int reps) {
  const Operands o =
      Prepare(path, at::randn({shape.m, shape.k}), at::randn({shape.n, shape.k}) * 0.01);
  Run(path, o);  // untimed: first-call allocations, oneDNN primitive creation
  std::vector<double> gflops;
  for (int i = 0; i < std::max(1, reps); ++i) {
    const auto start = std::chrono::steady_clock::now();
    Run(path, o);
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    gflops.push_back(2.0 * shape.m * shape.k * shape.n / seconds / 1e9);
  }
  std::sort(gflops.begin(), gflops.end());
  return gflops[gflops.size() / 2];
}

}  // namespace moelab
