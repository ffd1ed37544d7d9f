#ifndef MOELAB_CORE_CORRUPTION_H_
#define MOELAB_CORE_CORRUPTION_H_

// Input corruptions for evaluation (EvaluationSpec.corruptions): how task
// metrics and routing change when the inputs are damaged.
//
//  * Images: the ImageNet-C corruptions (Hendrycks & Dietterich 2019)
//    gaussian noise, gaussian blur, contrast and JPEG at severities 1..5,
//    applied in pixel space: a normalised batch is mapped back to [0, 1]
//    with DatasetInfo.pixel_mean/pixel_std, corrupted per image with OpenCV,
//    clipped to [0, 1] and normalised again.
//  * Text (language modelling): each token of an example's T + 1 token
//    window (inputs plus the last target) is substituted by a random token,
//    or deleted, with probability `rate`; inputs and targets are rebuilt from
//    the corrupted window, so targets[t] == inputs[t + 1] still holds.
//
// Randomness is keyed by (seed, split, example index in the split), never by
// the batch size or the order of calls, so every corrupted batch can be
// rebuilt on its own and an example is corrupted identically in every run.

#include <cstdint>
#include <functional>
#include <opencv2/core.hpp>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/dataset.h"
#include "core/task.h"
#include "proto/experiment.pb.h"

namespace moelab {

// Checks that `corruption` is complete and fits a task whose examples are
// `inputs` (TaskRegistration::inputs): an image kind with severity in 1..5
// for images, a text kind with rate in (0, 1) for token ids. Errors name
// evaluation.corruptions.
absl::Status ValidateCorruption(const CorruptionSpec& corruption, TaskInputs inputs);

// Evaluation batch `index` of `split` (batch_size examples, as
// Dataset::GetBatch(split, batch_size, index, 0, 0) returns it clean),
// corrupted as `corruption` says. Deterministic in (seed, index). Vision
// targets are the clean ones; LM inputs and targets are rebuilt from the
// corrupted token windows. TOKEN_DELETION refills a window with the tokens
// that follow it in the split's stream (the next examples, wrapping to the
// start of the split after its last example).
absl::StatusOr<Batch> CorruptedBatch(const Dataset& data, Split split, int64_t batch_size,
                                     int64_t index, const CorruptionSpec& corruption,
                                     uint64_t seed);

// Whether position t of a corrupted batch still holds (a corrupted version
// of) the token or image at position t of the clean batch, so that
// per-position expert assignments can be compared: true for the image
// kinds and TOKEN_SUBSTITUTION, false for TOKEN_DELETION (and for
// CORRUPTION_UNSPECIFIED, which is no corruption).
bool PreservesPositions(CorruptionKind kind);

// ---------------------------------------------------------- pure functions

// `image` (CV_32FC1 grey or CV_32FC3 RGB, values in [0, 1]) corrupted by the
// image `kind` at `severity` (1..5), clipped to [0, 1]; same size and type.
// `seed` drives the noise of GAUSSIAN_NOISE (other kinds are deterministic).
// Preconditions (checked, programmer errors): the type, an image kind and
// the severity range.
cv::Mat CorruptImage(const cv::Mat& image, CorruptionKind kind, int severity, uint64_t seed);

// `tokens` with each token replaced, with probability `rate`, by a token id
// drawn uniformly from [0, vocab_size) without `unk_id` and without the
// token itself (so a substitution always changes the token and never
// introduces <unk>; unk_id = -1 means there is none). Needs at least one
// such id: vocab_size >= 3, or >= 2 without <unk>.
std::vector<int64_t> SubstituteTokens(const std::vector<int64_t>& tokens, double rate,
                                      int64_t vocab_size, int64_t unk_id, uint64_t seed);

// Reads a token stream chunk by chunk from `next_tokens` (each call returns
// the next, non-empty, piece of the stream) and deletes each token with
// probability `rate` until `length` tokens survive; returns them in stream
// order. The result does not depend on how the stream is cut into chunks.
std::vector<int64_t> DeleteTokens(const std::function<std::vector<int64_t>()>& next_tokens,
                                  int64_t length, double rate, uint64_t seed);

}  // namespace moelab

#endif  // MOELAB_CORE_CORRUPTION_H_
