#include "core/corruption.h"

#include <ATen/core/Tensor.h>
#include <ATen/ops/allclose.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/equal.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <memory>
#include <opencv2/core.hpp>
#include <opencv2/imgproc.hpp>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "core/tasks/image_classification_name.h"
#include "core/tasks/language_modeling_name.h"

namespace moelab {
namespace {

// ------------------------------------------------------------ test datasets

// Evaluation splits only matter here; every split holds the same examples.
class FakeImageDataset : public Dataset {
 public:
  // Example n is `images[n % images.size()]` ([0, 1] pixels, RGB or grey),
  // normalised with `mean` and `std`.
  FakeImageDataset(std::vector<cv::Mat> images, int64_t num_examples, std::vector<float> mean,
                   std::vector<float> std)
      : images_(std::move(images)), num_examples_(num_examples) {
    info_.task = kImageClassificationTask;
    info_.num_classes = 10;
    info_.channels = images_[0].channels();
    info_.height = images_[0].rows;
    info_.width = images_[0].cols;
    info_.pixel_mean = std::move(mean);
    info_.pixel_std = std::move(std);
  }

  const DatasetInfo& info() const override { return info_; }
  int64_t NumExamples(Split) const override { return num_examples_; }

  Batch GetBatch(Split split, int64_t batch_size, int64_t index, int64_t, uint64_t) const override {
    std::vector<int64_t> indices;
    for (int64_t i = index * batch_size; i < std::min(num_examples_, (index + 1) * batch_size);
         ++i) {
      indices.push_back(i);
    }
    return GetExamples(split, indices);
  }

  Batch GetExamples(Split, const std::vector<int64_t>& indices) const override {
    const int64_t batch = static_cast<int64_t>(indices.size());
    const int64_t c = info_.channels, h = info_.height, w = info_.width;
    Batch out{at::empty({batch, c, h, w}, at::kFloat), at::empty({batch}, at::kLong)};
    float* x = out.inputs.data_ptr<float>();
    for (int64_t b = 0; b < batch; ++b) {
      const cv::Mat& image = images_[indices[b] % images_.size()];
      for (int64_t ch = 0; ch < c; ++ch) {
        const float mean = info_.pixel_mean[info_.pixel_mean.size() == 1 ? 0 : ch];
        const float std = info_.pixel_std[info_.pixel_std.size() == 1 ? 0 : ch];
        for (int64_t y = 0; y < h; ++y) {
          for (int64_t xx = 0; xx < w; ++xx) {
            x[((b * c + ch) * h + y) * w + xx] = (image.ptr<float>(y)[xx * c + ch] - mean) / std;
          }
        }
      }
      out.targets.data_ptr<int64_t>()[b] = indices[b] % 10;
    }
    return out;
  }

 private:
  std::vector<cv::Mat> images_;
  int64_t num_examples_;
  DatasetInfo info_;
};

// A token stream cut as TokenStreamDataset does (core/data/
// token_stream_dataset.h): example i holds s[i*L .. i*L + L].
class FakeLmDataset : public Dataset {
 public:
  FakeLmDataset(std::vector<int64_t> stream, int64_t length, int64_t vocab_size, int64_t unk_id)
      : stream_(std::move(stream)) {
    info_.task = kLanguageModelingTask;
    info_.vocab_size = vocab_size;
    info_.sequence_length = length;
    info_.unk_id = unk_id;
  }

  const DatasetInfo& info() const override { return info_; }
  int64_t NumExamples(Split) const override {
    return (static_cast<int64_t>(stream_.size()) - 1) / info_.sequence_length;
  }

  Batch GetBatch(Split split, int64_t batch_size, int64_t index, int64_t, uint64_t) const override {
    std::vector<int64_t> indices;
    for (int64_t i = index * batch_size; i < std::min(NumExamples(split), (index + 1) * batch_size);
         ++i) {
      indices.push_back(i);
    }
    return GetExamples(split, indices);
  }

