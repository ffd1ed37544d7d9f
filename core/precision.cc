#include "core/precision.h"

namespace moelab {
namespace {

thread_local Precision current_precision = FP32;

}  // namespace

Precision CurrentPrecision() { return current_precision; }

PrecisionScope::PrecisionScope(Precision precision) : previous_(current_precision) {
  current_precision = precision == PRECISION_UNSPECIFIED ? FP32 : precision;
}

PrecisionScope::~PrecisionScope() { current_precision = previous_; }

const char* PrecisionName(Precision precision) { return precision == BF16 ? "bf16" : "fp32"; }

}  // namespace moelab
