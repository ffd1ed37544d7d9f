#include "core/corruption.h"

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cmath>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <unordered_map>
#include <utility>

#include "absl/strings/str_cat.h"
#include "core/data/random.h"

namespace moelab {
namespace {

// Severity constants of ImageNet-C (Hendrycks & Dietterich 2019, the
// authors' make_imagenet_c.py), index = severity - 1. They were tuned for
// 224x224 images. The blur sigma is in pixels and is applied unscaled, so on
// small images (28x28 Fashion-MNIST, 32x32 CIFAR) a severity blurs a much
// larger fraction of the image and is harsher than on ImageNet; the noise,
// contrast and JPEG constants act per pixel and transfer more directly.
constexpr double kNoiseStd[5] = {0.08, 0.12, 0.18, 0.26, 0.38};
constexpr double kBlurSigma[5] = {1, 2, 3, 4, 6};
constexpr double kContrastFactor[5] = {0.4, 0.3, 0.2, 0.1, 0.05};
constexpr int kJpegQuality[5] = {25, 18, 15, 10, 7};

// Keeps the random streams of the corruptions apart from each other and from
// the data pipeline's streams (core/data/random.h) for equal keys.
constexpr uint64_t kCorruptionSalt = 0x636f7272757074ull;  // "corrupt"

constexpr char kField[] = "evaluation.corruptions";

bool IsImageKind(CorruptionKind kind) {
  return kind == GAUSSIAN_NOISE || kind == GAUSSIAN_BLUR || kind == CONTRAST || kind == JPEG;
}

bool IsTextKind(CorruptionKind kind) {
  return kind == TOKEN_SUBSTITUTION || kind == TOKEN_DELETION;
}

// The seed of example `example` of `split` under `kind`.
uint64_t ExampleSeed(uint64_t seed, CorruptionKind kind, Split split, int64_t example) {
  return DataRng::FromKeys({kCorruptionSalt, static_cast<uint64_t>(kind), seed,
                            static_cast<uint64_t>(split), static_cast<uint64_t>(example)})
      .Next();
}

void ClipTo01(cv::Mat& image) {
  image = cv::max(image, 0.0);
  image = cv::min(image, 1.0);
}

// x + N(0, std^2) per pixel and channel; Box-Muller on DataRng so the noise
// is the same on every platform (std::normal_distribution is not).
cv::Mat AddGaussianNoise(const cv::Mat& image, double std, uint64_t seed) {
  DataRng rng(seed);
  cv::Mat out = image.clone();
  const int64_t values = static_cast<int64_t>(out.total()) * out.channels();
  cv::Mat flat = out.reshape(1, 1);  // shares data with `out`
  float* x = flat.ptr<float>(0);
  constexpr double kTwoPi = 6.283185307179586;
  for (int64_t i = 0; i < values; i += 2) {
    const double radius = std::sqrt(-2.0 * std::log(1.0 - rng.Uniform()));
    const double angle = kTwoPi * rng.Uniform();
    x[i] += static_cast<float>(std * radius * std::cos(angle));
    if (i + 1 < values) {
      x[i + 1] += static_cast<float>(std * radius * std::sin(angle));
    }
  }
  return out;
}

// skimage.filters.gaussian as ImageNet-C calls it: scipy's gaussian_filter
// with truncate = 4 (radius round(4 sigma)) and mode 'nearest'
// (BORDER_REPLICATE), over the two spatial axes only.
cv::Mat GaussianBlurred(const cv::Mat& image, double sigma) {
  const int radius = static_cast<int>(4.0 * sigma + 0.5);
  cv::Mat out;
  cv::GaussianBlur(image, out, cv::Size(2 * radius + 1, 2 * radius + 1), sigma, sigma,
                   cv::BORDER_REPLICATE);
  return out;
}

// (x - mean) * factor + mean with the mean per channel over the image, as
// ImageNet-C does (np.mean over the two spatial axes).
cv::Mat ContrastReduced(const cv::Mat& image, double factor) {
  const cv::Scalar mean = cv::mean(image);
  cv::Mat out;
  image.convertTo(out, image.type(), factor);
  cv::add(out, mean * (1.0 - factor), out);
  return out;
}

// A JPEG round trip at `quality` on the 8-bit image, as ImageNet-C saves
// with PIL. libjpeg expects BGR to compute luma and chroma, so RGB is
// swapped before encoding and back after decoding.
cv::Mat JpegRoundTrip(const cv::Mat& image, int quality) {
  cv::Mat bytes8;
  image.convertTo(bytes8, image.channels() == 1 ? CV_8UC1 : CV_8UC3, 255.0);
  if (image.channels() == 3) cv::cvtColor(bytes8, bytes8, cv::COLOR_RGB2BGR);
  std::vector<uchar> encoded;
  TORCH_CHECK(cv::imencode(".jpg", bytes8, encoded, {cv::IMWRITE_JPEG_QUALITY, quality}),
              "OpenCV could not encode a JPEG");
  cv::Mat decoded = cv::imdecode(encoded, cv::IMREAD_UNCHANGED);
  TORCH_CHECK(!decoded.empty() && decoded.channels() == image.channels(),
              "OpenCV could not decode its own JPEG");
  if (image.channels() == 3) cv::cvtColor(decoded, decoded, cv::COLOR_BGR2RGB);
  cv::Mat out;
  decoded.convertTo(out, image.type(), 1.0 / 255.0);
  return out;
}

// Tokens of a split's stream for TOKEN_DELETION: the (T + 1)-token windows
// of its examples, fetched from the dataset in runs of `chunk` examples and
// kept, so the examples of the batch itself are read only once.
class WindowCache {
 public:
  WindowCache(const Dataset& data, Split split, int64_t chunk)
      : data_(data), split_(split), num_examples_(data.NumExamples(split)), chunk_(chunk) {}

