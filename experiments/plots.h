#ifndef MOELAB_EXPERIMENTS_PLOTS_H_
#define MOELAB_EXPERIMENTS_PLOTS_H_

// PNG plots drawn by gnuplot (Debian gnuplot-nox, pngcairo terminal). Each
// function writes a self-contained script next to the PNG (NAME.gp), so a
// user can restyle a figure without rerunning anything.

#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"

namespace moelab {

struct Series {
  std::string label;
  std::vector<std::pair<double, double>> points;
};

// Lines with points, one per series.
absl::Status PlotLines(const std::string& png_path, const std::string& title,
                       const std::string& x_label, const std::string& y_label,
                       const std::vector<Series>& series);

// A line with a shaded band around it, e.g. a mean over seeds with its 95%
// interval. A point without a band has low == high == y.
struct BandPoint {
  double x = 0;
  double y = 0;
  double low = 0;
  double high = 0;
};

struct BandSeries {
  std::string label;
  std::vector<BandPoint> points;
};

// Lines with points, one per series, each over a translucent band of its
// own colour; the y axis starts at 0. When `marker_label` is not empty, a
// dashed vertical line at x = marker_x carries it (e.g. the epoch a paper's
// figure is taken at).
absl::Status PlotLinesWithBands(const std::string& png_path, const std::string& title,
                                const std::string& x_label, const std::string& y_label,
                                const std::vector<BandSeries>& series, double marker_x,
                                const std::string& marker_label);

// Points only (scatter), one colour per series.
absl::Status PlotScatter(const std::string& png_path, const std::string& title,
                         const std::string& x_label, const std::string& y_label,
                         const std::vector<Series>& series);

// A heat map of values[row][column] (e.g. layer x expert load share).
absl::Status PlotHeatmap(const std::string& png_path, const std::string& title,
                         const std::string& x_label, const std::string& y_label,
                         const std::vector<std::vector<double>>& values);

}  // namespace moelab

#endif  // MOELAB_EXPERIMENTS_PLOTS_H_
