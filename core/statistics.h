#ifndef MOELAB_CORE_STATISTICS_H_
#define MOELAB_CORE_STATISTICS_H_

// Small-sample statistics for verdicts: Student-t intervals of a mean.

#include <vector>

namespace moelab {

// The 0.975 quantile of Student's t with `df` >= 1 degrees of freedom (the
// multiplier of a two-sided 95% interval): 12.706 at df 1, 2.776 at 4,
// 1.960 as df grows.
double StudentT975(int df);

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
