#include "core/data/image_check.h"

#include <cerrno>
#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <string>

// jpeglib.h needs size_t and FILE declared first.
#include <jpeglib.h>

#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"

namespace moelab {
namespace {

absl::StatusOr<std::string> ReadBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::NotFoundError(absl::StrCat(path, ": cannot open: ", std::strerror(errno)));
  }
  std::string bytes(std::istreambuf_iterator<char>(in), {});
  if (in.bad()) {
    return absl::DataLossError(absl::StrCat(path, ": read error"));
  }
  return bytes;
}

bool IsJpeg(const std::string& bytes) {
  return bytes.size() >= 3 && static_cast<unsigned char>(bytes[0]) == 0xFF &&
         static_cast<unsigned char>(bytes[1]) == 0xD8 &&
         static_cast<unsigned char>(bytes[2]) == 0xFF;
}

// libjpeg's error manager, extended with the first message and where to
// jump on a fatal error. libjpeg is C: errors leave through longjmp, and no
// object with a destructor lives between setjmp and the jump.
struct JpegErrors {
  jpeg_error_mgr manager;
  std::jmp_buf fatal;
  char first_warning[JMSG_LENGTH_MAX];
  char fatal_message[JMSG_LENGTH_MAX];
};

void OnJpegFatal(j_common_ptr info) {
  auto* errors = reinterpret_cast<JpegErrors*>(info->err);
  info->err->format_message(info, errors->fatal_message);
  std::longjmp(errors->fatal, 1);
}

// Warnings (level -1) are counted and the first one kept; trace messages
// (level >= 0) are ignored. Nothing is printed.
void OnJpegMessage(j_common_ptr info, int level) {
  if (level >= 0) return;
  auto* errors = reinterpret_cast<JpegErrors*>(info->err);
  if (info->err->num_warnings++ == 0) {
    info->err->format_message(info, errors->first_warning);
  }
}

// Empty when `bytes` decode without a warning, else libjpeg's message with
// "error" or "warning" in front.
std::string JpegProblem(const std::string& bytes) {
  jpeg_decompress_struct info;
  JpegErrors errors;
  info.err = jpeg_std_error(&errors.manager);
  errors.manager.error_exit = OnJpegFatal;
  errors.manager.emit_message = OnJpegMessage;
  errors.first_warning[0] = '\0';
  errors.fatal_message[0] = '\0';
  jpeg_create_decompress(&info);
  if (setjmp(errors.fatal)) {
    jpeg_destroy_decompress(&info);
    return absl::StrCat("cannot decode JPEG: ", errors.fatal_message);
  }
  jpeg_mem_src(&info, reinterpret_cast<const unsigned char*>(bytes.data()),
               static_cast<unsigned long>(bytes.size()));
  jpeg_read_header(&info, TRUE);
  info.scale_num = 1;
  info.scale_denom = 8;
  info.dct_method = JDCT_IFAST;
  info.do_fancy_upsampling = FALSE;
  // Only the luma plane is produced (libjpeg then skips the chroma IDCTs);
  // every component's data is still entropy-decoded and checked.
  if (info.jpeg_color_space == JCS_YCbCr) info.out_color_space = JCS_GRAYSCALE;
  jpeg_start_decompress(&info);
  const int row_bytes = info.output_width * info.output_components;
  JSAMPARRAY row =
      (*info.mem->alloc_sarray)(reinterpret_cast<j_common_ptr>(&info), JPOOL_IMAGE, row_bytes, 1);
  while (info.output_scanline < info.output_height) {
    jpeg_read_scanlines(&info, row, 1);
  }
  jpeg_finish_decompress(&info);
  const bool warned = errors.manager.num_warnings > 0;
  jpeg_destroy_decompress(&info);
  if (warned) {
    return absl::StrCat("damaged JPEG data: ", errors.first_warning);
  }
  return "";
}

}  // namespace

absl::Status CheckImageDecodes(const std::string& path) {
  absl::StatusOr<std::string> bytes = ReadBytes(path);
  if (!bytes.ok()) return bytes.status();
  if (IsJpeg(*bytes)) {
    const std::string problem = JpegProblem(*bytes);
    if (problem.empty()) return absl::OkStatus();
    return absl::DataLossError(
        absl::StrCat(path, ": ", problem, " (expected an image that decodes intact)"));
  }
  cv::Mat image;
  try {
    image = cv::imread(path, cv::IMREAD_COLOR);
  } catch (const cv::Exception& e) {
    return absl::DataLossError(absl::StrCat(path, ": cannot decode image: ", e.err));
  }
  if (image.empty()) {
    return absl::DataLossError(
        absl::StrCat(path, ": cannot decode image (corrupt or truncated pixel data)"));
  }
  return absl::OkStatus();
}

}  // namespace moelab
