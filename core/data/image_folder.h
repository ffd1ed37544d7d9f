#ifndef MOELAB_CORE_DATA_IMAGE_FOLDER_H_
#define MOELAB_CORE_DATA_IMAGE_FOLDER_H_

// `image_folder`: ImageNet-style images in data_dir/train/<class>/...,
// data_dir/val/<class>/... and optionally data_dir/test/<class>/...,
// decoded with OpenCV.
//
//  * Classes: the subdirectories of train/, sorted by name, are ids 0..C-1
//    (each must hold an image); val/ and test/ may hold a subset of them.
//  * Images: files ending in .jpg .jpeg .png .bmp .ppm .pgm .pbm .tif .tiff
//    .webp (any case) anywhere below a class directory, sorted by path;
//    other files and hidden ones are skipped.
//  * Loading lists the files, checks each one's header with OpenCV
//    (cv::haveImageReader) and then decodes every file once
//    (core/data/image_check.h: JPEGs with libjpeg at 1/8 scale, where a
//    truncated or corrupt data segment is an error, other formats with
//    OpenCV), so an unreadable, non-image or damaged file is a DataLoss error
//    naming it before training starts. Batches cannot return a Status
//    (core/dataset.h), hence the check at load; it costs about one reduced
//    decode per image, spread over ATen's threads. Pixels are decoded again
//    on demand in GetBatch/GetExamples; only a file changed after loading
//    can still fail there (a c10::Error naming it).
//  * Preprocessing: decode to RGB (grey images are replicated), resize so
//    the shorter side is image_size (area interpolation when shrinking,
//    bilinear when enlarging), crop the central image_size x image_size
//    window, scale to x = p / 255 and normalise per channel with the
//    ImageNet mean (0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225)
//    (DatasetInfo.pixel_mean/pixel_std, in the [0, 1] scale).
//  * Augmentation (augment: true; training batches only): an
//    Inception-style random resized crop (8%..100% of the area, aspect ratio
//    3/4..4/3, up to 10 tries, else the centre crop) resized to
//    image_size x image_size, then a left-right mirror with probability 1/2,
//    drawn from (seed, epoch, example index).
//  * Splits: train = train/, valid = val/, test = test/ (0 examples when
//    there is no test/). Batches: inputs [B, 3, S, S] float, targets [B].

#include <memory>

#include "absl/status/statusor.h"
#include "core/dataset.h"
#include "proto/experiment.pb.h"

namespace moelab {

absl::StatusOr<std::unique_ptr<Dataset>> LoadImageFolder(const ImageFolderOptions& options);

}  // namespace moelab

#endif  // MOELAB_CORE_DATA_IMAGE_FOLDER_H_
