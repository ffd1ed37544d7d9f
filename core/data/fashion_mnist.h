#ifndef MOELAB_CORE_DATA_FASHION_MNIST_H_
#define MOELAB_CORE_DATA_FASHION_MNIST_H_

// `fashion_mnist`: 28x28 grey images of 10 clothing classes, from the four
// IDX .gz files of Debian's dataset-fashion-mnist
// (/usr/share/datasets/fashion-mnist).
//
//  * Splits: train = the first 55,000 of train-images (or the first
//    max_train_examples of them), valid = the last 5,000 of train-images,
//    test = the 10,000 t10k images.
//  * Pixels p in 0..255 are scaled to x = p / 255 and normalised to
//    (x - mean) / std with the mean and std of x over all 55,000 training
//    images (max_train_examples does not change them, so quick and full runs
//    preprocess identically); DatasetInfo.pixel_mean/pixel_std hold them, in
//    the same [0, 1] scale.
//  * Augmentation (augment: true; training batches only): the image is
//    padded by 2 black pixels on each side, a 28x28 window at a random
//    offset in 0..4 x 0..4 is cropped, and it is mirrored left-right with
//    probability 1/2, drawn from (seed, epoch, example index).
//  * Batches: inputs [B, 1, 28, 28] float, targets [B] int64.

#include <cstdint>
#include <memory>

#include "absl/status/statusor.h"
#include "core/dataset.h"
#include "proto/experiment.pb.h"

namespace moelab {

inline constexpr int64_t kFashionMnistValidExamples = 5000;

// Loads from options.data_dir; `valid_examples` (the number of final
// training images held out for validation) is a parameter only so that
// tests can use small crafted files.
absl::StatusOr<std::unique_ptr<Dataset>> LoadFashionMnist(
    const FashionMnistOptions& options, int64_t valid_examples = kFashionMnistValidExamples);

}  // namespace moelab

#endif  // MOELAB_CORE_DATA_FASHION_MNIST_H_
