#ifndef MOELAB_CORE_DATA_IDX_FILE_H_
#define MOELAB_CORE_DATA_IDX_FILE_H_

// Reading IDX files of unsigned bytes (the MNIST / Fashion-MNIST format):
// a big-endian magic 0x000008NN (type 0x08 = unsigned byte, NN dimensions),
// NN big-endian uint32 sizes, then the data in row-major order. Files may be
// gzip-compressed (read with zlib) or plain.

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace moelab {

struct IdxArray {
  std::vector<int64_t> dims;
  std::vector<uint8_t> data;  // product(dims) bytes
};

// Reads `path`, which must hold an unsigned-byte IDX array of
// `expected_rank` dimensions and nothing after it. Errors name the file:
// missing or unreadable file, corrupt or truncated gzip stream, bad magic,
// truncated header or data, trailing bytes.
absl::StatusOr<IdxArray> ReadIdxFile(const std::string& path, int expected_rank);

}  // namespace moelab

#endif  // MOELAB_CORE_DATA_IDX_FILE_H_
