// The kernels of attention_kernel_impl.inc compiled with -mavx512f and
// 64-byte vectors (see the attention_kernel_avx512 target);
// attention_kernel.cc calls them only where the CPU supports AVX-512F, AVX2
// and FMA. The same sums in the same order as the AVX2 build; results agree
// with it to a few ulps (where the compiler fuses multiply-adds differs).
// Include nothing here that instantiates templates or inline functions with
// external linkage.

#include <immintrin.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

namespace moelab {
#define MOELAB_ATTENTION_ISA attention_avx512
#define MOELAB_KERNEL_VECTOR_BYTES 64
#include "models/attention_kernel_impl.inc"
#undef MOELAB_KERNEL_VECTOR_BYTES
#undef MOELAB_ATTENTION_ISA
}  // namespace moelab
