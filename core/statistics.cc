#include "core/statistics.h"

#include <cmath>
#include <limits>

namespace moelab {
namespace {

// ln B(a, b).
double LogBeta(double a, double b) { return std::lgamma(a) + std::lgamma(b) - std::lgamma(a + b); }

// The continued fraction of the incomplete beta function (modified Lentz),
// converging for x < (a + 1) / (a + b + 2).
double BetaContinuedFraction(double a, double b, double x) {
  constexpr double kTiny = 1e-300;
  constexpr double kEpsilon = 1e-16;
  double c = 1;
  double d = 1 - (a + b) * x / (a + 1);
  if (std::abs(d) < kTiny) d = kTiny;
  d = 1 / d;
  double h = d;
  for (int m = 1; m <= 100000; ++m) {
    // Even step.
    double numerator = m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m));
    d = 1 + numerator * d;
    if (std::abs(d) < kTiny) d = kTiny;
    c = 1 + numerator / c;
    if (std::abs(c) < kTiny) c = kTiny;
    d = 1 / d;
    h *= d * c;
    // Odd step.
    numerator = -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1));
    d = 1 + numerator * d;
    if (std::abs(d) < kTiny) d = kTiny;
    c = 1 + numerator / c;
    if (std::abs(c) < kTiny) c = kTiny;
    d = 1 / d;
    const double step = d * c;
    h *= step;
    if (std::abs(step - 1) < kEpsilon) break;
  }
  return h;
}

// I_x(a, b), the regularized incomplete beta function.
double RegularizedIncompleteBeta(double a, double b, double x) {
  if (x <= 0) return 0;
  if (x >= 1) return 1;
  const double front = std::exp(a * std::log(x) + b * std::log1p(-x) - LogBeta(a, b));
  if (x < (a + 1) / (a + b + 2)) return front * BetaContinuedFraction(a, b, x) / a;
  return 1 - front * BetaContinuedFraction(b, a, 1 - x) / b;
}

// P(T > t) for t >= 0, T ~ Student t with df degrees of freedom.
double StudentTUpperTail(double t, double df) {
  return 0.5 * RegularizedIncompleteBeta(df / 2, 0.5, df / (df + t * t));
}

}  // namespace

double StudentTQuantile(double p, double df) {
  if (!(p > 0 && p < 1) || !(df >= 1)) return std::numeric_limits<double>::quiet_NaN();
  if (p == 0.5) return 0;
  if (p < 0.5) return -StudentTQuantile(1 - p, df);
  const double tail = 1 - p;
  double lo = 0, hi = 1;
  while (StudentTUpperTail(hi, df) > tail) {
    lo = hi;
    hi *= 2;
  }
  // The tail falls monotonically in t: bisect until the bracket is as
  // narrow as doubles allow.
  for (int i = 0; i < 200 && hi - lo > 1e-13 * hi; ++i) {
    const double mid = 0.5 * (lo + hi);
    (StudentTUpperTail(mid, df) > tail ? lo : hi) = mid;
  }
  return 0.5 * (lo + hi);
}

MeanInterval MeanWithInterval95(const std::vector<double>& values) {
  MeanInterval out;
  out.n = static_cast<int>(values.size());
  if (out.n < 2) {
    for (double v : values) out.mean = v;
    out.half_width = std::numeric_limits<double>::infinity();
    return out;
  }
  for (double v : values) out.mean += v;
  out.mean /= out.n;
  double squares = 0;
  for (double v : values) squares += (v - out.mean) * (v - out.mean);
  out.half_width = StudentTQuantile(0.975, out.n - 1) * std::sqrt(squares / (out.n - 1) / out.n);
  return out;
}

}  // namespace moelab
