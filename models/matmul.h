#ifndef MOELAB_MODELS_MATMUL_H_
#define MOELAB_MODELS_MATMUL_H_

// The models' matrix products: fp32 results from fp32 or bf16 operands,
// through oneDNN's GEMMs on CPU.
//
// Why not at::mm: LibTorch's fp32 products go to OpenBLAS, which runs 2-6x
// below oneDNN at moelab's shapes on the machines measured (DESIGN.md,
// `bazel run //experiments:gemm_peaks`), and its bf16 products return bf16,
// so a weight gradient formed in bf16 would be rounded before reaching the
// fp32 master gradient. oneDNN's bf16 x bf16 -> fp32 GEMM accumulates and
// returns fp32, and can add into an existing fp32 buffer.
//
// A layer casts its operands once for the precision in force
// (core/precision.h), keeps the cast copies for its backward pass, and forms
// every product from them:
//
//   const Precision precision = CurrentPrecision();
//   const at::Tensor x_op = MatmulOperand(x, precision);  // [N, D]
//   const at::Tensor w_op = MatmulOperand(w, precision);  // [H, D]
//   at::Tensor y = Matmul(x_op, w_op.t());                // [N, H] fp32
//   ...backward, with g_op = MatmulOperand(grad_y, precision):
//   MatmulInto(grad_w, g_op.t(), x_op, /*accumulate=*/true);  // [H, D] fp32
//
// Off CPU (CUDA) the same calls run ATen's products in the operand type and
// convert the result to fp32.

#include <ATen/core/Tensor.h>

#include "proto/experiment.pb.h"

namespace moelab {

// How BF16 holds its operands, chosen once per process from the processor
// (core/cpu_info.h: Bf16MatmulOutrunsFp32), never from a timing, so that a
// run's numbers do not depend on the machine's load that day.
enum class Bf16Operands {
  // bf16 tensors (half the memory), multiplied by oneDNN's bf16 x bf16 ->
  // fp32 GEMM: where bf16 products outrun fp32 ones (AMX, AMD Zen 4/5).
  kBf16,
  // fp32 tensors holding bf16-rounded values, multiplied by the fp32 sgemm:
  // the same arithmetic (the product of two bf16 numbers is exact in fp32,
  // and both GEMMs accumulate in fp32) up to summation order, at the speed of
  // the faster GEMM on processors whose bf16 products are slower.
  kRoundedFp32,
};
Bf16Operands CurrentBf16Operands();
// Overrides the choice for the rest of the process (tests, benchmarks).
void SetBf16Operands(Bf16Operands operands);
// One phrase for logs: how BF16's operands are held and multiplied here.
const char* DescribeBf16Operands();

// The type MatmulOperand gives a float tensor: kFloat for FP32 (and
// PRECISION_UNSPECIFIED) and for BF16 held as kRoundedFp32; kBFloat16 for
// BF16 held as kBf16.
at::ScalarType OperandType(Precision precision);

// A float `t` rounded to the precision's operands, in OperandType(precision):
// a no-op at FP32. Tensors of other types (double, in tests' references) come
// back unchanged. Meant for the forward passes of hand-written autograd
// functions; under autograd it differentiates as a cast does (the gradient is
// cast back, so it too is rounded to bf16).
at::Tensor MatmulOperand(const at::Tensor& t, Precision precision);

// MatmulOperand for a float temporary that the caller owns and will not read
// again at full precision (a softmax block, an activation, a gradient whose
// fp32 uses are done): where BF16 holds its operands in fp32, a contiguous `t`
// that does not require grad is rounded in place and returned, saving a copy
// as large as `t` (bench_lm's output layer rounds a 16 MiB gradient block five
// times a step). Otherwise it is MatmulOperand(t, precision) and `t` is left
// as is.
at::Tensor MatmulOperandInPlace(at::Tensor t, Precision precision);

// out = a b, or out += a b when `accumulate`. a: [M, K], b: [K, N], both
// fp32 or both bf16, each row-major or a transposed row-major matrix (other
// layouts are copied first); out: fp32 [M, N] with unit column stride (a
// row block of a larger matrix is fine). Double operands with a double out
// go through ATen, so that models run in double for reference tests. Not
// differentiable: for kernels with hand-written backward passes.
void MatmulInto(at::Tensor& out, const at::Tensor& a, const at::Tensor& b, bool accumulate = false);

// a b as a new [M, N] tensor (fp32, or double for double operands); same
// operand rules, not differentiable.
at::Tensor Matmul(const at::Tensor& a, const at::Tensor& b);

// Whether oneDNN runs bf16 products on this machine (it needs AVX-512;
// AVX512-BF16 or AMX make them fast). Where it does not, MatmulInto forms a
// product of bf16 operands in fp32 from their exact fp32 values: the same
// numbers up to summation order, with none of the speed.
bool HasOneDnnBf16Matmul();

}  // namespace moelab

#endif  // MOELAB_MODELS_MATMUL_H_
