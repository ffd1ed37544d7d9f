#include "core/data/image_folder.h"

#include <c10/util/Exception.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/dataset.h"
#include "core/tasks/image_classification_name.h"

namespace moelab {
namespace {

using ::testing::HasSubstr;

constexpr float kMean[3] = {0.485f, 0.456f, 0.406f};
constexpr float kStd[3] = {0.229f, 0.224f, 0.225f};

std::string MakeDir(const std::string& name) {
  const std::string dir = absl::StrCat(::testing::TempDir(), "/imgfolder_", name);
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

// Writes a PNG of `rows` x `cols` filled with RGB (r, g, b).
void WriteSolid(const std::string& path, int rows, int cols, int r, int g, int b) {
  std::filesystem::create_directories(std::filesystem::path(path).parent_path());
  cv::Mat image(rows, cols, CV_8UC3, cv::Scalar(b, g, r));  // OpenCV is BGR
  ASSERT_TRUE(cv::imwrite(path, image)) << path;
}

void WriteGrey(const std::string& path, const cv::Mat& grey) {
  std::filesystem::create_directories(std::filesystem::path(path).parent_path());
  ASSERT_TRUE(cv::imwrite(path, grey)) << path;
}

// data_dir with classes "ant" (red) and "bee" (green) in train/ and val/.
std::string MakeFixture(const std::string& name) {
  const std::string dir = MakeDir(name);
  WriteSolid(dir + "/train/bee/1.png", 30, 40, 0, 255, 0);
  WriteSolid(dir + "/train/bee/sub/2.png", 50, 20, 0, 255, 0);
  WriteSolid(dir + "/train/ant/1.png", 16, 16, 255, 0, 0);
  WriteSolid(dir + "/train/ant/2.PNG", 9, 12, 255, 0, 0);
  WriteSolid(dir + "/val/ant/1.png", 20, 30, 255, 0, 0);
  WriteSolid(dir + "/val/bee/1.png", 20, 30, 0, 255, 0);
  std::ofstream(dir + "/train/ant/notes.txt") << "not an image";  // skipped
  return dir;
}

ImageFolderOptions Options(const std::string& dir, int size, bool augment = false) {
  ImageFolderOptions options;
  options.set_data_dir(dir);
  options.set_image_size(size);
  options.set_augment(augment);
  return options;
}

std::vector<float> ToVector(const at::Tensor& t) {
  const at::Tensor c = t.contiguous();
  return std::vector<float>(c.data_ptr<float>(), c.data_ptr<float>() + c.numel());
}

float Normalised(int value, int channel) {
  return (value / 255.0f - kMean[channel]) / kStd[channel];
}

TEST(ImageFolderTest, ClassesSplitsAndSolidColours) {
  auto dataset = LoadImageFolder(Options(MakeFixture("basic"), 8));
  ASSERT_TRUE(dataset.ok()) << dataset.status();
  const DatasetInfo& info = (*dataset)->info();
  EXPECT_EQ(info.task, kImageClassificationTask);
  EXPECT_EQ(info.num_classes, 2);
  EXPECT_EQ(info.channels, 3);
  EXPECT_EQ(info.height, 8);
  EXPECT_EQ(info.width, 8);
  EXPECT_EQ(info.pixel_mean, (std::vector<float>{0.485f, 0.456f, 0.406f}));
  EXPECT_EQ(info.pixel_std, (std::vector<float>{0.229f, 0.224f, 0.225f}));
  EXPECT_EQ((*dataset)->NumExamples(Split::kTrain), 4);
  EXPECT_EQ((*dataset)->NumExamples(Split::kValid), 2);
  EXPECT_EQ((*dataset)->NumExamples(Split::kTest), 0);  // no test/

  // Sorted: ant/1.png, ant/2.PNG, bee/1.png, bee/sub/2.png.
  Batch batch = (*dataset)->GetExamples(Split::kTrain, {0, 1, 2, 3});
  EXPECT_EQ(batch.inputs.sizes(), (std::vector<int64_t>{4, 3, 8, 8}));
  EXPECT_EQ(batch.targets[0].item<int64_t>(), 0);
  EXPECT_EQ(batch.targets[1].item<int64_t>(), 0);
  EXPECT_EQ(batch.targets[2].item<int64_t>(), 1);
  EXPECT_EQ(batch.targets[3].item<int64_t>(), 1);
  const std::vector<float> pixels = ToVector(batch.inputs);
  for (int b = 0; b < 4; ++b) {
    const int rgb[3] = {b < 2 ? 255 : 0, b < 2 ? 0 : 255, 0};
    for (int c = 0; c < 3; ++c) {
      for (int p = 0; p < 64; ++p) {
        ASSERT_NEAR(pixels[(b * 3 + c) * 64 + p], Normalised(rgb[c], c), 1e-5)
            << "image " << b << " channel " << c;
      }
    }
  }
  Batch valid = (*dataset)->GetBatch(Split::kValid, 2, 0, 0, 0);
  EXPECT_EQ(valid.targets[0].item<int64_t>(), 0);
  EXPECT_EQ(valid.targets[1].item<int64_t>(), 1);
}

TEST(ImageFolderTest, ShorterSideResizeThenCentreCrop) {
  const std::string dir = MakeDir("crop");
  // 4 x 8 (rows x cols), column x has grey value 30 * x: with image_size 4
  // no resize happens and the centre crop keeps columns 2..5.
  cv::Mat wide(4, 8, CV_8UC1);
  for (int y = 0; y < 4; ++y) {
    for (int x = 0; x < 8; ++x) wide.at<uint8_t>(y, x) = 30 * x;
  }
  WriteGrey(dir + "/train/a/wide.png", wide);
  // 8 x 8 checkerboard of 0 / 200: halving with area interpolation averages
  // each 2 x 2 block to 100.
  cv::Mat board(8, 8, CV_8UC1);
  for (int y = 0; y < 8; ++y) {
    for (int x = 0; x < 8; ++x) board.at<uint8_t>(y, x) = (x + y) % 2 ? 200 : 0;
  }
  WriteGrey(dir + "/train/b/board.png", board);
  WriteGrey(dir + "/val/a/wide.png", wide);
  auto dataset = LoadImageFolder(Options(dir, 4));
  ASSERT_TRUE(dataset.ok()) << dataset.status();
  const std::vector<float> pixels = ToVector((*dataset)->GetExamples(Split::kTrain, {0, 1}).inputs);
  for (int c = 0; c < 3; ++c) {  // grey is replicated to RGB
    for (int y = 0; y < 4; ++y) {
      for (int x = 0; x < 4; ++x) {
        EXPECT_NEAR(pixels[(c * 4 + y) * 4 + x], Normalised(30 * (x + 2), c), 1e-5);
        EXPECT_NEAR(pixels[((3 + c) * 4 + y) * 4 + x], Normalised(100, c), 1e-5);
      }
    }
  }
}

TEST(ImageFolderTest, AugmentationIsDeterministicAndVaries) {
  const std::string dir = MakeDir("augment");
  cv::Mat gradient(24, 32, CV_8UC1);
  for (int y = 0; y < 24; ++y) {
    for (int x = 0; x < 32; ++x) gradient.at<uint8_t>(y, x) = 7 * x + 2 * y;
  }
  for (int i = 0; i < 4; ++i) WriteGrey(absl::StrCat(dir, "/train/a/", i, ".png"), gradient);
  WriteGrey(dir + "/val/a/0.png", gradient);
  auto plain = LoadImageFolder(Options(dir, 16));
  auto augmented = LoadImageFolder(Options(dir, 16, /*augment=*/true));
  ASSERT_TRUE(plain.ok() && augmented.ok());

  const at::Tensor centre = (*plain)->GetExamples(Split::kTrain, {0}).inputs;
  std::set<std::vector<float>> seen;
  for (int epoch = 0; epoch < 6; ++epoch) {
    Batch a = (*augmented)->GetBatch(Split::kTrain, 4, 0, epoch, 9);
    Batch b = (*augmented)->GetBatch(Split::kTrain, 4, 0, epoch, 9);
    EXPECT_TRUE(a.inputs.equal(b.inputs));
    for (int i = 0; i < 4; ++i) seen.insert(ToVector(a.inputs[i]));
  }
  EXPECT_GT(seen.size(),
            12u);  // 24 draws of crop and flip, nearly all distinct
  // Evaluation and GetExamples are never augmented.
  EXPECT_TRUE((*augmented)->GetExamples(Split::kTrain, {0}).inputs.equal(centre));
  EXPECT_TRUE((*augmented)
                  ->GetBatch(Split::kValid, 1, 0, 3, 9)
                  .inputs.equal((*plain)->GetBatch(Split::kValid, 1, 0, 0, 0).inputs));
}

TEST(ImageFolderTest, OptionalTestSplit) {
  const std::string dir = MakeFixture("with_test");
  WriteSolid(dir + "/test/bee/x.jpg", 10, 10, 0, 255, 0);
  auto dataset = LoadImageFolder(Options(dir, 4));
  ASSERT_TRUE(dataset.ok()) << dataset.status();
  EXPECT_EQ((*dataset)->NumExamples(Split::kTest), 1);
  EXPECT_EQ((*dataset)->GetExamples(Split::kTest, {0}).targets[0].item<int64_t>(), 1);
}

absl::Status LoadError(const std::string& dir) {
  auto dataset = LoadImageFolder(Options(dir, 4));
  return dataset.ok() ? absl::OkStatus() : dataset.status();
}

TEST(ImageFolderTest, DirectoryAndImageErrorsNameThePath) {
  const std::string no_classes = MakeDir("no_classes");
  std::filesystem::create_directories(no_classes + "/train");
  std::filesystem::create_directories(no_classes + "/val");
  EXPECT_THAT(LoadError(no_classes).message(),
              HasSubstr(no_classes + "/train: no class subdirectories"));

  const std::string empty_class = MakeFixture("empty_class");
  std::filesystem::create_directories(empty_class + "/train/cat");
  EXPECT_THAT(LoadError(empty_class).message(),
              HasSubstr(empty_class + "/train/cat: class directory with no images"));

  const std::string empty_val = MakeFixture("empty_val");
  std::filesystem::remove_all(empty_val + "/val");
  std::filesystem::create_directories(empty_val + "/val/ant");
  EXPECT_THAT(LoadError(empty_val).message(), HasSubstr(empty_val + "/val: no images"));

  const std::string unknown = MakeFixture("unknown_class");
  WriteSolid(unknown + "/val/wasp/1.png", 8, 8, 1, 2, 3);
  EXPECT_THAT(LoadError(unknown).message(),
              HasSubstr(unknown + "/val/wasp: class 'wasp' is not among the "
                                  "classes of the train/ directory"));

  const std::string garbage = MakeFixture("garbage");
  std::ofstream(garbage + "/train/bee/3.png") << "definitely not a PNG";
  absl::Status status = LoadError(garbage);
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(status.message(), HasSubstr(garbage + "/train/bee/3.png: unreadable image"));

  const std::string empty_file = MakeFixture("empty_file");
  std::ofstream(empty_file + "/val/bee/2.jpg").flush();
  EXPECT_THAT(LoadError(empty_file).message(),
              HasSubstr(empty_file + "/val/bee/2.jpg: unreadable image"));

  // A PNG cut after its header passes the header check and fails the decode
  // check at load.
  const std::string truncated = MakeFixture("truncated");
  const std::string png = truncated + "/train/ant/1.png";
  std::filesystem::resize_file(png, 40);
  status = LoadError(truncated);
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(status.message(), png + ": cannot decode image (corrupt or truncated pixel data)");
}

// A JPEG written by OpenCV, then cut or damaged after its headers: OpenCV
// would decode it silently (grey or garbled blocks) or fail mid-training;
// loading refuses it, naming the file.
TEST(ImageFolderTest, DamagedJpegIsRefusedAtLoad) {
  const std::string dir = MakeFixture("damaged_jpeg");
  const std::string jpeg = dir + "/val/bee/2.jpg";
  cv::Mat noise(40, 40, CV_8UC3);
  cv::RNG(3).fill(noise, cv::RNG::UNIFORM, 0, 256);
  ASSERT_TRUE(cv::imwrite(jpeg, noise));
  ASSERT_TRUE(LoadImageFolder(Options(dir, 8)).ok());  // intact: loads

  std::string bytes;
  {
    std::ifstream in(jpeg, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), {});
  }
  const size_t sos = bytes.find("\xff\xda");
  ASSERT_NE(sos, std::string::npos);
  std::ofstream(jpeg, std::ios::binary | std::ios::trunc) << bytes.substr(0, sos + 200);
  absl::Status status = LoadError(dir);
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(status.message(), jpeg +
                                  ": damaged JPEG data: Premature end of JPEG file (expected "
                                  "an image that decodes intact)");

  std::string corrupt = bytes;
  for (size_t i = sos + 20; i < sos + 60; ++i) corrupt[i] = '\xd9';
  std::ofstream(jpeg, std::ios::binary | std::ios::trunc) << corrupt;
  status = LoadError(dir);
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(status.message(), HasSubstr(jpeg + ": damaged JPEG data: Corrupt JPEG data: "));
}

// Only a file damaged after loading can still fail in a batch, with a
// c10::Error naming it (Dataset::GetBatch returns no Status).
TEST(ImageFolderTest, FileDamagedAfterLoadingFailsInTheBatch) {
  const std::string dir = MakeFixture("damaged_later");
  const std::string path = dir + "/train/ant/1.png";
  auto dataset = LoadImageFolder(Options(dir, 4));
  ASSERT_TRUE(dataset.ok()) << dataset.status();
  std::filesystem::resize_file(path, 40);
  try {
    (*dataset)->GetExamples(Split::kTrain, {0});
    ADD_FAILURE() << "decoding a truncated PNG did not fail";
  } catch (const c10::Error& e) {
    EXPECT_THAT(e.what(), HasSubstr(path + ": cannot decode image"));
  }
}

TEST(ImageFolderTest, ResolveAndValidate) {
  const auto* entry = *DatasetRegistry().Find("image_folder");
  EXPECT_EQ(entry->task, kImageClassificationTask);
  DatasetSpec spec;
  spec.set_name("image_folder");
  entry->resolve(&spec);
  EXPECT_EQ(spec.image_folder().image_size(), 224);
  EXPECT_THAT(entry->validate(spec).message(),
              HasSubstr("dataset.image_folder.data_dir: must be set"));

  const std::string dir = MakeFixture("validate");
  spec.mutable_image_folder()->set_data_dir(dir);
  EXPECT_TRUE(entry->validate(spec).ok());
  spec.mutable_image_folder()->set_image_size(-3);
  EXPECT_THAT(entry->validate(spec).message(), HasSubstr("dataset.image_folder.image_size"));
  spec.mutable_image_folder()->set_image_size(32);
  std::filesystem::remove_all(dir + "/val");
  EXPECT_THAT(entry->validate(spec).message(),
              HasSubstr("dataset.image_folder.data_dir: val/ not found in '" + dir + "'"));
  spec.mutable_image_folder()->set_data_dir(dir + "/nope");
  EXPECT_THAT(entry->validate(spec).message(),
              HasSubstr("dataset.image_folder.data_dir: directory not found"));
}

}  // namespace
}  // namespace moelab
