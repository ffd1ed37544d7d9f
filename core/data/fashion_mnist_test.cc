#include "core/data/fashion_mnist.h"

#include <ATen/ops/from_blob.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <zlib.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/data/idx_file.h"
#include "core/dataset.h"
#include "core/tasks/image_classification_name.h"

namespace moelab {
namespace {

using ::testing::HasSubstr;

constexpr int kSide = 28;
constexpr int kPixels = kSide * kSide;
constexpr int kTrainImages = 12;  // 10 train + 2 valid (valid_examples = 2)
constexpr int kTestImages = 3;
constexpr int kValid = 2;

std::string IdxBytes(uint32_t magic, const std::vector<uint32_t>& dims,
                     const std::vector<uint8_t>& data) {
  std::string bytes;
  const auto put32 = [&](uint32_t v) {
    for (int shift = 24; shift >= 0; shift -= 8) bytes.push_back(char(v >> shift));
  };
  put32(magic);
  for (uint32_t d : dims) put32(d);
  bytes.append(data.begin(), data.end());
  return bytes;
}

void WriteGz(const std::string& path, const std::string& bytes) {
  gzFile file = gzopen(path.c_str(), "wb");
  ASSERT_NE(file, nullptr);
  ASSERT_EQ(gzwrite(file, bytes.data(), bytes.size()), int(bytes.size()));
  ASSERT_EQ(gzclose(file), Z_OK);
}

void WritePlain(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary) << bytes;
}

// Pixel (y, x) of crafted image i: never 0, so zero padding shows.
uint8_t Pixel(int i, int y, int x) { return (7 * y + 3 * x + 11 * i) % 200 + 20; }

std::vector<uint8_t> Images(int count) {
  std::vector<uint8_t> data(count * kPixels);
  for (int i = 0; i < count; ++i) {
    for (int y = 0; y < kSide; ++y) {
      for (int x = 0; x < kSide; ++x) data[(i * kSide + y) * kSide + x] = Pixel(i, y, x);
    }
  }
  return data;
}

std::vector<uint8_t> Labels(int count, int offset) {
  std::vector<uint8_t> labels(count);
  for (int i = 0; i < count; ++i) labels[i] = (i + offset) % 10;
  return labels;
}

// A data_dir with the four files; each may be overridden afterwards.
std::string MakeFixture(const std::string& name) {
  const std::string dir = absl::StrCat(::testing::TempDir(), "/fmnist_", name);
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  WriteGz(dir + "/train-images-idx3-ubyte.gz",
          IdxBytes(0x803, {kTrainImages, 28, 28}, Images(kTrainImages)));
  WriteGz(dir + "/train-labels-idx1-ubyte.gz",
          IdxBytes(0x801, {kTrainImages}, Labels(kTrainImages, 0)));
  WriteGz(dir + "/t10k-images-idx3-ubyte.gz",
          IdxBytes(0x803, {kTestImages, 28, 28}, Images(kTestImages)));
  WriteGz(dir + "/t10k-labels-idx1-ubyte.gz",
          IdxBytes(0x801, {kTestImages}, Labels(kTestImages, 3)));
  return dir;
}

FashionMnistOptions Options(const std::string& dir, bool augment = false, int max_train = 0) {
  FashionMnistOptions options;
  options.set_data_dir(dir);
  options.set_augment(augment);
  options.set_max_train_examples(max_train);
  return options;
}

std::unique_ptr<Dataset> MustLoad(const FashionMnistOptions& options) {
  auto dataset = LoadFashionMnist(options, kValid);
  EXPECT_TRUE(dataset.ok()) << dataset.status();
  return dataset.ok() ? *std::move(dataset) : nullptr;
}

std::vector<float> ToVector(const at::Tensor& t) {
  const at::Tensor c = t.contiguous();
  return std::vector<float>(c.data_ptr<float>(), c.data_ptr<float>() + c.numel());
}

TEST(FashionMnistTest, SplitsShapesAndTrainingStatistics) {
  auto dataset = MustLoad(Options(MakeFixture("basic")));
  ASSERT_NE(dataset, nullptr);
  EXPECT_EQ(dataset->NumExamples(Split::kTrain), 10);
  EXPECT_EQ(dataset->NumExamples(Split::kValid), 2);
  EXPECT_EQ(dataset->NumExamples(Split::kTest), 3);

  // Reference statistics with ATen over the 10 training images only.
  std::vector<uint8_t> train = Images(10);
  const at::Tensor x =
      at::from_blob(train.data(), {10 * kPixels}, at::kByte).to(at::kDouble).div(255.0);
  const double mean = x.mean().item<double>();
  const double std = x.std(/*unbiased=*/false).item<double>();
  const DatasetInfo& info = dataset->info();
  EXPECT_EQ(info.task, kImageClassificationTask);
  EXPECT_EQ(info.num_classes, 10);
  EXPECT_EQ(info.channels, 1);
  EXPECT_EQ(info.height, 28);
  EXPECT_EQ(info.width, 28);
  ASSERT_EQ(info.pixel_mean.size(), 1u);
  EXPECT_NEAR(info.pixel_mean[0], mean, 1e-6);
  EXPECT_NEAR(info.pixel_std[0], std, 1e-6);

  // Validation = the last two training images (labels 0 and 1 of 10, 11).
  Batch valid = dataset->GetExamples(Split::kValid, {1, 0});
  EXPECT_EQ(valid.inputs.sizes(), (std::vector<int64_t>{2, 1, 28, 28}));
  EXPECT_EQ(valid.inputs.scalar_type(), at::kFloat);
  EXPECT_EQ(valid.targets[0].item<int64_t>(), 11 % 10);
  EXPECT_EQ(valid.targets[1].item<int64_t>(), 10 % 10);
  const std::vector<float> pixels = ToVector(valid.inputs);
  for (int y = 0; y < kSide; ++y) {
    for (int x = 0; x < kSide; ++x) {
      ASSERT_NEAR(pixels[y * kSide + x], (Pixel(11, y, x) / 255.0 - mean) / std, 1e-5);
    }
  }
  Batch test = dataset->GetBatch(Split::kTest, 2, 1, 0, 0);  // partial batch
  ASSERT_EQ(test.targets.size(0), 1);
  EXPECT_EQ(test.targets[0].item<int64_t>(), (2 + 3) % 10);
}

// The 50 crops (dy, dx in -2..2) and flips of a padded training image.
std::vector<std::vector<float>> Candidates(int image, double mean, double std) {
  std::vector<std::vector<float>> out;
  for (int dy = -2; dy <= 2; ++dy) {
    for (int dx = -2; dx <= 2; ++dx) {
      for (bool flip : {false, true}) {
        std::vector<float> v(kPixels);
        for (int y = 0; y < kSide; ++y) {
          for (int x = 0; x < kSide; ++x) {
            const int sy = y + dy, sx = (flip ? kSide - 1 - x : x) + dx;
            const bool inside = sy >= 0 && sy < kSide && sx >= 0 && sx < kSide;
            const int p = inside ? Pixel(image, sy, sx) : 0;
            v[y * kSide + x] = static_cast<float>((p / 255.0 - mean) / std);
          }
        }
        out.push_back(v);
      }
    }
  }
  return out;
}

TEST(FashionMnistTest, AugmentationIsAPaddedCropAndFlipKeyedByEpoch) {
  auto dataset = MustLoad(Options(MakeFixture("augment"), /*augment=*/true));
  ASSERT_NE(dataset, nullptr);
  const double mean = dataset->info().pixel_mean[0];
  const double std = dataset->info().pixel_std[0];
  std::set<int> transforms_of_image0;
  for (int epoch = 0; epoch < 12; ++epoch) {
    Batch batch = dataset->GetBatch(Split::kTrain, 10, 0, epoch, 5);
    Batch again = dataset->GetBatch(Split::kTrain, 10, 0, epoch, 5);
    EXPECT_TRUE(batch.inputs.equal(again.inputs));
    std::set<int64_t> labels;
    for (int b = 0; b < 10; ++b) {
      const int image = static_cast<int>(batch.targets[b].item<int64_t>());
      labels.insert(image);
      const std::vector<float> got = ToVector(batch.inputs[b]);
      const std::vector<std::vector<float>> candidates = Candidates(image, mean, std);
      int match = -1;
      for (int c = 0; c < static_cast<int>(candidates.size()); ++c) {
        bool equal = true;
        for (int p = 0; p < kPixels && equal; ++p) {
          equal = std::abs(candidates[c][p] - got[p]) < 1e-5;
        }
        if (equal) match = c;
      }
      ASSERT_GE(match, 0) << "epoch " << epoch << " image " << image
                          << " is no padded crop/flip of its source";
      if (image == 0) transforms_of_image0.insert(match);
    }
    EXPECT_EQ(labels.size(), 10u);  // an epoch visits every image once
  }
  EXPECT_GT(transforms_of_image0.size(), 3u);

  // Evaluation is never augmented.
  Batch valid = dataset->GetBatch(Split::kValid, 2, 0, 3, 5);
  EXPECT_NEAR(ToVector(valid.inputs)[0], (Pixel(10, 0, 0) / 255.0 - mean) / std, 1e-5);
}

TEST(FashionMnistTest, MaxTrainExamplesKeepsTheFirstImages) {
  const std::string dir = MakeFixture("max");
  auto dataset = MustLoad(Options(dir, false, 4));
  ASSERT_NE(dataset, nullptr);
  EXPECT_EQ(dataset->NumExamples(Split::kTrain), 4);
  EXPECT_EQ(dataset->NumExamples(Split::kValid), 2);
  Batch batch = dataset->GetBatch(Split::kTrain, 4, 0, 0, 0);
  std::set<int64_t> labels;
  for (int b = 0; b < 4; ++b) labels.insert(batch.targets[b].item<int64_t>());
  EXPECT_EQ(labels, (std::set<int64_t>{0, 1, 2, 3}));

  auto too_many = LoadFashionMnist(Options(dir, false, 11), kValid);
  ASSERT_FALSE(too_many.ok());
  EXPECT_THAT(too_many.status().message(),
              HasSubstr("dataset.fashion_mnist.max_train_examples: 11 exceeds "
                        "the 10 training images"));
}

TEST(FashionMnistTest, TrainSubsetIsEvenlySpacedAndAugmentedByItsOwnImage) {
  // 10 training images (labels = index): a subset of 5 is images 0, 2, 4, 6, 8.
  auto dataset = MustLoad(Options(MakeFixture("subset"), /*augment=*/true));
  ASSERT_NE(dataset, nullptr);
  ASSERT_TRUE(dataset->SetTrainSubset(5).ok());
  EXPECT_EQ(dataset->NumExamples(Split::kTrain), 5);
  const double mean = dataset->info().pixel_mean[0];
  const double std = dataset->info().pixel_std[0];
  for (int epoch = 0; epoch < 3; ++epoch) {
    Batch batch = dataset->GetBatch(Split::kTrain, 5, 0, epoch, 9);
    std::set<int64_t> labels;
    for (int b = 0; b < 5; ++b) {
      const int image = static_cast<int>(batch.targets[b].item<int64_t>());
      labels.insert(image);
      // The augmented pixels are a crop/flip of that same image.
      const std::vector<float> got = ToVector(batch.inputs[b]);
      bool matched = false;
      for (const std::vector<float>& candidate : Candidates(image, mean, std)) {
        bool equal = true;
        for (int p = 0; p < kPixels && equal; ++p) equal = std::abs(candidate[p] - got[p]) < 1e-5;
        matched = matched || equal;
      }
      EXPECT_TRUE(matched) << "image " << image;
    }
    EXPECT_EQ(labels, (std::set<int64_t>{0, 2, 4, 6, 8}));
  }
  EXPECT_EQ(dataset->GetExamples(Split::kTrain, {3}).targets[0].item<int64_t>(), 6);
  EXPECT_EQ(dataset->NumExamples(Split::kValid), 2);
  EXPECT_THAT(dataset->SetTrainSubset(11).message(),
              HasSubstr("dataset.train_subset_examples: 11 exceeds the 10"));
}

absl::Status LoadError(const std::string& dir) {
  auto dataset = LoadFashionMnist(Options(dir), kValid);
  return dataset.ok() ? absl::OkStatus() : dataset.status();
}

TEST(FashionMnistTest, CorruptFilesGiveErrorsNamingTheFile) {
  const std::string dir = MakeFixture("corrupt");
  const std::string images = dir + "/train-images-idx3-ubyte.gz";
  const std::string labels = dir + "/train-labels-idx1-ubyte.gz";
  const std::string good_images = IdxBytes(0x803, {kTrainImages, 28, 28}, Images(kTrainImages));

  WriteGz(images, IdxBytes(0x801, {kTrainImages}, Labels(kTrainImages, 0)));
  EXPECT_THAT(LoadError(dir).message(),
              HasSubstr(images + ": bad IDX magic 0x00000801, expected 0x00000803"));

  WritePlain(images, "hello, not gzip");  // zlib reads plain files as-is
  EXPECT_THAT(LoadError(dir).message(), HasSubstr(images + ": bad IDX magic 0x68656c6c"));

  WriteGz(images, good_images.substr(0, 10));
  EXPECT_THAT(LoadError(dir).message(),
              HasSubstr(images + ": truncated IDX header: 10 bytes, expected 16"));

  WriteGz(images, good_images.substr(0, good_images.size() - kPixels));
  EXPECT_THAT(LoadError(dir).message(),
              HasSubstr(images + ": truncated: the header declares 12 x 28 x 28 "
                                 "= 9408 bytes of data, the file holds 8624"));

  WriteGz(images, good_images + "xy");
  EXPECT_THAT(LoadError(dir).message(), HasSubstr(images + ": trailing bytes"));

  // A gzip stream cut short.
  WriteGz(images, good_images);
  const auto size = std::filesystem::file_size(images);
  std::filesystem::resize_file(images, size / 2);
  absl::Status status = LoadError(dir);
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(status.message(), HasSubstr(images + ": corrupt or truncated gzip stream"));

  WriteGz(images,
          IdxBytes(0x803, {kTrainImages, 32, 32}, std::vector<uint8_t>(kTrainImages * 32 * 32)));
  EXPECT_THAT(LoadError(dir).message(), HasSubstr(images + ": images are 32x32, expected 28x28"));

  WriteGz(images, good_images);
  WriteGz(labels, IdxBytes(0x801, {kTrainImages - 1}, Labels(kTrainImages - 1, 0)));
  EXPECT_THAT(LoadError(dir).message(),
              HasSubstr(images + " holds 12 images but " + labels + " holds 11 labels"));

  std::vector<uint8_t> bad_labels = Labels(kTrainImages, 0);
  bad_labels[3] = 10;
  WriteGz(labels, IdxBytes(0x801, {kTrainImages}, bad_labels));
  EXPECT_THAT(LoadError(dir).message(),
              HasSubstr(labels + ": label 10 of example 3 is outside 0..9"));

  WriteGz(labels, IdxBytes(0x801, {kTrainImages}, Labels(kTrainImages, 0)));
  EXPECT_TRUE(LoadError(dir).ok());
  auto everything_valid = LoadFashionMnist(Options(dir), kTrainImages);
  ASSERT_FALSE(everything_valid.ok());
  EXPECT_THAT(everything_valid.status().message(), HasSubstr(images + ": holds 12 images"));

  std::filesystem::remove(dir + "/t10k-labels-idx1-ubyte.gz");
  status = LoadError(dir);
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(status.message(), HasSubstr(dir + "/t10k-labels-idx1-ubyte.gz: cannot open"));
}

TEST(FashionMnistTest, ResolveAndValidate) {
  const auto* entry = *DatasetRegistry().Find("fashion_mnist");
  EXPECT_EQ(entry->task, kImageClassificationTask);
  DatasetSpec spec;
  spec.set_name("fashion_mnist");
  entry->resolve(&spec);
  EXPECT_EQ(spec.fashion_mnist().data_dir(), "/usr/share/datasets/fashion-mnist");

  const std::string dir = MakeFixture("validate");
  spec.mutable_fashion_mnist()->set_data_dir(dir);
  EXPECT_TRUE(entry->validate(spec).ok());
  spec.mutable_fashion_mnist()->set_max_train_examples(-1);
  EXPECT_THAT(entry->validate(spec).message(),
              HasSubstr("dataset.fashion_mnist.max_train_examples"));
  spec.mutable_fashion_mnist()->set_max_train_examples(0);
  std::filesystem::remove(dir + "/train-labels-idx1-ubyte.gz");
  absl::Status status = entry->validate(spec);
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(status.message(), HasSubstr("dataset.fashion_mnist.data_dir: "
                                          "train-labels-idx1-ubyte.gz not found in '" +
                                          dir + "'"));
  spec.mutable_fashion_mnist()->set_data_dir(dir + "/missing");
  EXPECT_THAT(entry->validate(spec).message(),
              HasSubstr("dataset.fashion_mnist.data_dir: directory not found"));
}

TEST(FashionMnistTest, RealDataSmokeTest) {
  const std::string dir = "/usr/share/datasets/fashion-mnist";
  if (!std::filesystem::exists(dir + "/train-images-idx3-ubyte.gz")) {
    GTEST_SKIP() << "Fashion-MNIST not installed in " << dir
                 << " (Debian package dataset-fashion-mnist)";
  }
  DatasetSpec spec;
  spec.set_name("fashion_mnist");
  (*DatasetRegistry().Find("fashion_mnist"))->resolve(&spec);
  const auto start = std::chrono::steady_clock::now();
  absl::StatusOr<std::unique_ptr<Dataset>> dataset = LoadDataset(spec);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  ASSERT_TRUE(dataset.ok()) << dataset.status();
  EXPECT_LT(seconds, 5.0);
  const DatasetInfo& info = (*dataset)->info();
  std::cout << "Fashion-MNIST loaded in " << seconds << " s: train "
            << (*dataset)->NumExamples(Split::kTrain) << ", valid "
            << (*dataset)->NumExamples(Split::kValid) << ", test "
            << (*dataset)->NumExamples(Split::kTest) << " images; pixel mean " << info.pixel_mean[0]
            << ", std " << info.pixel_std[0] << "\n";
  EXPECT_EQ((*dataset)->NumExamples(Split::kTrain), 55000);
  EXPECT_EQ((*dataset)->NumExamples(Split::kValid), 5000);
  EXPECT_EQ((*dataset)->NumExamples(Split::kTest), 10000);
  EXPECT_NEAR(info.pixel_mean[0], 0.286, 0.005);
  EXPECT_NEAR(info.pixel_std[0], 0.353, 0.005);

  // The test set has 1000 images of each class.
  std::vector<int> per_class(10, 0);
  for (int64_t i = 0; i < (*dataset)->NumBatches(Split::kTest, 1000); ++i) {
    Batch batch = (*dataset)->GetBatch(Split::kTest, 1000, i, 0, 0);
    for (int64_t b = 0; b < batch.targets.size(0); ++b) {
      ++per_class[batch.targets[b].item<int64_t>()];
    }
  }
  EXPECT_EQ(per_class, std::vector<int>(10, 1000));
  // Normalised training pixels have mean ~0 and std ~1.
  Batch batch = (*dataset)->GetBatch(Split::kTrain, 512, 0, 0, 1);
  EXPECT_NEAR(batch.inputs.mean().item<float>(), 0.0, 0.1);
  EXPECT_NEAR(batch.inputs.std().item<float>(), 1.0, 0.1);
}

}  // namespace
}  // namespace moelab
