#ifndef MOELAB_CORE_STATISTICS_H_
#define MOELAB_CORE_STATISTICS_H_

// Small-sample statistics for verdicts: Student-t intervals of a mean.

#include <vector>

namespace moelab {

// The p-quantile of Student's t distribution with `df` >= 1 degrees of
// freedom, 0 < p < 1: the CDF (a regularized incomplete beta function)
// inverted by bisection, accurate to about 1e-10 at every df. NaN outside
// that domain. The 95% multiplier is StudentTQuantile(0.975, n - 1).
double StudentTQuantile(double p, double df);

// Mean of `values` with the half-width of its two-sided 95% t-interval,
// mean ± t(0.975, n-1) s / sqrt(n). With fewer than two values the interval
// is undefined: half_width is +infinity (nothing is excluded).
struct MeanInterval {
  double mean = 0;
  double half_width = 0;
  int n = 0;
  double low() const { return mean - half_width; }
  double high() const { return mean + half_width; }
};
MeanInterval MeanWithInterval95(const std::vector<double>& values);

}  // namespace moelab

#endif  // MOELAB_CORE_STATISTICS_H_
