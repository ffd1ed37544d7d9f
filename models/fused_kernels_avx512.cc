// The kernels of fused_kernels_impl.inc compiled for AVX-512F (-mavx512f, with -mavx2 -mfma), with
// 64-byte vectors (see the fused_kernels_avx512 target); fused_kernels.cc
// calls them only where KernelIsaInUse() allows. Include nothing here that
// instantiates templates or inline functions with external linkage.

#include <immintrin.h>

#include <cmath>
#include <cstdint>
#include <cstring>

namespace moelab {
#define MOELAB_FUSED_ISA fused_avx512
#define MOELAB_KERNEL_VECTOR_BYTES 64
#include "models/fused_kernels_impl.inc"
#undef MOELAB_KERNEL_VECTOR_BYTES
#undef MOELAB_FUSED_ISA
}  // namespace moelab
