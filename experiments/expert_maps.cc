#include "experiments/expert_maps.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/randperm.h>
#include <ATen/ops/sort.h>
#include <c10/util/Exception.h>
#include <torch/csrc/autograd/grad_mode.h>
#include <torch/utils.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <limits>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "core/atomic_file.h"
#include "core/checkpoint.h"
#include "core/tasks/image_classification_name.h"

namespace moelab {
namespace {

constexpr int kFont = cv::FONT_HERSHEY_SIMPLEX;
const cv::Scalar kBackground(255, 255, 255);
const cv::Scalar kText(0, 0, 0);

// Keeps the image choice apart from the trainer's probe set for equal seeds.
constexpr uint64_t kImageSalt = 0x6578706572746d61ull;  // "expertma"

// tab10 and tab20's lighter half, grey and light grey left out, as BGR.
// clang-format off
const cv::Vec3b kPalette[] = {
  {180, 119, 31},  {14, 127, 255},  {44, 160, 44},   {40, 39, 214},
  {189, 103, 148}, {75, 86, 140},   {194, 119, 227}, {34, 189, 188},
  {207, 190, 23},  {232, 199, 174}, {120, 187, 255}, {138, 223, 152},
  {150, 152, 255}, {213, 176, 197}, {148, 156, 196}, {210, 182, 247},
  {141, 219, 219}, {229, 218, 158},
};
// clang-format on
constexpr int kPaletteSize = sizeof(kPalette) / sizeof(kPalette[0]);

// Legend geometry.
constexpr int kSwatch = 18;
constexpr int kLegendLine = 26;
constexpr int kLegendItemGap = 14;
constexpr double kLegendFontScale = 0.42;
constexpr double kLegendAlpha = 0.55;
constexpr char kManyExpertsText[] = "n = number of experts of the patch, when > 1";
constexpr char kNoExpertText[] = "no expert";

// Expert e's entry and the two special entries, laid out left to right and
// wrapped at `max_width`.
struct LegendItem {
  std::string text;
  int kind;  // >= 0: expert; -1: no expert; -2: several experts
};

std::vector<LegendItem> LegendItems(int num_experts) {
  std::vector<LegendItem> items;
  for (int e = 0; e < num_experts; ++e) items.push_back({absl::StrCat(e), e});
  items.push_back({kNoExpertText, -1});
  items.push_back({kManyExpertsText, -2});
  return items;
}

int LegendItemWidth(const LegendItem& item) {
  int baseline = 0;
  const cv::Size text = cv::getTextSize(item.text, kFont, kLegendFontScale, 1, &baseline);
  return kSwatch + 4 + text.width;
}

// Lines the legend takes at `max_width` (after its "experts:" heading line).
int LegendLines(int num_experts, int max_width) {
  int lines = 1, x = 0;
  for (const LegendItem& item : LegendItems(num_experts)) {
    const int w = LegendItemWidth(item);
    if (x > 0 && x + w > max_width) {
      ++lines;
      x = 0;
    }
    x += w + kLegendItemGap;
  }
  return lines;
}

// The largest font scale <= `scale` at which `text` fits `max_width`.
double FitFontScale(const std::string& text, double scale, int max_width) {
  int baseline = 0;
  while (scale > 0.25 && cv::getTextSize(text, kFont, scale, 1, &baseline).width > max_width) {
    scale *= 0.9;
  }
  return scale;
}

void PutCentred(cv::Mat& canvas, const std::string& text, int centre_x, int baseline_y,
                double scale, int max_width) {
  scale = FitFontScale(text, scale, max_width);
  int baseline = 0;
  const cv::Size size = cv::getTextSize(text, kFont, scale, 1, &baseline);
  cv::putText(canvas, text, cv::Point(centre_x - size.width / 2, baseline_y), kFont, scale, kText,
              1, cv::LINE_AA);
}

cv::Vec3b Blend(const cv::Vec3b& colour, const cv::Vec3b& pixel, double alpha) {
  cv::Vec3b out;
  for (int c = 0; c < 3; ++c) {
    out[c] = cv::saturate_cast<uchar>(alpha * colour[c] + (1 - alpha) * pixel[c]);
  }
  return out;
}

// Tints `patch` (a view into the canvas, holding the upscaled image) with the
// encoding in expert_maps.h.
void TintPatch(cv::Mat patch, int expert, int count, double alpha) {
  for (int dy = 0; dy < patch.rows; ++dy) {
    cv::Vec3b* row = patch.ptr<cv::Vec3b>(dy);
    for (int dx = 0; dx < patch.cols; ++dx) {
      if (expert >= 0) {
        row[dx] = Blend(ExpertColor(expert), row[dx], alpha);
      } else if ((dx + dy) % kHatchPeriod == 0) {
        row[dx] = kHatchColor;
      } else {
        row[dx] = Blend(kNoExpertColor, row[dx], alpha);
      }
    }
  }
  if (count <= 1) return;
  // The count box must stay inside the top-left quarter so that the patch's
  // centre pixel always shows the plain encoding.
  const std::string text = absl::StrCat(count);
  const int limit = std::min(patch.cols, patch.rows) / 2 - 1;
  double scale = 0.4;
  int baseline = 0;
  cv::Size size = cv::getTextSize(text, kFont, scale, 1, &baseline);
  while (scale > 0.2 && (size.width + 3 > limit || size.height + 4 > limit)) {
    scale *= 0.9;
    size = cv::getTextSize(text, kFont, scale, 1, &baseline);
  }
  const int box_w = std::min(limit, size.width + 3), box_h = std::min(limit, size.height + 4);
  if (box_w < 3 || box_h < 3) return;
  cv::rectangle(patch, cv::Rect(0, 0, box_w, box_h), cv::Scalar(0, 0, 0), cv::FILLED);
  cv::Mat box = patch(cv::Rect(0, 0, box_w, box_h));
  cv::putText(box, text, cv::Point(2, box_h - 2), kFont, scale, cv::Scalar(255, 255, 255), 1,
              cv::LINE_AA);
}

void DrawLegend(cv::Mat& canvas, const ExpertMapLayout& layout, int num_experts) {
  const int left = ExpertMapLayout::kMargin;
  const int max_width = layout.width - 2 * ExpertMapLayout::kMargin;
  int y = layout.legend_top;
  cv::putText(canvas, "Colour = the patch's selected expert with the largest combine weight:",
              cv::Point(left, y + kSwatch - 4), kFont,
              FitFontScale("Colour = the patch's selected expert with the largest combine weight:",
                           kLegendFontScale, max_width),
              kText, 1, cv::LINE_AA);
  y += kLegendLine;
  int x = 0;
  for (const LegendItem& item : LegendItems(num_experts)) {
    const int w = LegendItemWidth(item);
    if (x > 0 && x + w > max_width) {
      x = 0;
      y += kLegendLine;
    }
    const cv::Rect swatch(left + x, y, kSwatch, kSwatch);
    if (item.kind >= 0) {
      canvas(swatch).setTo(cv::Scalar(ExpertColor(item.kind)));
    } else {
      // The special entries as a patch of a mid-grey image looks.
      canvas(swatch).setTo(cv::Scalar(128, 128, 128));
      if (item.kind == -1) {
        TintPatch(canvas(swatch), /*expert=*/-1, /*count=*/0, kLegendAlpha);
      } else {
        cv::rectangle(canvas, cv::Rect(swatch.x, swatch.y, 12, 14), cv::Scalar(0, 0, 0),
                      cv::FILLED);
        cv::putText(canvas, "n", cv::Point(swatch.x + 2, swatch.y + 11), kFont, 0.38,
                    cv::Scalar(255, 255, 255), 1, cv::LINE_AA);
      }
    }
    cv::rectangle(canvas, swatch, cv::Scalar(0, 0, 0), 1);
    cv::putText(canvas, item.text, cv::Point(swatch.x + kSwatch + 4, y + kSwatch - 4), kFont,
                kLegendFontScale, kText, 1, cv::LINE_AA);
    x += w + kLegendItemGap;
  }
}

int CeilDiv(int a, int b) { return (a + b - 1) / b; }

}  // namespace

cv::Vec3b ExpertColor(int expert) {
  if (expert < 0) return kNoExpertColor;
  if (expert < kPaletteSize) return kPalette[expert];
  // Golden-ratio hue steps keep neighbouring indices far apart on the wheel.
  const double hue = std::fmod((expert - kPaletteSize) * 0.618033988749895, 1.0) * 180;
  cv::Mat hsv(1, 1, CV_8UC3, cv::Scalar(hue, 200, 220)), bgr;
  cv::cvtColor(hsv, bgr, cv::COLOR_HSV2BGR);
  return bgr.at<cv::Vec3b>(0, 0);
}

absl::StatusOr<PatchExperts> PatchExpertsFromDecision(const RoutingDecision& decision,
                                                      int64_t num_patches) {
  if (!decision.selected.defined() || decision.selected.dim() != 3) {
    return absl::InvalidArgumentError("the routing decision has no [N, T, E] selection");
  }
  const int64_t tokens = decision.selected.size(1);
  const int64_t skip = tokens - num_patches;
  if (skip != 0 && skip != 1) {
    return absl::InvalidArgumentError(absl::StrCat("the MoE layer routed ", tokens,
                                                   " tokens per image; expected the ", num_patches,
                                                   " patches, plus at most a class token"));
  }
  // The class token is the first token (models/vit.h) and covers no patch.
  const at::Tensor selected = decision.selected.slice(1, skip).to(at::kBool);  // [N, P, E]
  const at::Tensor weights = decision.combine_weights.slice(1, skip).detach().to(at::kFloat);
  PatchExperts out;
  out.num_experts = selected.sum(-1).to(at::kLong);  // [N, P]
  out.top_expert =
      weights.masked_fill(selected.logical_not(), -std::numeric_limits<float>::infinity())
          .argmax(-1)
          .masked_fill(out.num_experts.eq(0), -1);  // [N, P]
  return out;
}

absl::StatusOr<PatchExperts> RoutePatches(Model& model, const at::Tensor& images,
                                          int64_t num_patches, int layer) {
  torch::NoGradGuard no_grad;
  model.eval();
  Batch batch;
  batch.inputs = images;
  ModelOutput out;
  try {
    out = model.Forward(batch, ForwardOptions{.keep_routing = true});
  } catch (const c10::Error& e) {
    return absl::InvalidArgumentError(
        absl::StrCat("forward pass failed: ", e.what_without_backtrace()));
  }
  const int layers = static_cast<int>(out.routing.size());
  if (layers == 0) return absl::InvalidArgumentError("the model has no MoE layer");
  if (layer < -1 || layer >= layers) {
    return absl::InvalidArgumentError(absl::StrCat("layer: ", layer,
                                                   " is not an MoE layer of the model (it has ",
                                                   layers, ", counted from 0; -1 is the last)"));
  }
  const int used = layer == -1 ? layers - 1 : layer;
  absl::StatusOr<PatchExperts> patches = PatchExpertsFromDecision(out.routing[used], num_patches);
  if (!patches.ok()) return patches.status();
  patches->layer = used;
  patches->num_moe_layers = layers;
  return patches;
}

cv::Rect ExpertMapLayout::Cell(int image, int column) const {
  return cv::Rect(kMargin + kRowLabelWidth + column * (cell_width + kGap),
                  grid_top + image * (cell_height + kGap), cell_width, cell_height);
}

cv::Rect ExpertMapLayout::Patch(int image, int column, int patch) const {
  const cv::Rect cell = Cell(image, column);
  const int side = patch_size * scale;
  return cv::Rect(cell.x + (patch % grid_columns) * side, cell.y + (patch / grid_columns) * side,
                  side, side);
}

ExpertMapLayout ComputeExpertMapLayout(int num_images, int num_routers, int height, int width,
                                       int patch_size, int num_experts) {
  ExpertMapLayout l;
  l.patch_size = patch_size;
  l.grid_rows = height / patch_size;
  l.grid_columns = width / patch_size;
  l.scale = std::max({1, CeilDiv(ExpertMapLayout::kMinPatchPixels, patch_size),
                      CeilDiv(ExpertMapLayout::kMinCellPixels, std::max(height, width))});
  l.cell_width = width * l.scale;
  l.cell_height = height * l.scale;
  l.num_images = num_images;
  l.num_columns = num_routers + 1;
  l.width = 2 * ExpertMapLayout::kMargin + ExpertMapLayout::kRowLabelWidth +
            l.num_columns * (l.cell_width + ExpertMapLayout::kGap) - ExpertMapLayout::kGap;
  l.grid_top = ExpertMapLayout::kMargin + ExpertMapLayout::kTitleHeight +
               ExpertMapLayout::kColumnTitleHeight;
  l.legend_top = l.grid_top + num_images * (l.cell_height + ExpertMapLayout::kGap) + 4;
  l.height = l.legend_top +
             (1 + LegendLines(num_experts, l.width - 2 * ExpertMapLayout::kMargin)) * kLegendLine +
             ExpertMapLayout::kMargin;
  return l;
}

std::vector<cv::Mat> DisplayImages(const at::Tensor& images, const DatasetInfo& info) {
  const at::Tensor x = images.detach().to(at::kFloat).contiguous();  // [N, C, H, W]
  const int64_t n = x.size(0), channels = x.size(1), h = x.size(2), w = x.size(3);
  const float* data = x.data_ptr<float>();
  std::vector<cv::Mat> out;
  for (int64_t i = 0; i < n; ++i) {
    cv::Mat bgr(static_cast<int>(h), static_cast<int>(w), CV_8UC3);
    for (int64_t y = 0; y < h; ++y) {
      for (int64_t xx = 0; xx < w; ++xx) {
        cv::Vec3b& pixel = bgr.at<cv::Vec3b>(static_cast<int>(y), static_cast<int>(xx));
        for (int c = 0; c < 3; ++c) {
          // Datasets hand out RGB; OpenCV draws BGR.
          const int64_t source = channels == 3 ? 2 - c : std::min<int64_t>(c, channels - 1);
          const float v = data[((i * channels + source) * h + y) * w + xx];
          const double mean =
              source < int64_t(info.pixel_mean.size()) ? info.pixel_mean[source] : 0;
          const double sd = source < int64_t(info.pixel_std.size()) ? info.pixel_std[source] : 1;
          pixel[c] = cv::saturate_cast<uchar>((v * sd + mean) * 255.0);
        }
      }
    }
    out.push_back(std::move(bgr));
  }
  return out;
}

absl::StatusOr<cv::Mat> DrawExpertMaps(const std::vector<cv::Mat>& images,
                                       const std::vector<std::string>& row_labels,
                                       const std::vector<std::string>& labels,
                                       const std::vector<PatchExperts>& routing, int patch_size,
                                       int num_experts, const std::string& title, double alpha) {
  if (images.empty()) return absl::InvalidArgumentError("no images to draw");
  if (labels.size() != routing.size() || row_labels.size() != images.size()) {
    return absl::InvalidArgumentError("one label per column and per image is needed");
  }
  const int height = images[0].rows, width = images[0].cols;
  if (patch_size < 1 || height % patch_size != 0 || width % patch_size != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "patch size ", patch_size, " does not divide the ", height, "x", width, " images"));
  }
  const ExpertMapLayout layout =
      ComputeExpertMapLayout(static_cast<int>(images.size()), static_cast<int>(routing.size()),
                             height, width, patch_size, num_experts);
  const int64_t num_patches = int64_t{layout.grid_rows} * layout.grid_columns;
  for (size_t c = 0; c < routing.size(); ++c) {
    const at::Tensor& top = routing[c].top_expert;
    if (!top.defined() || top.dim() != 2 || top.size(0) != int64_t(images.size()) ||
        top.size(1) != num_patches) {
      return absl::InvalidArgumentError(absl::StrCat("column '", labels[c], "': routing is not [",
                                                     images.size(), ", ", num_patches, "]"));
    }
  }
  cv::Mat canvas(layout.height, layout.width, CV_8UC3, kBackground);
  PutCentred(canvas, title, layout.width / 2, ExpertMapLayout::kMargin + 18, 0.55,
             layout.width - 2 * ExpertMapLayout::kMargin);
  const int title_y = layout.grid_top - 8;
  for (int c = 0; c < layout.num_columns; ++c) {
    const cv::Rect cell = layout.Cell(0, c);
    PutCentred(canvas, c == 0 ? "test image" : labels[c - 1], cell.x + cell.width / 2, title_y,
               0.48, cell.width);
  }
  for (int i = 0; i < layout.num_images; ++i) {
    if (images[i].rows != height || images[i].cols != width || images[i].type() != CV_8UC3) {
      return absl::InvalidArgumentError("images must all be 8-bit BGR of one size");
    }
    int line = 0;
    for (absl::string_view text : absl::StrSplit(row_labels[i], '\n')) {
      const cv::Rect cell = layout.Cell(i, 0);
      const std::string s(text);
      cv::putText(canvas, s, cv::Point(ExpertMapLayout::kMargin, cell.y + 16 + 18 * line++), kFont,
                  FitFontScale(s, 0.45, ExpertMapLayout::kRowLabelWidth - 4), kText, 1,
                  cv::LINE_AA);
    }
    cv::Mat upscaled;
    cv::resize(images[i], upscaled, cv::Size(layout.cell_width, layout.cell_height), 0, 0,
               cv::INTER_NEAREST);
    for (int c = 0; c < layout.num_columns; ++c) {
      upscaled.copyTo(canvas(layout.Cell(i, c)));
      if (c == 0) continue;
      const PatchExperts& r = routing[c - 1];
      const at::Tensor top = r.top_expert.to(at::kLong).contiguous();
      const at::Tensor count = r.num_experts.to(at::kLong).contiguous();
      const auto top_a = top.accessor<int64_t, 2>();
      const auto count_a = count.accessor<int64_t, 2>();
      for (int64_t p = 0; p < num_patches; ++p) {
        TintPatch(canvas(layout.Patch(i, c, static_cast<int>(p))), static_cast<int>(top_a[i][p]),
                  static_cast<int>(count_a[i][p]), alpha);
      }
    }
  }
  DrawLegend(canvas, layout, num_experts);
  return canvas;
}

