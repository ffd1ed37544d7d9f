#include "core/data/image_folder.h"

#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <filesystem>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "core/data/dataset_util.h"
#include "core/data/example_order.h"
#include "core/data/image_check.h"
#include "core/data/random.h"
#include "core/paths.h"
#include "core/tasks/image_classification_name.h"

namespace moelab {
namespace {

namespace fs = std::filesystem;

constexpr std::array<float, 3> kImageNetMean = {0.485f, 0.456f, 0.406f};
constexpr std::array<float, 3> kImageNetStd = {0.229f, 0.224f, 0.225f};
constexpr uint64_t kAugmentSalt = 0x6175676d656e74ull;  // "augment"
constexpr std::array<const char*, 3> kSplitDirs = {"train", "val", "test"};

struct ImageEntry {
  std::string path;
  int64_t label = 0;
};

bool IsImageFile(const fs::path& path) {
  static const std::array<const char*, 10> kExtensions = {
      ".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".pbm", ".tif", ".tiff", ".webp"};
  const std::string extension = absl::AsciiStrToLower(path.extension().string());
  return std::find(kExtensions.begin(), kExtensions.end(), extension) != kExtensions.end();
}

bool IsHidden(const fs::path& path) {
  const std::string name = path.filename().string();
  return !name.empty() && name[0] == '.';
}

// Sorted names of the subdirectories of `dir`.
absl::StatusOr<std::vector<std::string>> ClassDirectories(const std::string& dir) {
  std::error_code error;
  std::vector<std::string> names;
  for (fs::directory_iterator it(dir, error), end; !error && it != end; it.increment(error)) {
    if (it->is_directory(error) && !IsHidden(it->path())) {
      names.push_back(it->path().filename().string());
    }
  }
  if (error) {
    return absl::NotFoundError(absl::StrCat(dir, ": cannot list directory: ", error.message()));
  }
  std::sort(names.begin(), names.end());
  return names;
}

// Image files below `dir`, sorted by path.
absl::StatusOr<std::vector<std::string>> ImageFiles(const std::string& dir) {
  std::error_code error;
  std::vector<std::string> files;
  for (fs::recursive_directory_iterator it(dir, error), end; !error && it != end;
       it.increment(error)) {
    if (IsHidden(it->path())) {
      if (it->is_directory(error)) it.disable_recursion_pending();
      continue;
    }
    if (it->is_regular_file(error) && IsImageFile(it->path())) {
      files.push_back(it->path().string());
    }
  }
  if (error) {
    return absl::NotFoundError(absl::StrCat(dir, ": cannot list directory: ", error.message()));
  }
  std::sort(files.begin(), files.end());
  return files;
}

// The labelled images of one split directory; `class_ids` maps train's class
// names to ids.
absl::StatusOr<std::vector<ImageEntry>> ListSplit(
    const std::string& split_dir, const absl::flat_hash_map<std::string, int64_t>& class_ids,
    bool every_class_needs_images) {
  absl::StatusOr<std::vector<std::string>> classes = ClassDirectories(split_dir);
  if (!classes.ok()) return classes.status();
  std::vector<ImageEntry> entries;
  for (const std::string& name : *classes) {
    const std::string class_dir = absl::StrCat(split_dir, "/", name);
    auto id = class_ids.find(name);
    if (id == class_ids.end()) {
      return absl::FailedPreconditionError(absl::StrCat(
          class_dir, ": class '", name, "' is not among the classes of the train/ directory"));
    }
    absl::StatusOr<std::vector<std::string>> files = ImageFiles(class_dir);
    if (!files.ok()) return files.status();
    if (files->empty() && every_class_needs_images) {
      return absl::FailedPreconditionError(
          absl::StrCat(class_dir, ": class directory with no images"));
    }
    for (std::string& file : *files) {
      if (!cv::haveImageReader(file)) {
        return absl::DataLossError(
            absl::StrCat(file, ": unreadable image (unknown format, empty or unreadable file)"));
      }
      entries.push_back({std::move(file), id->second});
    }
  }
  if (entries.empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat(split_dir,
                     ": no images (expected <class>/<image> files such as "
                     ".jpg or .png)"));
  }
  return entries;
}

// Decodes every image once (CheckImageDecodes), on ATen's threads; the
// first damaged file in split and path order is the error. Batches decode
// lazily and cannot return a Status (core/dataset.h), so this is where a
// damaged image is refused.
absl::Status CheckSplitsDecode(const std::array<std::vector<ImageEntry>, 3>& splits) {
  std::vector<const std::string*> paths;
  for (const auto& split : splits) {
    for (const ImageEntry& entry : split) paths.push_back(&entry.path);
  }
  std::vector<absl::Status> results(paths.size());
  at::parallel_for(0, static_cast<int64_t>(paths.size()), /*grain_size=*/8,
                   [&](int64_t begin, int64_t end) {
                     for (int64_t i = begin; i < end; ++i) {
                       results[i] = CheckImageDecodes(*paths[i]);
                     }
                   });
  for (const absl::Status& status : results) {
    if (!status.ok()) return status;
  }
  return absl::OkStatus();
}

// The pixels of `path` as 8-bit RGB, or a c10::Error naming the file. Loading
// has decoded every file once, so this fails only for a file changed since.
cv::Mat DecodeRgb(const std::string& path) {
  cv::Mat bgr;
  try {
    bgr = cv::imread(path, cv::IMREAD_COLOR);
  } catch (const cv::Exception& e) {
    TORCH_CHECK(false, path, ": cannot decode image: ", e.what());
  }
  TORCH_CHECK(!bgr.empty(), path, ": cannot decode image");
  cv::Mat rgb;
  cv::cvtColor(bgr, rgb, cv::COLOR_BGR2RGB);
  return rgb;
}

cv::Mat Resize(const cv::Mat& image, int width, int height) {
  if (image.cols == width && image.rows == height) return image;
  const bool shrinking = width < image.cols || height < image.rows;
  cv::Mat resized;
  cv::resize(image, resized, cv::Size(width, height), 0, 0,
             shrinking ? cv::INTER_AREA : cv::INTER_LINEAR);
  return resized;
}

// Shorter side to `size`, then the central size x size window.
cv::Mat ResizeAndCentreCrop(const cv::Mat& image, int size) {
  const double scale = static_cast<double>(size) / std::min(image.cols, image.rows);
  const int width = std::max(size, static_cast<int>(std::lround(image.cols * scale)));
  const int height = std::max(size, static_cast<int>(std::lround(image.rows * scale)));
  const cv::Mat resized = Resize(image, width, height);
  return resized(cv::Rect((width - size) / 2, (height - size) / 2, size, size));
}

cv::Mat RandomResizedCrop(const cv::Mat& image, int size, DataRng& rng) {
  const double area = static_cast<double>(image.cols) * image.rows;
  for (int attempt = 0; attempt < 10; ++attempt) {
    const double target = area * (0.08 + 0.92 * rng.Uniform());
    const double log_ratio =
        std::log(3.0 / 4.0) + (std::log(4.0 / 3.0) - std::log(3.0 / 4.0)) * rng.Uniform();
    const double ratio = std::exp(log_ratio);
    const int width = static_cast<int>(std::lround(std::sqrt(target * ratio)));
    const int height = static_cast<int>(std::lround(std::sqrt(target / ratio)));
    if (width < 1 || height < 1 || width > image.cols || height > image.rows) {
      continue;
    }
    const int x = static_cast<int>(rng.Below(image.cols - width + 1));
    const int y = static_cast<int>(rng.Below(image.rows - height + 1));
    return Resize(image(cv::Rect(x, y, width, height)), size, size);
  }
  return ResizeAndCentreCrop(image, size);
}

class ImageFolderDataset : public Dataset {
 public:
  ImageFolderDataset(std::array<std::vector<ImageEntry>, 3> splits, int64_t num_classes,
                     int image_size, bool augment)
      : splits_(std::move(splits)),
        image_size_(image_size),
        augment_(augment),
        order_(static_cast<int64_t>(splits_[0].size())) {
    info_.task = kImageClassificationTask;
    info_.num_classes = num_classes;
    info_.channels = 3;
    info_.height = image_size;
    info_.width = image_size;
    info_.pixel_mean.assign(kImageNetMean.begin(), kImageNetMean.end());
    info_.pixel_std.assign(kImageNetStd.begin(), kImageNetStd.end());
  }

