#ifndef MOELAB_EXPERIMENTS_EXPERT_MAPS_H_
#define MOELAB_EXPERIMENTS_EXPERT_MAPS_H_

// Per-patch expert maps of trained vision models, as in Figure 1 of the
// USMoE paper: a few test images, one column per router, each image patch
// tinted by the expert that routing gave it in one MoE layer.
//
// Picture (BGR, drawn with OpenCV):
//
//   title
//   [labels] test image   column title 1   column title 2   ...
//   #idx      original     patches tinted   patches tinted
//   class c   (upscaled)   by expert        by expert
//   ...                    (one row per test image)
//   legend: expert swatches 0..E-1, 'no expert', 'n experts'
//
// Encoding of a patch (the class token, if any, is not a patch and is left
// out):
//   - one or more experts: the image blended with the colour of the selected
//     expert with the largest combine weight (alpha = ExpertMapOptions::alpha
//     of the colour), so the content stays visible;
//   - more than one expert (expert choice and unified routing give a token
//     0..E experts): additionally the count, white on a black box, in the
//     patch's top-left corner;
//   - no expert: the image blended with kNoExpertColor and hatched with
//     kHatchColor on the pixels (dx + dy) % kHatchPeriod == 0, where (dx, dy)
//     is the pixel's offset inside the patch.
// Patches are shown nearest-neighbour upscaled (ExpertMapLayout::scale), so
// each keeps its pixels; the patch's centre pixel is never covered by the
// count box.

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <opencv2/core.hpp>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/dataset.h"
#include "core/model.h"
#include "core/router.h"
#include "proto/experiment.pb.h"
#include "proto/table.pb.h"

namespace moelab {

// BGR colours of the encoding (see the top of this file).
inline const cv::Vec3b kNoExpertColor(48, 48, 48);
inline const cv::Vec3b kHatchColor(170, 170, 170);
inline constexpr int kHatchPeriod = 6;

// The fixed palette: expert e's BGR colour. Experts 0..17 get tab10/tab20
// colours without their greys (which would read as 'no expert' on greyscale
// images); further experts get evenly spaced hues, less distinguishable.
cv::Vec3b ExpertColor(int expert);

// One column of the figure: a trained model, rebuilt from its spec.
struct ExpertMapRow {
  // Column title (the table row's label).
  std::string label;
  // The resolved spec the run trained (or evaluated) with; builds the model
  // and its router.
  ExperimentSpec spec;
  // The run's weights (<run dir>/checkpoint.pt).
  std::string checkpoint;
  // Training-free rows evaluate a checkpoint trained with another router:
  // parameters the checkpoint lacks (the new router's own) keep the initial
  // values seeded by spec.seed, as in the evaluated run.
  bool partial_weights = false;
};

struct ExpertMapOptions {
  // Test images, one row of the figure each.
  int num_images = 4;
  // MoE layer, counted among the MoE layers from 0; -1 is the last.
  int layer = -1;
  // Chooses the test images.
  uint64_t seed = 0;
  // Weight of the expert colour in the blend with the image.
  double alpha = 0.55;
  // Drawn above the grid; empty: a default naming the layer.
  std::string title;
};

// Which experts each patch of a batch of images got in one MoE layer.
struct PatchExperts {
  // [N, P] int64: the selected expert with the largest combine weight; -1
  // for patches with no expert. Patches in row-major order of the grid.
  at::Tensor top_expert;
  // [N, P] int64: number of experts selected for the patch (0..E).
  at::Tensor num_experts;
  // Set by RoutePatches: the MoE layer (0-based among the MoE layers) and
  // how many MoE layers the model has.
  int layer = -1;
  int num_moe_layers = 0;
};

// Patch experts from one MoE layer's decision over [N, T, E] tokens, of which
// the last `num_patches` are the patches in row-major order (a class token,
// if any, comes first: T = num_patches + 1). Errors when T is neither
// num_patches nor num_patches + 1.
absl::StatusOr<PatchExperts> PatchExpertsFromDecision(const RoutingDecision& decision,
                                                      int64_t num_patches);

// Runs `images` [N, C, H, W] (normalised, as the dataset returns them)
// through `model` in eval mode with routing kept and returns MoE layer
// `layer`'s patch experts (-1: the last MoE layer; else 0-based among the
// MoE layers). `num_patches` = patches per image.
absl::StatusOr<PatchExperts> RoutePatches(Model& model, const at::Tensor& images,
                                          int64_t num_patches, int layer);

// Where things are in the picture. Column 0 is the original image; column
// c >= 1 shows row c - 1 of the figure's ExpertMapRows.
struct ExpertMapLayout {
  static constexpr int kMargin = 12;
  static constexpr int kGap = 8;
  static constexpr int kRowLabelWidth = 84;
  static constexpr int kTitleHeight = 30;
  static constexpr int kColumnTitleHeight = 24;
  // A patch is shown at least this many pixels wide, so counts stay legible.
  static constexpr int kMinPatchPixels = 24;
  // Cells are upscaled towards at least this many pixels.
  static constexpr int kMinCellPixels = 224;