std::vector<int64_t> ExpertMapImageIndices(int64_t num_examples, int count, uint64_t seed) {
  at::Generator gen = at::detail::createCPUGenerator(seed ^ kImageSalt);
  const int64_t n = std::min<int64_t>(count, num_examples);
  if (n <= 0) return {};
  const at::Tensor chosen =
      std::get<0>(at::randperm(num_examples, gen, at::kLong).slice(0, 0, n).sort());
  return std::vector<int64_t>(chosen.data_ptr<int64_t>(), chosen.data_ptr<int64_t>() + n);
}

absl::StatusOr<ExpertMapFigure> RenderExpertMaps(const std::vector<ExpertMapRow>& rows,
                                                 const Dataset& data,
                                                 const ExpertMapOptions& options) {
  if (rows.empty()) return absl::InvalidArgumentError("expert maps: no rows to draw");
  const DatasetInfo& info = data.info();
  if (info.task != kImageClassificationTask) {
    return absl::InvalidArgumentError("expert maps need an image dataset");
  }
  ExpertMapFigure figure;
  const Split split = data.NumExamples(Split::kTest) > 0 ? Split::kTest : Split::kValid;
  figure.split = SplitName(split);
  figure.test_indices =
      ExpertMapImageIndices(data.NumExamples(split), std::max(1, options.num_images), options.seed);
  if (figure.test_indices.empty()) {
    return absl::InvalidArgumentError("expert maps: the dataset has no test or valid images");
  }
  const Batch batch = data.GetExamples(split, figure.test_indices);
  int patch_size = 0, num_experts = 0;
  std::vector<std::string> labels;
  for (const ExpertMapRow& row : rows) {
    auto row_error = [&](const absl::Status& s) {
      return absl::Status(s.code(), absl::StrCat("expert maps, row '", row.label, "' (run '",
                                                 row.spec.name(), "'): ", s.message()));
    };
    if (!row.spec.model().has_vit()) {
      return row_error(absl::InvalidArgumentError(
          absl::StrCat("model '", row.spec.model().name(),
                       "' is not a patch-based vision model (no model.vit options)")));
    }
    const int p = row.spec.model().vit().patch_size();
    const int e = row.spec.model().moe().num_experts();
    if (patch_size != 0 && (p != patch_size || e != num_experts)) {
      return row_error(absl::InvalidArgumentError(absl::StrCat(
          "patch size ", p, " and ", e, " experts differ from the first row's (", patch_size, ", ",
          num_experts, "); one figure needs one patch grid and one palette")));
    }
    patch_size = p;
    num_experts = e;
    std::error_code error;
    if (!std::filesystem::exists(row.checkpoint, error)) {
      return row_error(absl::NotFoundError(
          absl::StrCat("no checkpoint '", row.checkpoint, "'; ",
                       row.partial_weights ? "the run whose checkpoint it evaluates" : "the run",
                       " must be trained first (reproduce without --render_only trains it)")));
    }
    // The seed decides the values of parameters the checkpoint lacks
    // (partial_weights); the trainer seeds model creation the same way.
    torch::manual_seed(row.spec.seed());
    absl::StatusOr<std::shared_ptr<Model>> model = CreateModel(row.spec, info);
    if (!model.ok()) return row_error(model.status());
    std::vector<std::string> not_loaded;
    if (absl::Status s =
            LoadWeights(row.checkpoint, **model, row.partial_weights ? &not_loaded : nullptr);
        !s.ok()) {
      return row_error(s);
    }
    const int64_t num_patches =
        int64_t{info.height / patch_size} * int64_t{info.width / patch_size};
    absl::StatusOr<PatchExperts> routing =
        RoutePatches(**model, batch.inputs, num_patches, options.layer);
    if (!routing.ok()) return row_error(routing.status());
    figure.routing.push_back(*std::move(routing));
    labels.push_back(row.label);
  }
  std::vector<std::string> row_labels;
  const at::Tensor targets = batch.targets.defined() ? batch.targets.to(at::kLong) : at::Tensor();
  for (size_t i = 0; i < figure.test_indices.size(); ++i) {
    std::string label = absl::StrCat("#", figure.test_indices[i]);
    if (targets.defined()) {
      absl::StrAppend(&label, "\nclass ", targets[static_cast<int64_t>(i)].item<int64_t>());
    }
    row_labels.push_back(std::move(label));
  }
  const PatchExperts& first = figure.routing.front();
  const std::string title =
      !options.title.empty()
          ? options.title
          : absl::StrFormat("Expert of each patch in MoE layer %d (of 0..%d), %s images",
                            first.layer, first.num_moe_layers - 1, figure.split);
  absl::StatusOr<cv::Mat> picture =
      DrawExpertMaps(DisplayImages(batch.inputs, info), row_labels, labels, figure.routing,
                     patch_size, num_experts, title, options.alpha);
  if (!picture.ok()) return picture.status();
  figure.picture = *std::move(picture);
  return figure;
}

