#include "core/data/dataset_util.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fstream>
#include <string>

#include "absl/status/status.h"

namespace moelab {
namespace {

using ::testing::HasSubstr;

// `bytes` with its embedded NULs (a plain literal would stop at the first).
template <size_t N>
std::string Bytes(const char (&bytes)[N]) {
  return std::string(bytes, N - 1);
}

TEST(CheckUtf8TextTest, AcceptsWellFormedUtf8) {
  // ASCII, 2-, 3- and 4-byte sequences, a byte-order mark, the largest code
  // point, the last before the surrogates and the first after them.
  for (const std::string& text :
       {std::string(""), std::string("plain ASCII\n\ttext\r\n"),
        std::string("caf\xc3\xa9 na\xc3\xafve \xe2\x80\x94 \xe2\x80\x9cq\xe2\x80\x9d"),
        std::string("\xef\xbb\xbf"
                    "BOM, \xe6\x97\xa5\xe6\x9c\xac, \xf0\x9f\x98\x80"),
        std::string("\xf4\x8f\xbf\xbf \xed\x9f\xbf \xee\x80\x80 \xc2\x80")}) {
    EXPECT_TRUE(CheckUtf8Text("t.txt", text).ok()) << text;
  }
}

TEST(CheckUtf8TextTest, NamesTheFileTheByteAndTheLine) {
  absl::Status status = CheckUtf8Text("dir/1990.txt", "ab\ncaf\xe9 x");
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(status.message(),
            "dir/1990.txt: byte 6 (0xe9, line 2) is not valid UTF-8; "
            "expected UTF-8 text");
  status = CheckUtf8Text("dir/1990.txt", Bytes("one\ntwo\nth\0ree\0"));
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(status.message(),
            "dir/1990.txt: contains NUL bytes (the first at byte 10, line 3); "
            "expected UTF-8 text");
}

TEST(CheckUtf8TextTest, RefusesEveryIllFormedSequence) {
  struct Case {
    const char* what;
    std::string text;
    const char* message;
  };
  const Case cases[] = {
      {"stray continuation byte", "a\x80", "byte 1 (0x80,"},
      {"overlong 2-byte form", "a\xc0\xaf", "byte 1 (0xc0,"},
      {"overlong 2-byte lead C1", "\xc1\xbf", "byte 0 (0xc1,"},
      {"overlong 3-byte form", "\xe0\x80\xaf", "byte 0 (0xe0,"},
      {"overlong 4-byte form", "\xf0\x80\x80\xaf", "byte 0 (0xf0,"},
      {"surrogate", "x\xed\xa0\x80", "byte 1 (0xed,"},
      {"above U+10FFFF", "\xf4\x90\x80\x80", "byte 0 (0xf4,"},
      {"lead F5", "\xf5\x80\x80\x80", "byte 0 (0xf5,"},
      {"byte FF", "ok \xff", "byte 3 (0xff,"},
      {"cut short mid-file", "\xe2\x80 x", "byte 0 (0xe2,"},
      {"cut short at the end", "x\xf0\x9f\x98", "byte 1 (0xf0,"},
      {"2-byte lead then ASCII", "\xc3(", "byte 0 (0xc3,"},
  };
  for (const Case& c : cases) {
    absl::Status status = CheckUtf8Text("f.txt", c.text);
    EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss) << c.what;
    EXPECT_THAT(std::string(status.message()), HasSubstr(c.message)) << c.what;
    EXPECT_THAT(std::string(status.message()), HasSubstr("is not valid UTF-8")) << c.what;
  }
}

TEST(ReadUtf8TextFileTest, ReadsTextAndRefusesBinary) {
  const std::string good = ::testing::TempDir() + "/good.txt";
  const std::string text =
      "Gr\xc3\xbc\xc3\x9f"
      "e \xf0\x9f\x98\x80\n";
  std::ofstream(good, std::ios::binary) << text;
  absl::StatusOr<std::string> read = ReadUtf8TextFile(good);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(*read, text);

  const std::string bad = ::testing::TempDir() + "/bad.txt";
  std::ofstream(bad, std::ios::binary) << Bytes("\x89PNG\r\n\x1a\n\0\0");
  EXPECT_EQ(ReadUtf8TextFile(bad).status().message(),
            bad +
                ": byte 0 (0x89, line 1) is not valid UTF-8; expected UTF-8 "
                "text");
  EXPECT_EQ(ReadUtf8TextFile(::testing::TempDir() + "/none.txt").status().code(),
            absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace moelab