  // Nearest-neighbour upscale factor: the smallest integer that makes a patch
  // >= kMinPatchPixels and an image side >= kMinCellPixels.
  int scale = 1;
  int patch_size = 1;  // in image pixels
  int grid_rows = 1, grid_columns = 1;
  int cell_width = 0, cell_height = 0;  // image size x scale
  int num_images = 0, num_columns = 0;  // columns including the original
  int grid_top = 0;                     // y of the first cell
  int legend_top = 0;
  int width = 0, height = 0;  // of the whole picture

  // The cell of test image `image` in figure column `column`.
  cv::Rect Cell(int image, int column) const;
  // Patch `patch` (row-major in the grid) inside that cell.
  cv::Rect Patch(int image, int column, int patch) const;
};

// Layout for `num_images` images of `height` x `width` pixels in patches of
// `patch_size`, with `num_routers` router columns and `num_experts` experts
// in the legend. width = 2 kMargin + kRowLabelWidth + columns (cell + kGap) -
// kGap; the grid starts at kMargin + kTitleHeight + kColumnTitleHeight.
ExpertMapLayout ComputeExpertMapLayout(int num_images, int num_routers, int height, int width,
                                       int patch_size, int num_experts);

// The images as shown: [N, C, H, W] normalised inputs back to 8-bit BGR
// pixels with the dataset's pixel_mean/pixel_std (1 channel: grey; 3: the
// datasets' RGB order), not upscaled.
std::vector<cv::Mat> DisplayImages(const at::Tensor& images, const DatasetInfo& info);

// Draws the figure from routing computed elsewhere: `images` from
// DisplayImages, routing[c] the PatchExperts of column c (labels[c]).
// `row_labels` (one per image, up to two lines split at '\n') go left of
// each image.
absl::StatusOr<cv::Mat> DrawExpertMaps(const std::vector<cv::Mat>& images,
                                       const std::vector<std::string>& row_labels,
                                       const std::vector<std::string>& labels,
                                       const std::vector<PatchExperts>& routing, int patch_size,
                                       int num_experts, const std::string& title, double alpha);

// What RenderExpertMaps drew, for captions and tests.
struct ExpertMapFigure {
  cv::Mat picture;  // BGR
  // Test-split indices of the images, top to bottom.
  std::vector<int64_t> test_indices;
  // "test", or "valid" for datasets without a test split.
  std::string split;
  // Per column, the routing drawn (with the layer it came from).
  std::vector<PatchExperts> routing;
};

// The test images chosen by `seed`: `count` distinct indices of [0,
// num_examples), sorted.
std::vector<int64_t> ExpertMapImageIndices(int64_t num_examples, int count, uint64_t seed);

// Builds each row's model from its spec, loads its checkpoint, routes the
// same test images of `data` through all of them and draws the figure.
// Errors name the row (a missing checkpoint: the run that must be trained
// first). Every row must use a model with the same patch grid and experts.
absl::StatusOr<ExpertMapFigure> RenderExpertMaps(const std::vector<ExpertMapRow>& rows,
                                                 const Dataset& data,
                                                 const ExpertMapOptions& options);

// RenderExpertMaps on the first row's dataset, written as a PNG to
// `png_path` (atomically).
absl::StatusOr<ExpertMapFigure> WriteExpertMaps(const std::vector<ExpertMapRow>& rows,
                                                const ExpertMapOptions& options,
                                                const std::string& png_path);

// Checks a table's expert_maps against its rows: every label names a row,
// at least one row, num_images >= 0 and layer >= -1.
absl::Status ValidateExpertMaps(const TableSpec& table);

// The options a table's expert_maps asks for (defaults filled in).
ExpertMapOptions ExpertMapOptionsFrom(const ExpertMaps& spec, const std::string& title);

}  // namespace moelab

#endif  // MOELAB_EXPERIMENTS_EXPERT_MAPS_H_