absl::StatusOr<ExpertMapFigure> WriteExpertMaps(const std::vector<ExpertMapRow>& rows,
                                                const ExpertMapOptions& options,
                                                const std::string& png_path) {
  if (rows.empty()) return absl::InvalidArgumentError("expert maps: no rows to draw");
  absl::StatusOr<std::unique_ptr<Dataset>> data = LoadDataset(rows.front().spec.dataset());
  if (!data.ok()) return data.status();
  absl::StatusOr<ExpertMapFigure> figure = RenderExpertMaps(rows, **data, options);
  if (!figure.ok()) return figure.status();
  std::vector<uchar> png;
  if (!cv::imencode(".png", figure->picture, png)) {
    return absl::InternalError(absl::StrCat("cannot encode ", png_path, " as PNG"));
  }
  if (absl::Status s = WriteFileAtomically(
          png_path, absl::string_view(reinterpret_cast<const char*>(png.data()), png.size()));
      !s.ok()) {
    return s;
  }
  return figure;
}

absl::Status ValidateExpertMaps(const TableSpec& table) {
  if (!table.has_expert_maps()) return absl::OkStatus();
  const ExpertMaps& maps = table.expert_maps();
  if (maps.rows_size() == 0) {
    return absl::InvalidArgumentError("expert_maps.rows: name at least one row");
  }
  std::set<std::string> labels;
  for (const TableRow& row : table.rows()) labels.insert(row.label());
  for (const std::string& label : maps.rows()) {
    if (!labels.count(label)) {
      return absl::InvalidArgumentError(
          absl::StrCat("expert_maps.rows: '", label, "' is not a row of the table"));
    }
  }
  if (maps.num_images() < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("expert_maps.num_images: must be >= 0, got ", maps.num_images()));
  }
  if (maps.has_layer() && maps.layer() < -1) {
    return absl::InvalidArgumentError(
        absl::StrCat("expert_maps.layer: must be >= -1, got ", maps.layer()));
  }
  return absl::OkStatus();
}

ExpertMapOptions ExpertMapOptionsFrom(const ExpertMaps& spec, const std::string& title) {
  ExpertMapOptions options;
  if (spec.num_images() > 0) options.num_images = spec.num_images();
  options.layer = spec.has_layer() ? spec.layer() : -1;
  options.seed = spec.seed();
  options.title = title;
  return options;
}

}  // namespace moelab
