#include "models/kernel_isa.h"

#include <algorithm>
#include <atomic>

namespace moelab {
namespace {

KernelIsa SupportedIsa() {
#if defined(__x86_64__)
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
    return __builtin_cpu_supports("avx512f") ? KernelIsa::kAvx512 : KernelIsa::kAvx2;
  }
#endif
  return KernelIsa::kBaseline;
}

std::atomic<KernelIsa> isa_limit{KernelIsa::kAvx512};

}  // namespace

KernelIsa KernelIsaInUse() {
  static const KernelIsa supported = SupportedIsa();
  return std::min(supported, isa_limit.load(std::memory_order_relaxed));
}

KernelIsa LimitKernelIsaForTesting(KernelIsa limit) { return isa_limit.exchange(limit); }

const char* KernelIsaName(KernelIsa isa) {
  switch (isa) {
    case KernelIsa::kAvx512:
      return "avx512";
    case KernelIsa::kAvx2:
      return "avx2";
    default:
      return "baseline";
  }
}

}  // namespace moelab