  Batch GetExamples(Split split, const std::vector<int64_t>& indices) const override {
    const int64_t batch = static_cast<int64_t>(indices.size());
    const int64_t length = info_.sequence_length;
    Batch out{at::empty({batch, length}, at::kLong), at::empty({batch, length}, at::kLong)};
    for (int64_t b = 0; b < batch; ++b) {
      EXPECT_GE(indices[b], 0);
      EXPECT_LT(indices[b], NumExamples(split));
      for (int64_t t = 0; t < length; ++t) {
        out.inputs.data_ptr<int64_t>()[b * length + t] = stream_[indices[b] * length + t];
        out.targets.data_ptr<int64_t>()[b * length + t] = stream_[indices[b] * length + t + 1];
      }
    }
    return out;
  }

 private:
  std::vector<int64_t> stream_;
  DatasetInfo info_;
};

// ------------------------------------------------------------------ helpers

// A natural-ish image in [0, 1]: smooth gradients with a few sharp-edged
// shapes, so that blur, noise and JPEG all have something to act on.
cv::Mat TestImage(int height, int width, int channels) {
  cv::Mat rgb(height, width, CV_32FC3);
  for (int y = 0; y < height; ++y) {
    for (int x = 0; x < width; ++x) {
      rgb.at<cv::Vec3f>(y, x) = cv::Vec3f(0.2f + 0.6f * x / width, 0.15f + 0.7f * y / height,
                                          0.5f + 0.3f * std::sin(0.4f * x) * std::cos(0.3f * y));
    }
  }
  cv::rectangle(rgb, cv::Point(width / 8, height / 6), cv::Point(width / 2, height / 2),
                cv::Scalar(0.95, 0.9, 0.1), cv::FILLED);
  cv::circle(rgb, cv::Point(2 * width / 3, 2 * height / 3), width / 5, cv::Scalar(0.05, 0.1, 0.8),
             cv::FILLED);
  cv::line(rgb, cv::Point(0, height - 3), cv::Point(width - 1, 2), cv::Scalar(1, 1, 1), 1);
  if (channels == 3) return rgb;
  cv::Mat grey;
  cv::cvtColor(rgb, grey, cv::COLOR_RGB2GRAY);
  return grey;
}

double MeanAbsDiff(const cv::Mat& a, const cv::Mat& b) {
  return cv::norm(a, b, cv::NORM_L1) / (a.total() * a.channels());
}

bool InUnitRange(const cv::Mat& image) {
  double lo, hi;
  cv::minMaxLoc(image.reshape(1), &lo, &hi);
  return lo >= 0.0 && hi <= 1.0;
}

std::vector<int64_t> Row(const at::Tensor& t, int64_t b) {
  const int64_t length = t.size(1);
  const int64_t* p = t.data_ptr<int64_t>() + b * length;
  return std::vector<int64_t>(p, p + length);
}

CorruptionSpec Image(CorruptionKind kind, int severity) {
  CorruptionSpec spec;
  spec.set_kind(kind);
  spec.set_severity(severity);
  return spec;
}

CorruptionSpec Text(CorruptionKind kind, float rate) {
  CorruptionSpec spec;
  spec.set_kind(kind);
  spec.set_rate(rate);
  return spec;
}

constexpr CorruptionKind kImageKinds[] = {GAUSSIAN_NOISE, GAUSSIAN_BLUR, CONTRAST, JPEG};

// ------------------------------------------------------------ image kinds

TEST(CorruptImageTest, DeterministicInSeed) {
  const cv::Mat image = TestImage(32, 32, 3);
  for (CorruptionKind kind : kImageKinds) {
    const cv::Mat a = CorruptImage(image, kind, 3, 7);
    const cv::Mat b = CorruptImage(image, kind, 3, 7);
    EXPECT_EQ(cv::norm(a, b, cv::NORM_INF), 0.0) << CorruptionKind_Name(kind);
  }
  EXPECT_GT(cv::norm(CorruptImage(image, GAUSSIAN_NOISE, 3, 7),
                     CorruptImage(image, GAUSSIAN_NOISE, 3, 8), cv::NORM_INF),
            0.1);
}

TEST(CorruptImageTest, ChangeGrowsWithSeverityAndStaysInRange) {
  struct Case {
    int size;
    int channels;
  };
  // 64x64 RGB and the Fashion-MNIST shape, 28x28 grey (where the blur's
  // largest kernel, 49 pixels, is wider than the image).
  for (const Case& c : {Case{64, 3}, Case{28, 1}}) {
    const cv::Mat image = TestImage(c.size, c.size, c.channels);
    for (CorruptionKind kind : kImageKinds) {
      double previous = 0.0;
      for (int severity = 1; severity <= 5; ++severity) {
        const cv::Mat out = CorruptImage(image, kind, severity, 11);
        ASSERT_EQ(out.type(), image.type());
        ASSERT_EQ(out.size(), image.size());
        EXPECT_TRUE(InUnitRange(out));
        const double change = MeanAbsDiff(out, image);
        EXPECT_GT(change, previous) << CorruptionKind_Name(kind) << " severity " << severity
                                    << " on " << c.size << "x" << c.size << "x" << c.channels;
        previous = change;
      }
    }
  }
}

TEST(CorruptImageTest, ContrastSeverityFiveShrinksStdTwentyfold) {
  const cv::Mat image = TestImage(64, 64, 3);
  const cv::Mat out = CorruptImage(image, CONTRAST, 5, 0);
  cv::Scalar mean_in, std_in, mean_out, std_out;
  cv::meanStdDev(image, mean_in, std_in);
  cv::meanStdDev(out, mean_out, std_out);
  for (int c = 0; c < 3; ++c) {
    EXPECT_NEAR(std_in[c] / std_out[c], 20.0, 0.05) << "channel " << c;
    EXPECT_NEAR(mean_out[c], mean_in[c], 1e-5) << "channel " << c;
  }
}

TEST(CorruptImageTest, NoiseHasTheImageNetCStd) {
  // Mid-grey, so that clipping at 0 and 1 is negligible at severity 1.
  const cv::Mat image(100, 100, CV_32FC3, cv::Scalar(0.5, 0.5, 0.5));
  const cv::Mat out = CorruptImage(image, GAUSSIAN_NOISE, 1, 3);
  cv::Scalar mean, std;
  cv::meanStdDev(out.reshape(1), mean, std);
  EXPECT_NEAR(mean[0], 0.5, 0.003);
  EXPECT_NEAR(std[0], 0.08, 0.08 * 0.03);
}

// scipy.ndimage.gaussian_filter(x, sigma, mode='nearest', truncate=4), what
// ImageNet-C's skimage call does, written out directly.
cv::Mat ReferenceBlur(const cv::Mat& image, double sigma) {
  const int radius = static_cast<int>(4.0 * sigma + 0.5);
  std::vector<double> kernel(2 * radius + 1);
  double sum = 0.0;
  for (int k = -radius; k <= radius; ++k) {
    kernel[k + radius] = std::exp(-0.5 * k * k / (sigma * sigma));
    sum += kernel[k + radius];
  }
  for (double& v : kernel) v /= sum;
  const auto clamp = [](int i, int n) { return std::min(std::max(i, 0), n - 1); };
  cv::Mat rows(image.size(), CV_64FC1), out(image.size(), CV_32FC1);
  for (int y = 0; y < image.rows; ++y) {
    for (int x = 0; x < image.cols; ++x) {
      double acc = 0.0;
      for (int k = -radius; k <= radius; ++k) {
        acc += kernel[k + radius] * image.at<float>(y, clamp(x + k, image.cols));
      }
      rows.at<double>(y, x) = acc;
    }
  }
  for (int y = 0; y < image.rows; ++y) {
    for (int x = 0; x < image.cols; ++x) {
      double acc = 0.0;
      for (int k = -radius; k <= radius; ++k) {
        acc += kernel[k + radius] * rows.at<double>(clamp(y + k, image.rows), x);
      }
      out.at<float>(y, x) = static_cast<float>(acc);
    }
  }
  return out;
}

TEST(CorruptImageTest, BlurMatchesScipyGaussianFilterWithNearestBorder) {
  const cv::Mat image = TestImage(28, 28, 1);
  for (int severity : {1, 5}) {
    const double sigma = severity == 1 ? 1.0 : 6.0;
    EXPECT_LT(cv::norm(CorruptImage(image, GAUSSIAN_BLUR, severity, 0), ReferenceBlur(image, sigma),
                       cv::NORM_INF),
              1e-4)
        << "severity " << severity;
  }
}

TEST(CorruptImageTest, JpegChangesTheImageButStaysClose) {
  for (int channels : {1, 3}) {
    const cv::Mat image = TestImage(64, 64, channels);
    const cv::Mat out = CorruptImage(image, JPEG, 1, 0);
    EXPECT_GT(MeanAbsDiff(out, image), 2.0 / 255) << channels << " channels";
    EXPECT_LT(MeanAbsDiff(out, image), 0.08) << channels << " channels";
    cv::Scalar mean_in = cv::mean(image), mean_out = cv::mean(out);
    for (int c = 0; c < channels; ++c) {
      EXPECT_NEAR(mean_out[c], mean_in[c], 0.02) << channels << " channels";
    }
  }
}

// ---------------------------------------------------------- image batches

std::unique_ptr<FakeImageDataset> ImageData() {
  std::vector<cv::Mat> images = {TestImage(24, 24, 3)};
  cv::Mat flipped;
  cv::flip(images[0], flipped, 1);
  images.push_back(flipped);
  return std::make_unique<FakeImageDataset>(images, 10, std::vector<float>{0.485f, 0.456f, 0.406f},
                                            std::vector<float>{0.229f, 0.224f, 0.225f});
}

TEST(CorruptedBatchTest, ImagesAreCorruptedInPixelSpaceAndRenormalised) {
  auto data = ImageData();
  const Batch clean = data->GetBatch(Split::kValid, 4, 1, 0, 0);
  absl::StatusOr<Batch> corrupted =
      CorruptedBatch(*data, Split::kValid, 4, 1, Image(CONTRAST, 2), 5);
  ASSERT_TRUE(corrupted.ok()) << corrupted.status();
  EXPECT_TRUE(at::equal(corrupted->targets, clean.targets));
  ASSERT_EQ(corrupted->inputs.sizes(), clean.inputs.sizes());
  // The same corruption applied by hand to the un-normalised image.
  const float mean[3] = {0.485f, 0.456f, 0.406f};
  const float std[3] = {0.229f, 0.224f, 0.225f};
  for (int64_t b = 0; b < 4; ++b) {
    cv::Mat image(24, 24, CV_32FC3);
    for (int c = 0; c < 3; ++c) {
      for (int y = 0; y < 24; ++y) {
        for (int x = 0; x < 24; ++x) {
          image.at<cv::Vec3f>(y, x)[c] = clean.inputs[b][c][y][x].item<float>() * std[c] + mean[c];
        }
      }
    }
    const cv::Mat expected = CorruptImage(image, CONTRAST, 2, 0);
    for (int c = 0; c < 3; ++c) {
      for (int y = 0; y < 24; ++y) {
        for (int x = 0; x < 24; ++x) {
          ASSERT_NEAR(corrupted->inputs[b][c][y][x].item<float>(),
                      (expected.at<cv::Vec3f>(y, x)[c] - mean[c]) / std[c], 1e-4);
        }
      }
    }
  }
}

TEST(CorruptedBatchTest, ImageNoiseIsDeterministicPerExample) {
  auto data = ImageData();
  const CorruptionSpec noise = Image(GAUSSIAN_NOISE, 2);
  absl::StatusOr<Batch> a = CorruptedBatch(*data, Split::kValid, 4, 2, noise, 1);
  absl::StatusOr<Batch> b = CorruptedBatch(*data, Split::kValid, 4, 2, noise, 1);
  absl::StatusOr<Batch> other = CorruptedBatch(*data, Split::kValid, 4, 2, noise, 2);
  ASSERT_TRUE(a.ok() && b.ok() && other.ok());
  // The last batch is partial: examples 8 and 9.
  EXPECT_EQ(a->inputs.size(0), 2);
  EXPECT_TRUE(at::equal(a->inputs, b->inputs));
  EXPECT_FALSE(at::allclose(a->inputs, other->inputs));
  // Examples 0 and 2 hold the same clean image but get different noise.
  absl::StatusOr<Batch> first = CorruptedBatch(*data, Split::kValid, 4, 0, noise, 1);
  ASSERT_TRUE(first.ok());
  EXPECT_FALSE(at::allclose(first->inputs[0], first->inputs[2]));
  // An example's corruption does not depend on the batch size.
  absl::StatusOr<Batch> pair = CorruptedBatch(*data, Split::kValid, 2, 1, noise, 1);
  ASSERT_TRUE(pair.ok());
  EXPECT_TRUE(at::equal(pair->inputs[0], first->inputs[2]));
}

// --------------------------------------------------------------- text kinds

// Token j of the stream is j: order and origin of a token are its value.
std::unique_ptr<FakeLmDataset> CountingLm(int64_t examples, int64_t length) {
  std::vector<int64_t> stream(examples * length + 1);
  for (size_t j = 0; j < stream.size(); ++j) stream[j] = j;
  return std::make_unique<FakeLmDataset>(stream, length, static_cast<int64_t>(stream.size()) + 1,
                                         /*unk_id=*/static_cast<int64_t>(stream.size()));
}

// The T + 1 token window of row b.
std::vector<int64_t> Window(const Batch& batch, int64_t b) {
  std::vector<int64_t> window = Row(batch.inputs, b);
  window.push_back(Row(batch.targets, b).back());
  return window;
}

void ExpectShifted(const Batch& batch) {
  const int64_t length = batch.inputs.size(1);
  for (int64_t b = 0; b < batch.inputs.size(0); ++b) {
    const std::vector<int64_t> inputs = Row(batch.inputs, b);
    const std::vector<int64_t> targets = Row(batch.targets, b);
    for (int64_t t = 0; t + 1 < length; ++t) {
      ASSERT_EQ(targets[t], inputs[t + 1]) << "row " << b << " t " << t;
    }
  }
}

TEST(SubstituteTokensTest, ChangesAboutRateOfTokensAndNeverMakesUnk) {
  // A small vocabulary with <unk> = 2 in the stream, so exclusions matter.
  constexpr int64_t kVocab = 6, kUnk = 2, kLength = 63, kExamples = 64;
  std::vector<int64_t> stream(kExamples * kLength + 1);
  for (size_t j = 0; j < stream.size(); ++j) stream[j] = (j * 7 + j / 5) % kVocab;
  FakeLmDataset data(stream, kLength, kVocab, kUnk);
  for (float rate : {0.05f, 0.2f, 0.5f}) {
    const Batch clean = data.GetBatch(Split::kTest, kExamples, 0, 0, 0);
    absl::StatusOr<Batch> corrupted =
        CorruptedBatch(data, Split::kTest, kExamples, 0, Text(TOKEN_SUBSTITUTION, rate), 9);
    ASSERT_TRUE(corrupted.ok()) << corrupted.status();
    ASSERT_EQ(corrupted->inputs.sizes(), clean.inputs.sizes());
    ExpectShifted(*corrupted);
    int64_t changed = 0, total = 0;
    std::vector<int64_t> replacement_counts(kVocab, 0);
    for (int64_t b = 0; b < kExamples; ++b) {
      const std::vector<int64_t> before = Window(clean, b);
      const std::vector<int64_t> after = Window(*corrupted, b);
      for (size_t t = 0; t < before.size(); ++t) {
        ++total;
        if (after[t] == before[t]) continue;
        ++changed;
        ASSERT_NE(after[t], kUnk);
        ASSERT_GE(after[t], 0);
        ASSERT_LT(after[t], kVocab);
        ++replacement_counts[after[t]];
      }
    }
    // 4096 tokens; four binomial standard deviations.
    const double sd = std::sqrt(rate * (1 - rate) / total);
    EXPECT_NEAR(static_cast<double>(changed) / total, rate, 4 * sd) << "rate " << rate;
    // Every id other than <unk> is used as a replacement.
    for (int64_t id = 0; id < kVocab; ++id) {
      if (id == kUnk) {
        EXPECT_EQ(replacement_counts[id], 0);
      } else {
        EXPECT_GT(replacement_counts[id], 0) << "id " << id << " rate " << rate;
      }
    }
  }
}

TEST(SubstituteTokensTest, DeterministicAndPositionPreserving) {
  auto data = CountingLm(16, 20);
  const CorruptionSpec swap = Text(TOKEN_SUBSTITUTION, 0.3f);
  absl::StatusOr<Batch> a = CorruptedBatch(*data, Split::kValid, 8, 1, swap, 4);
  absl::StatusOr<Batch> b = CorruptedBatch(*data, Split::kValid, 8, 1, swap, 4);
  absl::StatusOr<Batch> other = CorruptedBatch(*data, Split::kValid, 8, 1, swap, 5);
  ASSERT_TRUE(a.ok() && b.ok() && other.ok());
  EXPECT_TRUE(at::equal(a->inputs, b->inputs));
  EXPECT_TRUE(at::equal(a->targets, b->targets));
  EXPECT_FALSE(at::equal(a->inputs, other->inputs));
  // Batch size 4, index 3 holds examples 12..15 = rows 4..7 of batch 1 of 8.
  absl::StatusOr<Batch> quarter = CorruptedBatch(*data, Split::kValid, 4, 3, swap, 4);
  ASSERT_TRUE(quarter.ok());
  EXPECT_TRUE(at::equal(quarter->inputs, a->inputs.slice(0, 4, 8)));
  EXPECT_TRUE(PreservesPositions(TOKEN_SUBSTITUTION));
}

TEST(DeleteTokensTest, KeepsLengthOrderAndShiftedTargets) {
  constexpr int64_t kLength = 32, kExamples = 64;
  auto data = CountingLm(kExamples, kLength);
  for (float rate : {0.1f, 0.3f}) {
    absl::StatusOr<Batch> corrupted =
        CorruptedBatch(*data, Split::kValid, 16, 1, Text(TOKEN_DELETION, rate), 3);
    ASSERT_TRUE(corrupted.ok()) << corrupted.status();
    ASSERT_EQ(corrupted->inputs.size(0), 16);
    ASSERT_EQ(corrupted->inputs.size(1), kLength);
    ExpectShifted(*corrupted);
    int64_t consumed = 0, deleted = 0;
    for (int64_t b = 0; b < 16; ++b) {
      const std::vector<int64_t> window = Window(*corrupted, b);
      const int64_t start = (16 + b) * kLength;  // first token of its window
      EXPECT_GE(window.front(), start);
      for (size_t t = 1; t < window.size(); ++t) {
        ASSERT_LT(window[t - 1], window[t]) << "row " << b;
      }
      consumed += window.back() - start + 1;
      deleted += window.back() - start + 1 - (kLength + 1);
    }
    // About 16 * 33 / (1 - rate) stream tokens read.
    const double sd = std::sqrt(rate * (1 - rate) / consumed);
    EXPECT_NEAR(static_cast<double>(deleted) / consumed, rate, 4 * sd) << "rate " << rate;
  }
  EXPECT_FALSE(PreservesPositions(TOKEN_DELETION));
}

TEST(DeleteTokensTest, WrapsToTheStartOfTheSplitAfterItsEnd) {
  constexpr int64_t kLength = 10, kExamples = 6;
  auto data = CountingLm(kExamples, kLength);
  // The last example's window (tokens 50..60) loses about half its tokens
  // and is refilled from the start of the split (tokens 0, 1, ...).
  absl::StatusOr<Batch> corrupted =
      CorruptedBatch(*data, Split::kTest, 1, kExamples - 1, Text(TOKEN_DELETION, 0.5f), 1);
  ASSERT_TRUE(corrupted.ok()) << corrupted.status();
  const std::vector<int64_t> window = Window(*corrupted, 0);
  ASSERT_EQ(window.size(), kLength + 1);
  ExpectShifted(*corrupted);
  int descents = 0;
  for (size_t t = 1; t < window.size(); ++t) {
    if (window[t] < window[t - 1]) {
      ++descents;
      EXPECT_GE(window[t - 1], (kExamples - 1) * kLength);
      EXPECT_LE(window[t], kLength);
    }
  }
  EXPECT_EQ(descents, 1);
  EXPECT_GE(window.front(), (kExamples - 1) * kLength);
  // Determinism holds across the wrap too.
  absl::StatusOr<Batch> again =
      CorruptedBatch(*data, Split::kTest, 1, kExamples - 1, Text(TOKEN_DELETION, 0.5f), 1);
  ASSERT_TRUE(again.ok());
  EXPECT_TRUE(at::equal(again->inputs, corrupted->inputs));
}

TEST(DeleteTokensTest, ResultDoesNotDependOnChunking) {
  std::vector<int64_t> stream(500);
  for (size_t j = 0; j < stream.size(); ++j) stream[j] = 1000 + j;
  for (size_t chunk : {1, 7, 500}) {
    size_t next = 0;
    const auto next_tokens = [&]() {
      std::vector<int64_t> piece(stream.begin() + next,
                                 stream.begin() + std::min(stream.size(), next + chunk));
      next += chunk;
      return piece;
    };
    const std::vector<int64_t> kept = DeleteTokens(next_tokens, 100, 0.4, 21);
    size_t reference_next = 0;
    const std::vector<int64_t> reference = DeleteTokens(
        [&]() {
          std::vector<int64_t> piece(stream.begin() + reference_next,
                                     stream.begin() + reference_next + 250);
          reference_next += 250;
          return piece;
        },
        100, 0.4, 21);
    EXPECT_EQ(kept, reference) << "chunk " << chunk;
    EXPECT_EQ(kept.size(), 100u);
  }
}

// ------------------------------------------------------------------ errors

void ExpectInvalid(const absl::StatusOr<Batch>& result, const std::string& fragment) {
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(result.status().message().find("evaluation.corruptions"), std::string::npos)
      << result.status();
  EXPECT_NE(result.status().message().find(fragment), std::string::npos) << result.status();
}

TEST(CorruptedBatchTest, RejectsBadSpecs) {
  auto images = ImageData();
  auto text = CountingLm(4, 8);
  for (int severity : {0, 6, -1}) {
    ExpectInvalid(CorruptedBatch(*images, Split::kValid, 2, 0, Image(GAUSSIAN_BLUR, severity), 0),
                  "severity");
  }
  for (float rate : {0.0f, 1.0f, -0.2f, 1.5f, std::nanf("")}) {
    ExpectInvalid(CorruptedBatch(*text, Split::kValid, 2, 0, Text(TOKEN_DELETION, rate), 0),
                  "rate");
  }
  ExpectInvalid(CorruptedBatch(*images, Split::kValid, 2, 0, Text(TOKEN_SUBSTITUTION, 0.1f), 0),
                "text corruption");
  ExpectInvalid(CorruptedBatch(*text, Split::kValid, 2, 0, Image(JPEG, 3), 0), "image corruption");
  ExpectInvalid(CorruptedBatch(*text, Split::kValid, 2, 0, CorruptionSpec(), 0), "kind");
  ExpectInvalid(CorruptedBatch(*images, Split::kTrain, 2, 0, Image(JPEG, 3), 0), "train");
  absl::StatusOr<Batch> out_of_range =
      CorruptedBatch(*images, Split::kValid, 4, 3, Image(JPEG, 3), 0);
  EXPECT_EQ(out_of_range.status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_TRUE(ValidateCorruption(Image(JPEG, 5), TaskInputs::kImages).ok());
  EXPECT_TRUE(ValidateCorruption(Text(TOKEN_DELETION, 0.5f), TaskInputs::kTokens).ok());
  EXPECT_FALSE(PreservesPositions(CORRUPTION_UNSPECIFIED));
  for (CorruptionKind kind : kImageKinds) EXPECT_TRUE(PreservesPositions(kind));
}

TEST(CorruptedBatchTest, RejectsAVocabularyWithNothingToSubstitute) {
  FakeLmDataset data({0, 1, 0, 1, 0}, 2, /*vocab_size=*/2, /*unk_id=*/1);
  absl::StatusOr<Batch> result =
      CorruptedBatch(data, Split::kValid, 1, 0, Text(TOKEN_SUBSTITUTION, 0.5f), 0);
  EXPECT_EQ(result.status().code(), absl::StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace moelab