  const DatasetInfo& info() const override { return info_; }

  int64_t NumExamples(Split split) const override {
    if (split == Split::kTrain) return order_.num_train_examples();
    return static_cast<int64_t>(splits_[static_cast<int>(split)].size());
  }

  Batch GetBatch(Split split, int64_t batch_size, int64_t index, int64_t epoch,
                 uint64_t seed) const override {
    const std::vector<int64_t> examples =
        order_.BatchExamples(split, NumExamples(split), batch_size, index, epoch, seed);
    return MakeBatch(split, examples, augment_ && split == Split::kTrain, epoch, seed);
  }

  Batch GetExamples(Split split, const std::vector<int64_t>& indices) const override {
    CheckExampleIndices(split, NumExamples(split), indices);
    return MakeBatch(split, SplitExampleIndices(order_, split, indices), /*augment=*/false, 0, 0);
  }

  absl::Status SetTrainSubset(int64_t examples) override {
    return order_.SetTrainSubset(examples, "the image folder's train/ directory");
  }

 private:
  Batch MakeBatch(Split split, const std::vector<int64_t>& indices, bool augment, int64_t epoch,
                  uint64_t seed) const {
    const int64_t batch = static_cast<int64_t>(indices.size());
    const int64_t size = image_size_;
    Batch out;
    out.inputs = at::empty({batch, 3, size, size}, at::kFloat);  // [B,3,S,S]
    out.targets = at::empty({batch}, at::kLong);                 // [B]
    float* inputs = out.inputs.data_ptr<float>();
    int64_t* targets = out.targets.data_ptr<int64_t>();
    for (int64_t b = 0; b < batch; ++b) {
      const ImageEntry& entry = splits_[static_cast<int>(split)][indices[b]];
      targets[b] = entry.label;
      const cv::Mat rgb = DecodeRgb(entry.path);
      cv::Mat crop;
      bool flip = false;
      if (augment) {
        DataRng rng = DataRng::FromKeys(
            {kAugmentSalt, seed, static_cast<uint64_t>(epoch), static_cast<uint64_t>(indices[b])});
        crop = RandomResizedCrop(rgb, image_size_, rng);
        flip = (rng.Next() & 1) != 0;
      } else {
        crop = ResizeAndCentreCrop(rgb, image_size_);
      }
      float* dst = inputs + b * 3 * size * size;
      for (int64_t y = 0; y < size; ++y) {
        const uint8_t* row = crop.ptr<uint8_t>(static_cast<int>(y));
        for (int64_t x = 0; x < size; ++x) {
          const uint8_t* pixel = row + 3 * (flip ? size - 1 - x : x);
          for (int c = 0; c < 3; ++c) {
            dst[(c * size + y) * size + x] =
                (pixel[c] / 255.0f - kImageNetMean[c]) / kImageNetStd[c];
          }
        }
      }
    }
    return out;
  }

