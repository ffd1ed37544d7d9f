#ifndef MOELAB_CORE_PROGRESS_H_
#define MOELAB_CORE_PROGRESS_H_

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>

namespace moelab {

// Training progress: a redrawn bar with throughput, loss and ETA on a
// terminal; plain log lines (about ten per epoch) when the output is a file
// or pipe, so logs stay readable.
class ProgressReporter {
 public:
  // `units` names what throughput counts ("tokens", "images").
  ProgressReporter(std::FILE* out, std::string label, int64_t total_steps, std::string units);

  // After step `done` of total, with `units_done` units processed so far.
  void Update(int64_t done, int64_t units_done, double loss);

  // Ends the bar's line.
  void Finish();

  double elapsed_seconds() const;

 private:
  std::FILE* out_;
  std::string label_;
  int64_t total_;
  std::string units_;
  bool terminal_;
  int64_t last_logged_ = -1;
  std::chrono::steady_clock::time_point start_;
  std::chrono::steady_clock::time_point last_draw_;
};

// "1h02m", "3m07s", "12s".
std::string FormatDuration(double seconds);

}  // namespace moelab

#endif  // MOELAB_CORE_PROGRESS_H_
