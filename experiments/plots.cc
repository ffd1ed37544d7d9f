#include "experiments/plots.h"

#include <cstdio>
#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_replace.h"
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
  const std::string script = absl::StrCat(
      "set terminal pngcairo size 900,560 enhanced font 'Sans,11'\n",
      "set output ", QuotePath(temporary), "\n", body);
  const std::string script_path = png_path.substr(0, png_path.size() - 4) + ".gp";
  if (absl::Status s = WriteFileAtomically(script_path, script); !s.ok()) return s;
  const std::string command =
      absl::StrCat("gnuplot '", script_path, "' 2>'", script_path, ".log'");
  if (std::system(command.c_str()) != 0) {
    std::remove(temporary.c_str());
    return absl::InternalError(absl::StrCat(
        "gnuplot failed on ", script_path, " (see ", script_path,
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

std::string Axes(const std::string& title, const std::string& x_label,
                 const std::string& y_label) {
  return absl::StrCat("set title ", Quote(title), "\nset xlabel ", Quote(x_label),
                      "\nset ylabel ", Quote(y_label),
                      "\nset grid\nset key outside right top\n");
}

absl::Status PlotSeries(const std::string& png_path, const std::string& title,
                        const std::string& x_label, const std::string& y_label,
                        const std::vector<Series>& series, const std::string& style) {
  std::string body = DataBlocks(series) + Axes(title, x_label, y_label);
  body += "plot ";
  for (size_t i = 0; i < series.size(); ++i) {
    absl::StrAppend(&body, i ? ", " : "", "$s", i, " using 1:2 with ", style,
                    " title ", Quote(series[i].label));
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
    for (size_t c = 0; c < row.size(); ++c) absl::StrAppendFormat(&body, "%s%.6g", c ? " " : "", row[c]);
    body += "\n";
  }
  body += "EOD\n" + Axes(title, x_label, y_label);
  body += "unset grid\nset palette rgb 33,13,10\nset cblabel 'share of routed pairs'\n"
          "set xtics 1\nset ytics 1\nplot $m matrix with image notitle\n";
  return RunGnuplot(png_path, body);
}

}  // namespace moelab
