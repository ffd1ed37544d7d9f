#ifndef MOELAB_MODELS_KERNEL_ISA_H_
#define MOELAB_MODELS_KERNEL_ISA_H_

// Which build of moelab's hand-written CPU kernels runs: the attention
// kernel (attention_kernel.h) and the fused pointwise kernels
// (fused_kernels.h) are each compiled three times, for the portable baseline,
// for AVX2 + FMA and for AVX-512F, and pick one at run time from the CPU's
// features, as ATen's own CPU kernels do; the rest of the build keeps no
// -march flags. A kernel dispatches on KernelIsaInUse():
//
//   switch (KernelIsaInUse()) {
//     case KernelIsa::kAvx512: return foo_avx512::Run(...);
//     case KernelIsa::kAvx2: return foo_avx2::Run(...);
//     default: return foo_baseline::Run(...);
//   }
//
// Tests run every build the machine supports under a ScopedKernelIsaLimit.

namespace moelab {

// The builds, narrowest first. The AVX-512 build is compiled with -mavx2
// -mfma too, so it needs all three.
enum class KernelIsa { kBaseline, kAvx2, kAvx512 };

// The widest build the CPU supports (kBaseline off x86-64), within the limit
// below.
KernelIsa KernelIsaInUse();

// For tests and benchmarks: runs no build wider than `limit` from now on
// (process wide); returns the previous limit.
KernelIsa LimitKernelIsaForTesting(KernelIsa limit);

// LimitKernelIsaForTesting for a scope.
class ScopedKernelIsaLimit {
 public:
  explicit ScopedKernelIsaLimit(KernelIsa limit) : previous_(LimitKernelIsaForTesting(limit)) {}
  ~ScopedKernelIsaLimit() { LimitKernelIsaForTesting(previous_); }
  ScopedKernelIsaLimit(const ScopedKernelIsaLimit&) = delete;
  ScopedKernelIsaLimit& operator=(const ScopedKernelIsaLimit&) = delete;

 private:
  KernelIsa previous_;
};

// "baseline", "avx2" or "avx512", for benchmark labels.
const char* KernelIsaName(KernelIsa isa);

}  // namespace moelab

#endif  // MOELAB_MODELS_KERNEL_ISA_H_
