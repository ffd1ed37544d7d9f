#include "core/data/image_check.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <fstream>
#include <iterator>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <string>

#include "absl/status/status.h"

namespace moelab {
namespace {

using ::testing::HasSubstr;

std::string TempPath(const std::string& name) { return ::testing::TempDir() + "/" + name; }

// A 64 x 48 image of noise (every block carries entropy-coded data) written
// by OpenCV as `name`; returns the file's bytes.
std::string WriteNoise(const std::string& name) {
  cv::Mat image(48, 64, CV_8UC3);
  cv::RNG rng(7);
  rng.fill(image, cv::RNG::UNIFORM, 0, 256);
  EXPECT_TRUE(cv::imwrite(TempPath(name), image)) << name;
  std::ifstream in(TempPath(name), std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void WriteBytes(const std::string& name, const std::string& bytes) {
  std::ofstream(TempPath(name), std::ios::binary) << bytes;
}

// Offset of the JPEG start-of-scan marker (FF DA): the entropy-coded data
// follows its header.
size_t StartOfScan(const std::string& jpeg) {
  const size_t sos = jpeg.find("\xff\xda");
  EXPECT_NE(sos, std::string::npos);
  return sos;
}

TEST(CheckImageDecodesTest, IntactImagesPass) {
  WriteNoise("ok.jpg");
  WriteNoise("ok.png");
  WriteNoise("ok.bmp");
  cv::Mat grey(30, 20, CV_8UC1);
  cv::RNG(8).fill(grey, cv::RNG::UNIFORM, 0, 256);
  ASSERT_TRUE(cv::imwrite(TempPath("grey.jpg"), grey));
  cv::Mat colour(30, 20, CV_8UC3);
  cv::RNG(9).fill(colour, cv::RNG::UNIFORM, 0, 256);
  ASSERT_TRUE(cv::imwrite(TempPath("progressive.jpg"), colour, {cv::IMWRITE_JPEG_PROGRESSIVE, 1}));
  for (const char* name : {"ok.jpg", "ok.png", "ok.bmp", "grey.jpg", "progressive.jpg"}) {
    const absl::Status status = CheckImageDecodes(TempPath(name));
    EXPECT_TRUE(status.ok()) << name << ": " << status;
  }
}

// OpenCV decodes each of these JPEGs without an error (it fills the damage
// with grey or garbled blocks and prints a libjpeg warning to stderr); the
// check refuses them.
TEST(CheckImageDecodesTest, DamagedJpegBodiesAreErrors) {
  const std::string jpeg = WriteNoise("source.jpg");
  const size_t sos = StartOfScan(jpeg);
  ASSERT_GT(jpeg.size(), sos + 400);

  WriteBytes("truncated.jpg", jpeg.substr(0, sos + 300));
  std::string corrupt = jpeg;
  for (size_t i = sos + 100; i + 2 < corrupt.size(); ++i) {
    corrupt[i] = static_cast<char>((i * 2654435761u) >> 13);
  }
  WriteBytes("corrupt.jpg", corrupt);
  std::string extraneous = jpeg;
  for (size_t i = sos + 20; i < sos + 60; ++i) extraneous[i] = '\xd9';
  WriteBytes("extraneous.jpg", extraneous);

  for (const char* name : {"truncated.jpg", "corrupt.jpg", "extraneous.jpg"}) {
    EXPECT_FALSE(cv::imread(TempPath(name)).empty()) << name << ": OpenCV now refuses it itself";
  }
  absl::Status status = CheckImageDecodes(TempPath("truncated.jpg"));
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(status.message(), TempPath("truncated.jpg") +
                                  ": damaged JPEG data: Premature end of JPEG file (expected an "
                                  "image that decodes intact)");
  status = CheckImageDecodes(TempPath("extraneous.jpg"));
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(status.message()),
              HasSubstr(TempPath("extraneous.jpg") + ": damaged JPEG data: Corrupt JPEG data: "));
  // Which of libjpeg's complaints random bytes raise depends on the bytes
  // (here a fatal "Unsupported marker type" that OpenCV's decoder ignores).
  status = CheckImageDecodes(TempPath("corrupt.jpg"));
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(status.message()),
              ::testing::AnyOf(HasSubstr(TempPath("corrupt.jpg") + ": damaged JPEG data: "),
                               HasSubstr(TempPath("corrupt.jpg") + ": cannot decode JPEG: ")));
}

// A JPEG whose scan header is cut: libjpeg (and OpenCV) cannot decode it at
// all. Detection is by content, so a wrong extension changes nothing.
TEST(CheckImageDecodesTest, UndecodableJpegIsAnError) {
  const std::string jpeg = WriteNoise("source2.jpg");
  WriteBytes("cut.png", jpeg.substr(0, StartOfScan(jpeg) + 4));
  const absl::Status status = CheckImageDecodes(TempPath("cut.png"));
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(status.message()),
              HasSubstr(TempPath("cut.png") + ": cannot decode JPEG: "));
}

TEST(CheckImageDecodesTest, DamagedPngAndMissingFileAreErrors) {
  const std::string png = WriteNoise("source.png");
  WriteBytes("truncated.png", png.substr(0, png.size() / 2));
  absl::Status status = CheckImageDecodes(TempPath("truncated.png"));
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(status.message(),
            TempPath("truncated.png") + ": cannot decode image (corrupt or truncated pixel data)");
  status = CheckImageDecodes(TempPath("nowhere.jpg"));
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(status.message()), HasSubstr(TempPath("nowhere.jpg") + ": cannot open"));
}

}  // namespace
}  // namespace moelab
