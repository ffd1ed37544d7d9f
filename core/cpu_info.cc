#include "core/cpu_info.h"

#include <cstdlib>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace moelab {

absl::StatusOr<CpuInfo> ParseCpuInfo(absl::string_view text) {
  CpuInfo cpu;
  std::set<std::string> flags;
  bool flags_seen = false;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    const size_t colon = line.find(':');
    if (colon == absl::string_view::npos) continue;
    const absl::string_view key = absl::StripAsciiWhitespace(line.substr(0, colon));
    const absl::string_view value = absl::StripAsciiWhitespace(line.substr(colon + 1));
    if (key == "processor") {
      ++cpu.logical_cpus;
    } else if (key == "vendor_id" && cpu.vendor.empty()) {
      cpu.vendor = std::string(value);
    } else if (key == "model name" && cpu.model.empty()) {
      cpu.model = std::string(value);
    } else if (key == "cpu family" && cpu.family < 0) {
      if (!absl::SimpleAtoi(value, &cpu.family)) cpu.family = -1;
    } else if (key == "flags" && !flags_seen) {
      // The first processor's flags; every core of one machine has the same.
      flags_seen = true;
      for (absl::string_view flag : absl::StrSplit(value, ' ', absl::SkipEmpty())) {
        flags.insert(std::string(flag));
      }
    }
  }
  if (cpu.logical_cpus == 0) {
    return absl::InvalidArgumentError("cpuinfo: no 'processor' entry");
  }
  cpu.avx2 = flags.count("avx2") > 0;
  cpu.avx512f = flags.count("avx512f") > 0;
  cpu.avx512_bf16 = flags.count("avx512_bf16") > 0;
  cpu.amx_bf16 = flags.count("amx_bf16") > 0;
  return cpu;
}

absl::StatusOr<CpuInfo> ReadCpuInfo() {
  std::ifstream in("/proc/cpuinfo");
  if (!in) return absl::NotFoundError("cannot open /proc/cpuinfo");
  std::stringstream text;
  text << in.rdbuf();
  return ParseCpuInfo(text.str());
}

bool Bf16MatmulOutrunsFp32(const CpuInfo& cpu) {
  return cpu.amx_bf16 || (cpu.avx512_bf16 && cpu.vendor == "AuthenticAMD");
}

std::string DescribeCpu(const CpuInfo& cpu) {
  auto yes = [](bool b) { return b ? "yes" : "no"; };
  std::string line = cpu.model.empty() ? "unknown processor" : cpu.model;
  if (cpu.family >= 0) absl::StrAppend(&line, " (family ", cpu.family, ")");
  absl::StrAppend(&line, ", ", cpu.logical_cpus, " logical CPUs; AVX2 ", yes(cpu.avx2),
                  ", AVX-512 ", yes(cpu.avx512f), ", AVX512-BF16 ", yes(cpu.avx512_bf16),
                  ", AMX-BF16 ", yes(cpu.amx_bf16));
  // OpenBLAS picks its kernels by this when set (e.g. AVX2 kernels on a
  // processor that has AVX-512), which moves every fp32 figure.
  const char* coretype = std::getenv("OPENBLAS_CORETYPE");
  absl::StrAppend(&line, "; OPENBLAS_CORETYPE=",
                  coretype != nullptr && *coretype != '\0' ? coretype : "(unset)");
  return line;
}

}  // namespace moelab