  int64_t num_examples() const { return num_examples_; }

  void Add(const Batch& batch, const std::vector<int64_t>& examples) {
    const int64_t length = batch.inputs.size(1);
    const int64_t* inputs = batch.inputs.data_ptr<int64_t>();
    const int64_t* targets = batch.targets.data_ptr<int64_t>();
    for (size_t row = 0; row < examples.size(); ++row) {
      std::vector<int64_t> window(inputs + row * length, inputs + (row + 1) * length);
      window.push_back(targets[(row + 1) * length - 1]);
      windows_[examples[row]] = std::move(window);
    }
  }

  const std::vector<int64_t>& Window(int64_t example) {
    auto it = windows_.find(example);
    if (it != windows_.end()) return it->second;
    std::vector<int64_t> examples;
    for (int64_t i = example; i < std::min(num_examples_, example + chunk_); ++i) {
      examples.push_back(i);
    }
    Batch batch = data_.GetExamples(split_, examples);
    batch.inputs = batch.inputs.to(at::kLong).contiguous();
    batch.targets = batch.targets.to(at::kLong).contiguous();
    Add(batch, examples);
    return windows_.at(example);
  }

 private:
  const Dataset& data_;
  const Split split_;
  const int64_t num_examples_;
  const int64_t chunk_;
  std::unordered_map<int64_t, std::vector<int64_t>> windows_;
};

// The stream from the start of example `first`'s window on: its T + 1
// tokens, then the T tokens each following example adds (its targets; its
// first input is the previous window's last token). After the last example
// the stream wraps to the start of the split (example 0's whole window).
std::function<std::vector<int64_t>()> StreamFrom(WindowCache& cache, int64_t first) {
  return [&cache, next = first, started = false]() mutable {
    const bool wrapped = next == cache.num_examples();
    if (wrapped) next = 0;
    const std::vector<int64_t>& window = cache.Window(next++);
    if (!started || wrapped) {
      started = true;
      return window;
    }
    return std::vector<int64_t>(window.begin() + 1, window.end());
  };
}

absl::StatusOr<Batch> CorruptImages(const Dataset& data, const Batch& clean, Split split,
                                    int64_t first_example, const CorruptionSpec& corruption,
                                    uint64_t seed) {
  const DatasetInfo& info = data.info();
  if (clean.inputs.dim() != 4) {
    return absl::FailedPreconditionError(
        absl::StrCat(kField,
                     ": image corruptions need [B, C, H, W] inputs, the dataset "
                     "gave ",
                     clean.inputs.dim(), " dimensions"));
  }
  const int64_t batch = clean.inputs.size(0), channels = clean.inputs.size(1),
                height = clean.inputs.size(2), width = clean.inputs.size(3);
  if (channels != 1 && channels != 3) {
    return absl::FailedPreconditionError(
        absl::StrCat(kField, ": image corruptions need grey or RGB images, the dataset has ",
                     channels, " channels"));
  }
  const auto channel_count = [channels](const std::vector<float>& v) {
    return static_cast<int64_t>(v.size()) == channels || v.size() == 1;
  };
  if (!channel_count(info.pixel_mean) || !channel_count(info.pixel_std) ||
      std::any_of(info.pixel_std.begin(), info.pixel_std.end(), [](float s) { return !(s > 0); })) {
    return absl::FailedPreconditionError(
        absl::StrCat(kField, ": the dataset's pixel_mean/pixel_std (", info.pixel_mean.size(),
                     " and ", info.pixel_std.size(), " values) do not describe its ", channels,
                     " channels with positive stds"));
  }
  std::vector<float> mean(channels), std(channels);
  for (int64_t c = 0; c < channels; ++c) {
    mean[c] = info.pixel_mean[info.pixel_mean.size() == 1 ? 0 : c];
    std[c] = info.pixel_std[info.pixel_std.size() == 1 ? 0 : c];
  }

  const at::Tensor inputs = clean.inputs.to(at::kFloat).contiguous();
  at::Tensor out = at::empty({batch, channels, height, width}, at::kFloat);
  const int64_t plane = height * width;
  const float* in_data = inputs.data_ptr<float>();
  float* out_data = out.data_ptr<float>();
  const int type = CV_MAKETYPE(CV_32F, static_cast<int>(channels));
  for (int64_t b = 0; b < batch; ++b) {
    const float* src = in_data + b * channels * plane;  // [C, H, W]
    float* dst = out_data + b * channels * plane;       // [C, H, W]
    cv::Mat image(static_cast<int>(height), static_cast<int>(width), type);
    for (int64_t y = 0; y < height; ++y) {
      float* row = image.ptr<float>(static_cast<int>(y));  // [W, C]
      for (int64_t x = 0; x < width; ++x) {
        for (int64_t c = 0; c < channels; ++c) {
          row[x * channels + c] = src[c * plane + y * width + x] * std[c] + mean[c];
        }
      }
    }
    // Clean pixels may leave [0, 1] by float rounding only; ImageNet-C
    // corrupts images in [0, 1].
    ClipTo01(image);
    const cv::Mat corrupted =
        CorruptImage(image, corruption.kind(), corruption.severity(),
                     ExampleSeed(seed, corruption.kind(), split, first_example + b));
    for (int64_t y = 0; y < height; ++y) {
      const float* row = corrupted.ptr<float>(static_cast<int>(y));
      for (int64_t x = 0; x < width; ++x) {
        for (int64_t c = 0; c < channels; ++c) {
          dst[c * plane + y * width + x] = (row[x * channels + c] - mean[c]) / std[c];
        }
      }
    }
  }
  return Batch{out, clean.targets};
}

absl::StatusOr<Batch> CorruptTokenBatch(const Dataset& data, const Batch& clean, Split split,
                                        int64_t first_example, const CorruptionSpec& corruption,
                                        uint64_t seed) {
  const DatasetInfo& info = data.info();
  if (clean.inputs.dim() != 2 || clean.targets.dim() != 2 ||
      clean.inputs.sizes() != clean.targets.sizes()) {
    return absl::FailedPreconditionError(
        absl::StrCat(kField, ": token corruptions need [B, T] inputs and targets"));
  }
  const int64_t batch = clean.inputs.size(0), length = clean.inputs.size(1);
  const bool substitute = corruption.kind() == TOKEN_SUBSTITUTION;
  const bool has_unk = info.unk_id >= 0 && info.unk_id < info.vocab_size;
  if (substitute && info.vocab_size < (has_unk ? 3 : 2)) {
    return absl::FailedPreconditionError(
        absl::StrCat(kField,
                     ": TOKEN_SUBSTITUTION needs a vocabulary with a token other "
                     "than <unk> and the replaced one; vocab_size is ",
                     info.vocab_size));
  }
  Batch clean_long{clean.inputs.to(at::kLong).contiguous(),
                   clean.targets.to(at::kLong).contiguous()};
  std::vector<int64_t> examples(batch);
  for (int64_t b = 0; b < batch; ++b) examples[b] = first_example + b;
  WindowCache cache(data, split, /*chunk=*/std::max<int64_t>(batch, 1));
  cache.Add(clean_long, examples);

  Batch out{at::empty({batch, length}, at::kLong),   // [B, T]
            at::empty({batch, length}, at::kLong)};  // [B, T]
  int64_t* inputs = out.inputs.data_ptr<int64_t>();
  int64_t* targets = out.targets.data_ptr<int64_t>();
  for (int64_t b = 0; b < batch; ++b) {
    const uint64_t example_seed = ExampleSeed(seed, corruption.kind(), split, examples[b]);
    const std::vector<int64_t> window =
        substitute ? SubstituteTokens(cache.Window(examples[b]), corruption.rate(), info.vocab_size,
                                      info.unk_id, example_seed)
                   : DeleteTokens(StreamFrom(cache, examples[b]), length + 1, corruption.rate(),
                                  example_seed);
    for (int64_t t = 0; t < length; ++t) {
      inputs[b * length + t] = window[t];
      targets[b * length + t] = window[t + 1];
    }
  }
  return out;
}

}  // namespace

absl::Status ValidateCorruption(const CorruptionSpec& corruption, TaskInputs inputs) {
  const CorruptionKind kind = corruption.kind();
  const std::string name = CorruptionKind_Name(kind);
  if (!IsImageKind(kind) && !IsTextKind(kind)) {
    return absl::InvalidArgumentError(
        absl::StrCat(kField,
                     ".kind: must be one of GAUSSIAN_NOISE, GAUSSIAN_BLUR, "
                     "CONTRAST, JPEG (images) or TOKEN_SUBSTITUTION, "
                     "TOKEN_DELETION (text), got ",
                     name.empty() ? absl::StrCat(static_cast<int>(kind)) : name));
  }
  if (IsImageKind(kind)) {
    if (inputs != TaskInputs::kImages) {
      return absl::InvalidArgumentError(
          absl::StrCat(kField, ".kind: ", name,
                       " is an image corruption but the dataset's examples are token ids "
                       "(use TOKEN_SUBSTITUTION or TOKEN_DELETION)"));
    }
    if (corruption.severity() < 1 || corruption.severity() > 5) {
      return absl::InvalidArgumentError(
          absl::StrCat(kField, ".severity: ", name, " needs 1..5, got ", corruption.severity()));
    }
    return absl::OkStatus();
  }
  if (inputs != TaskInputs::kTokens) {
    return absl::InvalidArgumentError(
        absl::StrCat(kField, ".kind: ", name,
                     " is a text corruption but the dataset's examples are images (use "
                     "GAUSSIAN_NOISE, GAUSSIAN_BLUR, CONTRAST or JPEG)"));
  }
  if (!(corruption.rate() > 0.0f && corruption.rate() < 1.0f)) {
    return absl::InvalidArgumentError(
        absl::StrCat(kField, ".rate: ", name, " needs a rate in (0, 1), got ", corruption.rate()));
  }
  return absl::OkStatus();
}

absl::StatusOr<Batch> CorruptedBatch(const Dataset& data, Split split, int64_t batch_size,
                                     int64_t index, const CorruptionSpec& corruption,
                                     uint64_t seed) {
  absl::StatusOr<const TaskRegistration*> task = FindTask(data.info().task);
  if (!task.ok()) return task.status();
  if (absl::Status status = ValidateCorruption(corruption, (*task)->inputs); !status.ok()) {
    return status;
  }
  if (split == Split::kTrain) {
    return absl::InvalidArgumentError(
        absl::StrCat(kField, ": corruptions apply to the evaluation splits, not train"));
  }
  if (batch_size < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat(kField, ": batch_size must be >= 1, got ", batch_size));
  }
  const int64_t batches = data.NumBatches(split, batch_size);
  if (index < 0 || index >= batches) {
    return absl::OutOfRangeError(absl::StrCat(kField, ": ", SplitName(split), " batch index ",
                                              index, " is outside [0, ", batches,
                                              ") for batch_size ", batch_size));
  }
  // Evaluation splits are read in order: batch `index` holds examples
  // index * batch_size, index * batch_size + 1, ...
  const int64_t first_example = index * batch_size;
  const Batch clean = data.GetBatch(split, batch_size, index, 0, 0);
  if (IsImageKind(corruption.kind())) {
    return CorruptImages(data, clean, split, first_example, corruption, seed);
  }
  return CorruptTokenBatch(data, clean, split, first_example, corruption, seed);
}

