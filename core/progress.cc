#include "core/progress.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>

#include "absl/strings/str_format.h"

namespace moelab {

std::string FormatDuration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  const int64_t s = static_cast<int64_t>(std::lround(seconds));
  if (s >= 3600) return absl::StrFormat("%dh%02dm", s / 3600, (s % 3600) / 60);
  if (s >= 60) return absl::StrFormat("%dm%02ds", s / 60, s % 60);
  return absl::StrFormat("%ds", s);
}

ProgressReporter::ProgressReporter(std::FILE* out, std::string label, int64_t total_steps,
                                   std::string units)
    : out_(out),
      label_(std::move(label)),
      total_(std::max<int64_t>(total_steps, 1)),
      units_(std::move(units)),
      terminal_(::isatty(::fileno(out)) != 0),
      start_(std::chrono::steady_clock::now()),
      last_draw_(start_) {}

double ProgressReporter::elapsed_seconds() const {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
}

void ProgressReporter::Update(int64_t done, int64_t units_done, double loss) {
  const auto now = std::chrono::steady_clock::now();
  const double elapsed = elapsed_seconds();
  const double rate = elapsed > 0 ? units_done / elapsed : 0;
  const double eta = done > 0 ? elapsed * (total_ - done) / done : NAN;
  if (terminal_) {
    // Redrawing more than ~10 times a second only costs time.
    if (done < total_ && now - last_draw_ < std::chrono::milliseconds(100)) return;
    last_draw_ = now;
    constexpr int kWidth = 24;
    const int filled = static_cast<int>(kWidth * done / total_);
    std::string bar(filled, '#');
    bar.resize(kWidth, '.');
    std::fprintf(out_, "\r%s [%s] %lld/%lld  %.0f %s/s  loss %.4f  ETA %s   ", label_.c_str(),
                 bar.c_str(), static_cast<long long>(done), static_cast<long long>(total_), rate,
                 units_.c_str(), loss, FormatDuration(eta).c_str());
    std::fflush(out_);
    return;
  }
  const int64_t tenth = std::max<int64_t>(1, total_ / 10);
  if (done != total_ && done / tenth == last_logged_ / tenth) return;
  last_logged_ = done;
  std::fprintf(out_, "%s step %lld/%lld  %.0f %s/s  loss %.4f  ETA %s\n", label_.c_str(),
               static_cast<long long>(done), static_cast<long long>(total_), rate, units_.c_str(),
               loss, FormatDuration(eta).c_str());
  std::fflush(out_);
}

void ProgressReporter::Finish() {
  if (terminal_) {
    std::fprintf(out_, "\n");
    std::fflush(out_);
  }
}

}  // namespace moelab
