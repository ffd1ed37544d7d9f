#include "core/data/idx_file.h"

#include <zlib.h>

#include <cerrno>
#include <cstring>
#include <memory>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"

namespace moelab {
namespace {

struct GzCloser {
  void operator()(gzFile file) const { gzclose(file); }
};

// The whole decompressed stream. zlib reads plain files transparently.
absl::StatusOr<std::string> ReadGzipFile(const std::string& path) {
  errno = 0;
  std::unique_ptr<gzFile_s, GzCloser> file(gzopen(path.c_str(), "rb"));
  if (file == nullptr) {
    return absl::NotFoundError(
        absl::StrCat(path, ": cannot open: ", errno != 0 ? std::strerror(errno) : "out of memory"));
  }
  gzbuffer(file.get(), 1 << 18);
  std::string contents;
  constexpr int kChunk = 1 << 20;
  while (true) {
    const size_t old_size = contents.size();
    contents.resize(old_size + kChunk);
    const int read = gzread(file.get(), contents.data() + old_size, kChunk);
    contents.resize(old_size + (read > 0 ? read : 0));
    if (read <= 0) break;
  }
  int error = Z_OK;
  const char* message = gzerror(file.get(), &error);
  if (error != Z_OK && error != Z_STREAM_END) {
    return absl::DataLossError(absl::StrCat(path, ": corrupt or truncated gzip stream (", message,
                                            ") after ", contents.size(), " decompressed bytes"));
  }
  return contents;
}

uint32_t BigEndian32(const std::string& bytes, size_t offset) {
  const auto* p = reinterpret_cast<const unsigned char*>(bytes.data() + offset);
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | uint32_t{p[3]};
}

}  // namespace

absl::StatusOr<IdxArray> ReadIdxFile(const std::string& path, int expected_rank) {
  absl::StatusOr<std::string> bytes = ReadGzipFile(path);
  if (!bytes.ok()) return bytes.status();
  if (bytes->size() < 4) {
    return absl::DataLossError(absl::StrCat(path, ": truncated IDX file: ", bytes->size(),
                                            " bytes, shorter than the 4-byte magic number"));
  }
  const uint32_t magic = BigEndian32(*bytes, 0);
  const uint32_t expected_magic = 0x800u | static_cast<uint32_t>(expected_rank);
  if (magic != expected_magic) {
    return absl::DataLossError(
        absl::StrFormat("%s: bad IDX magic 0x%08x, expected 0x%08x (unsigned bytes, %d "
                        "dimensions)",
                        path, magic, expected_magic, expected_rank));
  }
  const size_t header = 4 + 4 * static_cast<size_t>(expected_rank);
  if (bytes->size() < header) {
    return absl::DataLossError(
        absl::StrCat(path, ": truncated IDX header: ", bytes->size(), " bytes, expected ", header));
  }
  IdxArray array;
  uint64_t elements = 1;
  for (int d = 0; d < expected_rank; ++d) {
    array.dims.push_back(BigEndian32(*bytes, 4 + 4 * d));
    elements *= array.dims.back();
  }
  const uint64_t available = bytes->size() - header;
  if (available != elements) {
    return absl::DataLossError(
        absl::StrCat(path, ": ", available < elements ? "truncated" : "trailing bytes",
                     ": the header declares ", absl::StrJoin(array.dims, " x "), " = ", elements,
                     " bytes of data, the file holds ", available));
  }
  array.data.assign(bytes->begin() + header, bytes->end());
  return array;
}

}  // namespace moelab
