// The kernels of attention_kernel_impl.inc compiled with -mavx2 -mfma (see
// the attention_kernel_avx2 target); attention_kernel.cc calls them only
// where the CPU supports both. Include nothing here that instantiates
// templates or inline functions with external linkage.

#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

namespace moelab {
#define MOELAB_ATTENTION_ISA attention_avx2
#define MOELAB_KERNEL_VECTOR_BYTES 32
#include "models/attention_kernel_impl.inc"
#undef MOELAB_KERNEL_VECTOR_BYTES
#undef MOELAB_ATTENTION_ISA
}  // namespace moelab
