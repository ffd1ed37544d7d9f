#include "experiments/plots.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "core/atomic_file.h"

namespace moelab {
namespace {

// A file name for gnuplot: single-quoted, so that nothing in it is escaped
// (a label's "\\_" would land in the name).
std::string QuotePath(const std::string& path) {
  return absl::StrCat("'", absl::StrReplaceAll(path, {{"'", "''"}}), "'");
}

// Enhanced-text labels: "_" would start a subscript.
std::string Quote(const std::string& s) {
  return absl::StrCat("\"", absl::StrReplaceAll(s, {{"\"", "'"}, {"_", "\\\\_"}}), "\"");
}

// Writes `script` to PNG.gp with the output set to a temporary PNG, runs
// gnuplot, and renames the PNG into place.
absl::Status RunGnuplot(const std::string& png_path, const std::string& body) {
  const std::string temporary = TemporaryPathFor(png_path);
  const std::string script =
      absl::StrCat("set terminal pngcairo size 900,560 enhanced font 'Sans,11'\n", "set output ",
                   QuotePath(temporary), "\n", body);
  const std::string script_path = png_path.substr(0, png_path.size() - 4) + ".gp";
  if (absl::Status s = WriteFileAtomically(script_path, script); !s.ok()) return s;
  const std::string command = absl::StrCat("gnuplot '", script_path, "' 2>'", script_path, ".log'");
  if (std::system(command.c_str()) != 0) {
    std::remove(temporary.c_str());
    return absl::InternalError(
        absl::StrCat("gnuplot failed on ", script_path, " (see ", script_path,
                     ".log; is gnuplot-nox installed? third_party/setup.sh installs it)"));
  }
  std::remove((script_path + ".log").c_str());
  return CommitAtomicFile(temporary, png_path);
}

std::string DataBlocks(const std::vector<Series>& series) {
  std::string out;
  for (size_t i = 0; i < series.size(); ++i) {
    absl::StrAppend(&out, "$s", i, " << EOD\n");
    for (const auto& [x, y] : series[i].points) absl::StrAppendFormat(&out, "%.9g %.9g\n", x, y);
    out += "EOD\n";
  }
  return out;
}

// Breaks a title at spaces into lines of at most `width` characters: gnuplot
// centres one long line over the plot and clips what overhangs the image.
std::string WrapTitle(const std::string& title, size_t width) {
  std::string wrapped, line;
  for (absl::string_view word : absl::StrSplit(title, ' ', absl::SkipEmpty())) {
    if (!line.empty() && line.size() + 1 + word.size() > width) {
      absl::StrAppend(&wrapped, wrapped.empty() ? "" : "\\n", line);
      line.clear();
    }
    absl::StrAppend(&line, line.empty() ? "" : " ", word);
  }
  absl::StrAppend(&wrapped, wrapped.empty() || line.empty() ? "" : "\\n", line);
  return wrapped;
}

std::string Axes(const std::string& title, const std::string& x_label, const std::string& y_label) {
  // 60 characters of Sans 11 fit the 900-pixel image with the key outside.
  return absl::StrCat("set title ", Quote(WrapTitle(title, 60)), "\nset xlabel ", Quote(x_label),
                      "\nset ylabel ", Quote(y_label), "\nset grid\nset key outside right top\n");
}

// Epochs and the like: whole-number ticks, not 2.5.
std::string WholeNumberXTics(const std::vector<double>& xs) {
  bool whole_x = true;
  double x_min = std::numeric_limits<double>::infinity(), x_max = -x_min;
  for (double x : xs) {
    whole_x = whole_x && x == std::floor(x);
    x_min = std::min(x_min, x);
    x_max = std::max(x_max, x);
  }
  return whole_x && x_max - x_min <= 20 ? "set xtics 1\n" : "";
}

absl::Status PlotSeries(const std::string& png_path, const std::string& title,
                        const std::string& x_label, const std::string& y_label,
                        const std::vector<Series>& series, const std::string& style) {
  std::string body = DataBlocks(series) + Axes(title, x_label, y_label);
  std::vector<double> xs;
  for (const Series& one : series) {
    for (const auto& point : one.points) xs.push_back(point.first);
  }
  body += WholeNumberXTics(xs);
  body += "plot ";
  for (size_t i = 0; i < series.size(); ++i) {
    absl::StrAppend(&body, i ? ", " : "", "$s", i, " using 1:2 with ", style, " title ",
                    Quote(series[i].label));
  }
  body += "\n";
  return RunGnuplot(png_path, body);
}

}  // namespace

absl::Status PlotLines(const std::string& png_path, const std::string& title,
                       const std::string& x_label, const std::string& y_label,
                       const std::vector<Series>& series) {
  return PlotSeries(png_path, title, x_label, y_label, series, "linespoints lw 2");
}

absl::Status PlotLinesWithBands(const std::string& png_path, const std::string& title,
                                const std::string& x_label, const std::string& y_label,
                                const std::vector<BandSeries>& series, double marker_x,
                                const std::string& marker_label) {
  std::string body;
  std::vector<double> xs;
  for (size_t i = 0; i < series.size(); ++i) {
    absl::StrAppend(&body, "$s", i, " << EOD\n");
    for (const BandPoint& p : series[i].points) {
      absl::StrAppendFormat(&body, "%.9g %.9g %.9g %.9g\n", p.x, p.y, p.low, p.high);
      xs.push_back(p.x);
    }
    body += "EOD\n";
  }
  body += Axes(title, x_label, y_label);
  body += WholeNumberXTics(xs);
  // A margin on both sides, so that a marker at the last x is not drawn on
  // the plot's border.
  if (!xs.empty()) {
    const auto [x_min, x_max] = std::minmax_element(xs.begin(), xs.end());
    const double margin = *x_max > *x_min ? std::max(0.04 * (*x_max - *x_min), 0.05) : 0.5;
    absl::StrAppendFormat(&body, "set autoscale xfix\nset offsets %.9g, %.9g, 0, 0\n", margin,
                          margin);
  }
  // From 0 (a fluctuation or a share is never negative; a band's lower edge
  // may be) to above the highest band: gnuplot's autoscale does not reach
  // the upper edge of a filledcurves band.
  double y_max = 0;
  for (const BandSeries& one : series) {
    for (const BandPoint& p : one.points) y_max = std::max({y_max, p.y, p.high});
  }
  if (y_max > 0) {
    absl::StrAppendFormat(&body, "set yrange [0:%.9g]\n", 1.05 * y_max);
  } else {
    body += "set yrange [0:*]\n";
  }
  body += "set style fill transparent solid 0.18 noborder\n";
  if (!marker_label.empty()) {
    absl::StrAppendFormat(&body,
                          "set arrow 1 from %.9g, graph 0 to %.9g, graph 1 nohead dt 2 lw 1.5 "
                          "lc rgb '#555555'\n"
                          "set label 1 %s at %.9g, graph 0.97 right offset -0.6,0 "
                          "textcolor rgb '#555555'\n",
                          marker_x, marker_x, Quote(marker_label), marker_x);
  }
  body += "plot ";
  for (size_t i = 0; i < series.size(); ++i) {
    // Band first, then its line on top, both in the series' colour.
    absl::StrAppend(&body, i ? ", " : "", "$s", i, " using 1:3:4 with filledcurves lc ", i + 1,
                    " notitle, $s", i, " using 1:2 with linespoints lw 2 lc ", i + 1, " title ",
                    Quote(series[i].label));
  }
  body += "\n";
  return RunGnuplot(png_path, body);
}

absl::Status PlotScatter(const std::string& png_path, const std::string& title,
                         const std::string& x_label, const std::string& y_label,
                         const std::vector<Series>& series) {
  return PlotSeries(png_path, title, x_label, y_label, series, "points pt 7 ps 1.3");
}

absl::Status PlotHeatmap(const std::string& png_path, const std::string& title,
                         const std::string& x_label, const std::string& y_label,
                         const std::vector<std::vector<double>>& values) {
  std::string body = "$m << EOD\n";
  for (const auto& row : values) {
    for (size_t c = 0; c < row.size(); ++c)
      absl::StrAppendFormat(&body, "%s%.6g", c ? " " : "", row[c]);
    body += "\n";
  }
  body += "EOD\n" + Axes(title, x_label, y_label);
  body +=
      "unset grid\nset palette rgb 33,13,10\nset cblabel 'share of routed pairs'\n"
      "set xtics 1\nset ytics 1\nplot $m matrix with image notitle\n";
  return RunGnuplot(png_path, body);
}

}  // namespace moelab
