#include "core/statistics.h"

#include <cmath>
#include <limits>

#include <c10/util/Exception.h>

namespace moelab {

double StudentT975(int df) {
  TORCH_CHECK(df >= 1, "StudentT975: df must be >= 1, got ", df);
  // Published quantiles (4 decimals) where the expansion below is poor.
  static constexpr double kTable[] = {
      12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060,
      2.2622,  2.2281, 2.2010, 2.1788, 2.1604, 2.1448, 2.1314, 2.1199,
      2.1098,  2.1009, 2.0930, 2.0860, 2.0796, 2.0739, 2.0687, 2.0639,
      2.0595,  2.0555, 2.0518, 2.0484, 2.0452, 2.0423};
  if (df <= 30) return kTable[df - 1];
  // Cornish-Fisher expansion of t around the normal quantile (Abramowitz &
  // Stegun 26.7.5); beyond 30 degrees of freedom its error is below 1e-5.
  const double z = 1.959963984540054, v = df;
  const double z3 = z * z * z, z5 = z3 * z * z, z7 = z5 * z * z;
  return z + (z3 + z) / (4 * v) + (5 * z5 + 16 * z3 + 3 * z) / (96 * v * v) +
         (3 * z7 + 19 * z5 + 17 * z3 - 15 * z) / (384 * v * v * v);
}

MeanInterval MeanWithInterval95(const std::vector<double>& values) {
  MeanInterval out;
  out.n = static_cast<int>(values.size());
  if (values.empty()) {
    out.half_width = std::numeric_limits<double>::infinity();
    return out;
  }
  for (double v : values) out.mean += v;
  out.mean /= out.n;
  if (out.n < 2) {
    out.half_width = std::numeric_limits<double>::infinity();
    return out;
  }
  double squares = 0;
  for (double v : values) squares += (v - out.mean) * (v - out.mean);
  const double std_error = std::sqrt(squares / (out.n - 1) / out.n);
  out.half_width = StudentT975(out.n - 1) * std_error;
  return out;
}

}  // namespace moelab
