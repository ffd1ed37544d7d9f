#include "core/data/fashion_mnist.h"

#include <ATen/ops/empty.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <filesystem>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/data/dataset_util.h"
#include "core/data/example_order.h"
#include "core/data/idx_file.h"
#include "core/data/random.h"
#include "core/paths.h"
#include "core/tasks/image_classification_name.h"

namespace moelab {
namespace {

constexpr int64_t kSide = 28;
constexpr int64_t kPixels = kSide * kSide;
constexpr int64_t kPad = 2;
constexpr int64_t kNumClasses = 10;
constexpr uint64_t kAugmentSalt = 0x6175676d656e74ull;  // "augment"

constexpr char kTrainImages[] = "train-images-idx3-ubyte.gz";
constexpr char kTrainLabels[] = "train-labels-idx1-ubyte.gz";
constexpr char kTestImages[] = "t10k-images-idx3-ubyte.gz";
constexpr char kTestLabels[] = "t10k-labels-idx1-ubyte.gz";
constexpr std::array<const char*, 4> kFiles = {kTrainImages, kTrainLabels, kTestImages,
                                               kTestLabels};

struct LabelledImages {
  std::vector<uint8_t> pixels;  // [N, 28, 28]
  std::vector<uint8_t> labels;  // [N]
  int64_t size() const { return static_cast<int64_t>(labels.size()); }
};

absl::StatusOr<LabelledImages> ReadLabelledImages(const std::string& images_path,
                                                  const std::string& labels_path) {
  absl::StatusOr<IdxArray> images = ReadIdxFile(images_path, 3);
  if (!images.ok()) return images.status();
  if (images->dims[1] != kSide || images->dims[2] != kSide) {
    return absl::DataLossError(absl::StrCat(images_path, ": images are ", images->dims[1], "x",
                                            images->dims[2], ", expected ", kSide, "x", kSide));
  }
  absl::StatusOr<IdxArray> labels = ReadIdxFile(labels_path, 1);
  if (!labels.ok()) return labels.status();
  if (labels->dims[0] != images->dims[0]) {
    return absl::DataLossError(absl::StrCat(images_path, " holds ", images->dims[0], " images but ",
                                            labels_path, " holds ", labels->dims[0], " labels"));
  }
  for (size_t i = 0; i < labels->data.size(); ++i) {
    if (labels->data[i] >= kNumClasses) {
      return absl::DataLossError(absl::StrCat(labels_path, ": label ", labels->data[i],
                                              " of example ", i, " is outside 0..",
                                              kNumClasses - 1));
    }
  }
  return LabelledImages{std::move(images->data), std::move(labels->data)};
}

class FashionMnistDataset : public Dataset {
 public:
  FashionMnistDataset(LabelledImages train, LabelledImages test, int64_t train_examples,
                      int64_t valid_examples, bool augment)
      : train_(std::move(train)),
        test_(std::move(test)),
        valid_begin_(train_.size() - valid_examples),
        augment_(augment),
        order_(train_examples) {
    // Statistics over all images before the validation hold-out.
    double sum = 0, sum_squares = 0;
    const int64_t pixels = valid_begin_ * kPixels;
    for (int64_t i = 0; i < pixels; ++i) {
      const double x = train_.pixels[i] / 255.0;
      sum += x;
      sum_squares += x * x;
    }
    const double mean = sum / pixels;
    const double std = std::sqrt(std::max(sum_squares / pixels - mean * mean, 1e-12));
    info_.task = kImageClassificationTask;
    info_.num_classes = kNumClasses;
    info_.channels = 1;
    info_.height = kSide;
    info_.width = kSide;
    info_.pixel_mean = {static_cast<float>(mean)};
    info_.pixel_std = {static_cast<float>(std)};
    for (int p = 0; p < 256; ++p) {
      normalized_[p] = static_cast<float>((p / 255.0 - mean) / std);
    }
  }

  const DatasetInfo& info() const override { return info_; }

  int64_t NumExamples(Split split) const override {
    switch (split) {
      case Split::kTrain:
        return order_.num_train_examples();
      case Split::kValid:
        return train_.size() - valid_begin_;
      case Split::kTest:
        return test_.size();
    }
    return 0;
  }

  Batch GetBatch(Split split, int64_t batch_size, int64_t index, int64_t epoch,
                 uint64_t seed) const override {
    const std::vector<int64_t> examples =
        order_.BatchExamples(split, NumExamples(split), batch_size, index, epoch, seed);
    const bool augment = augment_ && split == Split::kTrain;
    return MakeBatch(split, examples, augment, epoch, seed);
  }

  Batch GetExamples(Split split, const std::vector<int64_t>& indices) const override {
    CheckExampleIndices(split, NumExamples(split), indices);
    return MakeBatch(split, SplitExampleIndices(order_, split, indices), /*augment=*/false, 0, 0);
  }

  absl::Status SetTrainSubset(int64_t examples) override {
    return order_.SetTrainSubset(examples, "the Fashion-MNIST training images");
  }

 private:
  // Image and label of example `index` of `split`.
  std::pair<const uint8_t*, uint8_t> Example(Split split, int64_t index) const {
    const LabelledImages& source = split == Split::kTest ? test_ : train_;
    const int64_t row = split == Split::kValid ? valid_begin_ + index : index;
    return {source.pixels.data() + row * kPixels, source.labels[row]};
  }

