#ifndef MOELAB_CORE_DATA_IMAGE_CHECK_H_
#define MOELAB_CORE_DATA_IMAGE_CHECK_H_

// Decodes an image file once to prove that its pixel data is intact, so that
// a loader can refuse a damaged file up front instead of failing (or training
// on garbage) when a batch first decodes it.
//
//  * JPEG (files starting FF D8 FF, whatever their extension) is decoded with
//    libjpeg at 1/8 scale: the whole entropy-coded stream is still read, so
//    every error is found at a fraction of the cost of a full decode. What
//    libjpeg only warns about — a truncated file ("Premature end of JPEG
//    file"), a corrupt data segment — is an error here too: OpenCV would
//    decode such a file silently, filling the damage with grey or garbled
//    blocks.
//  * Every other format is decoded with cv::imread(IMREAD_COLOR), as the
//    loaders do; an empty result or an OpenCV exception is an error.
//
// Errors are DataLoss "<path>: ...", naming the decoder's own message.

#include <string>

#include "absl/status/status.h"

namespace moelab {

absl::Status CheckImageDecodes(const std::string& path);

}  // namespace moelab

#endif  // MOELAB_CORE_DATA_IMAGE_CHECK_H_