  std::array<std::vector<ImageEntry>, 3> splits_;
  int image_size_;
  bool augment_;
  ExampleOrder order_;
  DatasetInfo info_;
};

void ResolveImageFolder(DatasetSpec* spec) {
  ImageFolderOptions* options = spec->mutable_image_folder();
  if (options->image_size() == 0) options->set_image_size(224);
}

absl::Status ValidateImageFolder(const DatasetSpec& spec) {
  const ImageFolderOptions& options = spec.image_folder();
  if (options.image_size() < 1 || options.image_size() > 4096) {
    return DatasetFieldError("dataset.image_folder.image_size",
                             absl::StrCat("must be in [1, 4096], got ", options.image_size()));
  }
  if (absl::Status s = CheckDirectoryField("dataset.image_folder.data_dir", options.data_dir(),
                                           "the directory holding train/ and val/");
      !s.ok()) {
    return s;
  }
  const std::string dir = ResolveUserPath(options.data_dir());
  for (const char* split : {"train", "val"}) {
    std::error_code error;
    if (!fs::is_directory(absl::StrCat(dir, "/", split), error)) {
      return absl::NotFoundError(absl::StrCat("dataset.image_folder.data_dir: ", split,
                                              "/ not found in '", options.data_dir(), "'"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<Dataset>> LoadImageFolder(const ImageFolderOptions& options) {
  const std::string dir = ResolveUserPath(options.data_dir());
  const std::string train_dir = absl::StrCat(dir, "/train");
  absl::StatusOr<std::vector<std::string>> classes = ClassDirectories(train_dir);
  if (!classes.ok()) return classes.status();
  if (classes->empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat(train_dir, ": no class subdirectories (expected train/<class>/<image>)"));
  }
  absl::flat_hash_map<std::string, int64_t> class_ids;
  for (size_t i = 0; i < classes->size(); ++i) {
    class_ids[(*classes)[i]] = static_cast<int64_t>(i);
  }
  std::array<std::vector<ImageEntry>, 3> splits;
  for (int s = 0; s < 3; ++s) {
    const std::string split_dir = absl::StrCat(dir, "/", kSplitDirs[s]);
    std::error_code error;
    if (s == 2 && !fs::exists(split_dir, error)) break;  // test/ is optional
    absl::StatusOr<std::vector<ImageEntry>> entries =
        ListSplit(split_dir, class_ids, /*every_class_needs_images=*/s == 0);
    if (!entries.ok()) return entries.status();
    splits[s] = *std::move(entries);
  }
  if (absl::Status s = CheckSplitsDecode(splits); !s.ok()) return s;
  return std::unique_ptr<Dataset>(
      std::make_unique<ImageFolderDataset>(std::move(splits), static_cast<int64_t>(classes->size()),
                                           options.image_size(), options.augment()));
}

MOELAB_REGISTER_DATASET(
    "image_folder",
    {.options = DatasetSpec::kImageFolder,
     .description = "ImageNet-style class-per-folder images, decoded with "
                    "OpenCV",
     .resolve = ResolveImageFolder,
     .validate = ValidateImageFolder,
     .load = [](const DatasetSpec& spec) { return LoadImageFolder(spec.image_folder()); },
     .task = kImageClassificationTask});

}  // namespace moelab