  Batch MakeBatch(Split split, const std::vector<int64_t>& indices, bool augment, int64_t epoch,
                  uint64_t seed) const {
    const int64_t batch = static_cast<int64_t>(indices.size());
    Batch out;
    out.inputs = at::empty({batch, 1, kSide, kSide}, at::kFloat);  // [B,1,H,W]
    out.targets = at::empty({batch}, at::kLong);                   // [B]
    float* inputs = out.inputs.data_ptr<float>();
    int64_t* targets = out.targets.data_ptr<int64_t>();
    for (int64_t b = 0; b < batch; ++b) {
      const auto [image, label] = Example(split, indices[b]);
      targets[b] = label;
      float* dst = inputs + b * kPixels;
      if (!augment) {
        for (int64_t p = 0; p < kPixels; ++p) dst[p] = normalized_[image[p]];
        continue;
      }
      DataRng rng = DataRng::FromKeys(
          {kAugmentSalt, seed, static_cast<uint64_t>(epoch), static_cast<uint64_t>(indices[b])});
      // Window origin in the padded image, minus the padding.
      const int64_t dy = static_cast<int64_t>(rng.Below(2 * kPad + 1)) - kPad;
      const int64_t dx = static_cast<int64_t>(rng.Below(2 * kPad + 1)) - kPad;
      const bool flip = (rng.Next() & 1) != 0;
      for (int64_t y = 0; y < kSide; ++y) {
        for (int64_t x = 0; x < kSide; ++x) {
          const int64_t sy = y + dy;
          const int64_t sx = (flip ? kSide - 1 - x : x) + dx;
          const bool inside = sy >= 0 && sy < kSide && sx >= 0 && sx < kSide;
          dst[y * kSide + x] = normalized_[inside ? image[sy * kSide + sx] : 0];
        }
      }
    }
    return out;
  }

  LabelledImages train_;
  LabelledImages test_;
  int64_t valid_begin_;
  bool augment_;
  ExampleOrder order_;
  DatasetInfo info_;
  std::array<float, 256> normalized_;
};

void ResolveFashionMnist(DatasetSpec* spec) {
  FashionMnistOptions* options = spec->mutable_fashion_mnist();
  if (options->data_dir().empty()) {
    options->set_data_dir("/usr/share/datasets/fashion-mnist");
  }
}

absl::Status ValidateFashionMnist(const DatasetSpec& spec) {
  const FashionMnistOptions& options = spec.fashion_mnist();
  if (options.max_train_examples() < 0) {
    return DatasetFieldError(
        "dataset.fashion_mnist.max_train_examples",
        absl::StrCat("must be >= 0 (0 = all), got ", options.max_train_examples()));
  }
  if (absl::Status s =
          CheckDirectoryField("dataset.fashion_mnist.data_dir", options.data_dir(),
                              "install Debian's dataset-fashion-mnist (third_party/setup.sh)");
      !s.ok()) {
    return s;
  }
  const std::string dir = ResolveUserPath(options.data_dir());
  for (const char* file : kFiles) {
    std::error_code error;
    if (!std::filesystem::is_regular_file(dir + "/" + file, error)) {
      return absl::NotFoundError(absl::StrCat("dataset.fashion_mnist.data_dir: ", file,
                                              " not found in '", options.data_dir(), "'"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<Dataset>> LoadFashionMnist(const FashionMnistOptions& options,
                                                          int64_t valid_examples) {
  const std::string dir = ResolveUserPath(options.data_dir());
  const auto path = [&dir](const char* file) { return absl::StrCat(dir, "/", file); };
  absl::StatusOr<LabelledImages> train = ReadLabelledImages(path(kTrainImages), path(kTrainLabels));
  if (!train.ok()) return train.status();
  absl::StatusOr<LabelledImages> test = ReadLabelledImages(path(kTestImages), path(kTestLabels));
  if (!test.ok()) return test.status();
  if (train->size() <= valid_examples) {
    return absl::FailedPreconditionError(
        absl::StrCat(path(kTrainImages), ": holds ", train->size(), " images; more than the last ",
                     valid_examples, " (the validation split) are needed"));
  }
  if (test->size() == 0) {
    return absl::FailedPreconditionError(absl::StrCat(path(kTestImages), ": holds no images"));
  }
  const int64_t available = train->size() - valid_examples;
  int64_t train_examples = available;
  if (options.max_train_examples() > 0) {
    if (options.max_train_examples() > available) {
      return absl::InvalidArgumentError(
          absl::StrCat("dataset.fashion_mnist.max_train_examples: ", options.max_train_examples(),
                       " exceeds the ", available, " training images (the last ", valid_examples,
                       " of ", kTrainImages, " are the validation split)"));
    }
    train_examples = options.max_train_examples();
  }
  return std::unique_ptr<Dataset>(std::make_unique<FashionMnistDataset>(
      *std::move(train), *std::move(test), train_examples, valid_examples, options.augment()));
}

MOELAB_REGISTER_DATASET(
    "fashion_mnist",
    {.options = DatasetSpec::kFashionMnist,
     .description = "Fashion-MNIST 28x28 grey images, 10 classes (Debian "
                    "dataset-fashion-mnist)",
     .resolve = ResolveFashionMnist,
     .validate = ValidateFashionMnist,
     .load = [](const DatasetSpec& spec) { return LoadFashionMnist(spec.fashion_mnist()); },
     .task = kImageClassificationTask});

}  // namespace moelab
