#ifndef MOELAB_CORE_CPU_INFO_H_
#define MOELAB_CORE_CPU_INFO_H_

// The processor a figure was measured on: model and the instruction sets
// that decide GEMM speed. Side-by-side ratios move with the machine (1.6x on
// one 2-core EPYC, 3.6x on another), so every benchmark prints this line.

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace moelab {

struct CpuInfo {
  std::string vendor;  // "AuthenticAMD", "GenuineIntel": the first "vendor_id"
  std::string model;   // "AMD EPYC 9B45", from the first "model name"
  int family = -1;     // "cpu family"; -1 when absent
  int logical_cpus = 0;
  bool avx2 = false;
  bool avx512f = false;
  bool avx512_bf16 = false;
  bool amx_bf16 = false;  // Intel AMX tiles with bf16
};

// Parses the text of /proc/cpuinfo. An error when it names no processor.
absl::StatusOr<CpuInfo> ParseCpuInfo(absl::string_view text);

// /proc/cpuinfo of this machine.
absl::StatusOr<CpuInfo> ReadCpuInfo();

// Whether this processor forms bf16 matrix products faster than fp32 ones:
// with AMX-BF16 tiles, or with AVX512-BF16 on AMD (Zen 4 and 5 retire a bf16
// dot-product instruction, twice an FMA's multiply-adds, at the FMAs' rate;
// measured here: 628-700 GFLOP/s against 287-322 fp32 on a Zen 5). Intel's
// AVX512-BF16 without AMX issues it on one port where FMAs use two, so bf16
// runs at best at the fp32 rate (measured: 120-147 against 163-207 on a
// Xeon of family 6, model 207, whose AMX the VM hides).
bool Bf16MatmulOutrunsFp32(const CpuInfo& cpu);

// One line: "AMD EPYC 9B45 (family 26), 2 logical CPUs; AVX2 yes, AVX-512
// yes, AVX512-BF16 yes, AMX-BF16 no; OPENBLAS_CORETYPE=Haswell".
std::string DescribeCpu(const CpuInfo& cpu);

}  // namespace moelab

#endif  // MOELAB_CORE_CPU_INFO_H_
