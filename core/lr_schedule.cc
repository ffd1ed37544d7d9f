#include "core/lr_schedule.h"

#include <algorithm>
#include <cmath>

namespace moelab {

double LearningRateAt(const TrainingSpec& training, int64_t step, int64_t total_steps) {
  const double peak = training.learning_rate();
  const int64_t warmup = training.warmup_steps();
  if (step < warmup) return peak * static_cast<double>(step + 1) / warmup;
  if (training.schedule() == CONSTANT) return peak;
  const double floor = peak * training.min_lr_ratio();
  const int64_t decay_steps = std::max<int64_t>(1, total_steps - warmup - 1);
  const double progress = std::clamp(static_cast<double>(step - warmup) / decay_steps, 0.0, 1.0);
  const double shape =
      training.schedule() == LINEAR ? 1.0 - progress : 0.5 * (1.0 + std::cos(M_PI * progress));
  return floor + (peak - floor) * shape;
}

}  // namespace moelab
