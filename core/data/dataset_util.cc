#include "core/data/dataset_util.h"

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/paths.h"

namespace moelab {

absl::Status DatasetFieldError(absl::string_view field, absl::string_view problem) {
  return absl::InvalidArgumentError(absl::StrCat(field, ": ", problem));
}

absl::Status CheckDirectoryField(absl::string_view field, const std::string& dir,
                                 absl::string_view hint) {
  const std::string suffix = hint.empty() ? "" : absl::StrCat(" (", hint, ")");
  if (dir.empty()) return DatasetFieldError(field, absl::StrCat("must be set", suffix));
  std::error_code error;
  if (!std::filesystem::is_directory(ResolveUserPath(dir), error)) {
    return absl::NotFoundError(absl::StrCat(field, ": directory not found: '", dir, "'", suffix));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> ReadFileToString(const std::string& path) {
  std::unique_ptr<FILE, int (*)(FILE*)> file(std::fopen(path.c_str(), "rb"), &std::fclose);
  if (file == nullptr) {
    return absl::NotFoundError(absl::StrCat(path, ": cannot open: ", std::strerror(errno)));
  }
  std::string contents;
  char buffer[1 << 16];
  size_t read;
  while ((read = std::fread(buffer, 1, sizeof(buffer), file.get())) > 0) {
    contents.append(buffer, read);
  }
  if (std::ferror(file.get())) {
    return absl::DataLossError(absl::StrCat(path, ": read error: ", std::strerror(errno)));
  }
  return contents;
}

namespace {

// Length of the well-formed UTF-8 sequence at text[i] (Unicode Table 3-7),
// or 0 when the bytes there are not one.
size_t Utf8SequenceLength(absl::string_view text, size_t i) {
  const auto byte = [&](size_t k) -> uint8_t {
    return k < text.size() ? static_cast<uint8_t>(text[k]) : 0;
  };
  const auto in = [](uint8_t b, uint8_t lo, uint8_t hi) { return b >= lo && b <= hi; };
  const uint8_t b0 = byte(i);
  if (b0 < 0x80) return 1;
  if (in(b0, 0xC2, 0xDF)) return in(byte(i + 1), 0x80, 0xBF) ? 2 : 0;
  if (in(b0, 0xE0, 0xEF)) {
    // E0: no overlong forms; ED: no surrogates (U+D800..U+DFFF).
    const uint8_t lo = b0 == 0xE0 ? 0xA0 : 0x80;
    const uint8_t hi = b0 == 0xED ? 0x9F : 0xBF;
    return in(byte(i + 1), lo, hi) && in(byte(i + 2), 0x80, 0xBF) ? 3 : 0;
  }
  if (in(b0, 0xF0, 0xF4)) {
    // F0: no overlong forms; F4: nothing above U+10FFFF.
    const uint8_t lo = b0 == 0xF0 ? 0x90 : 0x80;
    const uint8_t hi = b0 == 0xF4 ? 0x8F : 0xBF;
    return in(byte(i + 1), lo, hi) && in(byte(i + 2), 0x80, 0xBF) && in(byte(i + 3), 0x80, 0xBF)
               ? 4
               : 0;
  }
  return 0;  // 80..C1 (continuation or overlong lead), F5..FF
}

}  // namespace

absl::Status CheckUtf8Text(const std::string& path, absl::string_view text) {
  for (size_t i = 0; i < text.size();) {
    const size_t length = text[i] == '\0' ? 0 : Utf8SequenceLength(text, i);
    if (length > 0) {
      i += length;
      continue;
    }
    const int64_t line = 1 + std::count(text.begin(), text.begin() + i, '\n');
    if (text[i] == '\0') {
      return absl::DataLossError(absl::StrCat(path, ": contains NUL bytes (the first at byte ", i,
                                              ", line ", line, "); expected UTF-8 text"));
    }
    return absl::DataLossError(
        absl::StrFormat("%s: byte %d (0x%02x, line %d) is not valid UTF-8; expected UTF-8 "
                        "text",
                        path, i, static_cast<uint8_t>(text[i]), line));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> ReadUtf8TextFile(const std::string& path) {
  absl::StatusOr<std::string> text = ReadFileToString(path);
  if (!text.ok()) return text.status();
  if (absl::Status s = CheckUtf8Text(path, *text); !s.ok()) return s;
  return text;
}

}  // namespace moelab
