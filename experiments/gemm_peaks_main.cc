// This machine's GEMM peaks at moelab's shapes, per library and precision:
//
//   bazel run //experiments:gemm_peaks [-- --threads=2 --reps=10]
//
// The first line describes the processor (model, AVX-512, AVX512-BF16, AMX);
// then one line per shape and path: ATen's BLAS, oneDNN and bf16 paths, and
// the two that moelab's layers use (models/matmul.h); a path this build or
// processor cannot run is named as skipped. The last two are the best
// rate per precision over every path, `peak_fp32_gflops: X` and
// `peak_bf16_gflops: Y`, which bench_lm prints beside the training step's
// achieved rate. Where moelab's BF16 holds its operands as bf16-rounded fp32
// values (models/matmul.h: processors whose bf16 products are slower, or
// have none, as AVX2-only ones, where oneDNN's bf16 products run at 1-2
// GFLOP/s), a bf16-precision product is formed by the fp32 sgemm: its rate
// counts toward the bf16 peak too, so the bf16 roofline compares the step
// with the fastest way this machine has to multiply bf16 operands.

#include <ATen/Parallel.h>

#include <cstdio>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "core/cpu_info.h"
#include "experiments/gemm_peaks.h"
#include "models/matmul.h"

ABSL_FLAG(int, threads, 2, "Intra-op threads.");
ABSL_FLAG(int, reps, 10, "Timed products per shape and path (the median counts).");

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  const int threads = absl::GetFlag(FLAGS_threads);
  const int reps = absl::GetFlag(FLAGS_reps);
  if (threads < 1 || reps < 1) {
    std::fprintf(stderr, "error: --threads and --reps must be at least 1\n");
    return 2;
  }
  at::set_num_threads(threads);
  absl::StatusOr<moelab::CpuInfo> cpu = moelab::ReadCpuInfo();
  std::printf("cpu: %s\n", cpu.ok() ? moelab::DescribeCpu(*cpu).c_str()
                                    : std::string(cpu.status().message()).c_str());
  std::printf("threads: %d, median of %d products\n", threads, reps);
  for (moelab::GemmPath path : moelab::AllGemmPaths()) {
    if (!moelab::GemmPathAvailable(path)) {
      std::printf("skipped: %s (not available on this build or processor)\n",
                  moelab::GemmPathName(path));
    }
  }
  const bool bf16_as_rounded_fp32 =
      moelab::CurrentBf16Operands() == moelab::Bf16Operands::kRoundedFp32;
  std::printf("bf16 operands: %s\n", moelab::DescribeBf16Operands());
  double best_fp32 = 0, best_bf16 = 0;
  std::string best_fp32_where, best_bf16_where;
  for (const moelab::GemmShape& shape : moelab::MoelabGemmShapes()) {
    for (moelab::GemmPath path : moelab::AllGemmPaths()) {
      if (!moelab::GemmPathAvailable(path)) continue;
      const double gflops = moelab::MeasureGemmGflops(path, shape, reps);
      const std::string where = std::string(moelab::GemmPathName(path)) + " [" +
                                std::to_string(shape.m) + "," + std::to_string(shape.k) + "]x[" +
                                std::to_string(shape.k) + "," + std::to_string(shape.n) + "]";
      std::printf("%-60s %8.1f GFLOP/s\n", where.c_str(), gflops);
      const bool bf16 = moelab::GemmPathIsBf16(path);
      double& best = bf16 ? best_bf16 : best_fp32;
      std::string& best_where = bf16 ? best_bf16_where : best_fp32_where;
      if (gflops > best) {
        best = gflops;
        best_where = where;
      }
      if (path == moelab::GemmPath::kFp32Moelab && bf16_as_rounded_fp32 && gflops > best_bf16) {
        best_bf16 = gflops;
        best_bf16_where = where + " on bf16-rounded operands (how BF16 multiplies here)";
      }
    }
  }
  std::printf("peak_fp32_gflops: %.1f  (%s)\n", best_fp32, best_fp32_where.c_str());
  std::printf("peak_bf16_gflops: %.1f  (%s)\n", best_bf16, best_bf16_where.c_str());
  return 0;
}
