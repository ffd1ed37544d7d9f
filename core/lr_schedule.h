#ifndef MOELAB_CORE_LR_SCHEDULE_H_
#define MOELAB_CORE_LR_SCHEDULE_H_

#include <cstdint>

#include "proto/experiment.pb.h"

namespace moelab {

// Learning rate for optimizer step `step` (0-based) of `total_steps`:
// linear warmup from lr/warmup to lr over warmup_steps, then CONSTANT, or a
// COSINE / LINEAR decay from lr to lr * min_lr_ratio at the last step.
double LearningRateAt(const TrainingSpec& training, int64_t step, int64_t total_steps);

}  // namespace moelab

#endif  // MOELAB_CORE_LR_SCHEDULE_H_