bool PreservesPositions(CorruptionKind kind) {
  return IsImageKind(kind) || kind == TOKEN_SUBSTITUTION;
}

cv::Mat CorruptImage(const cv::Mat& image, CorruptionKind kind, int severity, uint64_t seed) {
  TORCH_CHECK(image.type() == CV_32FC1 || image.type() == CV_32FC3,
              "CorruptImage needs a CV_32FC1 or CV_32FC3 image");
  TORCH_CHECK(severity >= 1 && severity <= 5, "severity must be in 1..5, got ", severity);
  const int level = severity - 1;
  cv::Mat out;
  switch (kind) {
    case GAUSSIAN_NOISE:
      out = AddGaussianNoise(image, kNoiseStd[level], seed);
      break;
    case GAUSSIAN_BLUR:
      out = GaussianBlurred(image, kBlurSigma[level]);
      break;
    case CONTRAST:
      out = ContrastReduced(image, kContrastFactor[level]);
      break;
    case JPEG:
      out = JpegRoundTrip(image, kJpegQuality[level]);
      break;
    default:
      TORCH_CHECK(false, "not an image corruption: ", CorruptionKind_Name(kind));
  }
  ClipTo01(out);
  return out;
}

std::vector<int64_t> SubstituteTokens(const std::vector<int64_t>& tokens, double rate,
                                      int64_t vocab_size, int64_t unk_id, uint64_t seed) {
  const bool has_unk = unk_id >= 0 && unk_id < vocab_size;
  TORCH_CHECK(vocab_size >= (has_unk ? 3 : 2), "no substitute token in a vocabulary of ",
              vocab_size);
  DataRng rng(seed);
  std::vector<int64_t> out = tokens;
  for (int64_t& token : out) {
    if (rng.Uniform() >= rate) continue;
    // Draw among the ids that remain after removing the excluded ones, then
    // map the draw back past each excluded id in increasing order.
    std::vector<int64_t> excluded;
    if (has_unk) excluded.push_back(unk_id);
    if (token >= 0 && token < vocab_size && token != unk_id) {
      excluded.push_back(token);
    }
    std::sort(excluded.begin(), excluded.end());
    int64_t id = static_cast<int64_t>(
        rng.Below(static_cast<uint64_t>(vocab_size - static_cast<int64_t>(excluded.size()))));
    for (int64_t skip : excluded) {
      if (id >= skip) ++id;
    }
    token = id;
  }
  return out;
}

std::vector<int64_t> DeleteTokens(const std::function<std::vector<int64_t>()>& next_tokens,
                                  int64_t length, double rate, uint64_t seed) {
  TORCH_CHECK(rate < 1.0, "a deletion rate must be < 1, got ", rate);
  DataRng rng(seed);
  std::vector<int64_t> kept;
  kept.reserve(length);
  while (static_cast<int64_t>(kept.size()) < length) {
    const std::vector<int64_t> chunk = next_tokens();
    TORCH_CHECK(!chunk.empty(), "DeleteTokens: the token stream ran dry");
    for (int64_t token : chunk) {
      if (rng.Uniform() >= rate) kept.push_back(token);
      if (static_cast<int64_t>(kept.size()) == length) break;
    }
  }
  return kept;
}

}  // namespace moelab
