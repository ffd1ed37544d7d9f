// The kernels of fused_kernels_impl.inc compiled for AVX2 + FMA (-mavx2 -mfma), with
// 32-byte vectors (see the fused_kernels_avx2 target); fused_kernels.cc
// calls them only where KernelIsaInUse() allows. Include nothing here that
// instantiates templates or inline functions with external linkage.

#include <cmath>
#include <cstdint>
#include <cstring>

namespace moelab {
#define MOELAB_FUSED_ISA fused_avx2
#define MOELAB_KERNEL_VECTOR_BYTES 32
#include "models/fused_kernels_impl.inc"
#undef MOELAB_KERNEL_VECTOR_BYTES
#undef MOELAB_FUSED_ISA
}  // namespace moelab
