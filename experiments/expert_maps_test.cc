#include "experiments/expert_maps.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/optim/sgd.h>
#include <torch/utils.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <opencv2/imgcodecs.hpp>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/checkpoint.h"
#include "core/model.h"
#include "core/spec.h"
#include "core/tasks/image_classification_name.h"
#include "experiments/table_rows.h"

namespace moelab {
namespace {

using ::testing::HasSubstr;

constexpr int kSide = 28;
constexpr int kPatch = 4;
constexpr int kGrid = kSide / kPatch;    // 7 x 7 patches
constexpr int kPatches = kGrid * kGrid;  // 49, plus the class token
constexpr int kExperts = 4;
constexpr float kMean = 0.5f, kStd = 0.25f;

// Six synthetic 28 x 28 grey test images with pixels in [0, 1], normalised
// with kMean/kStd as a real dataset would.
class SyntheticImages : public Dataset {
 public:
  SyntheticImages() {
    info_.task = kImageClassificationTask;
    info_.num_classes = 10;
    info_.channels = 1;
    info_.height = kSide;
    info_.width = kSide;
    info_.pixel_mean = {kMean};
    info_.pixel_std = {kStd};
    at::Generator gen = at::detail::createCPUGenerator(7);
    // Smooth blobs rather than noise, so neighbouring patches look alike.
    at::Tensor coarse = at::rand({6, 1, 7, 7}, gen);
    pixels_ = at::upsample_bilinear2d(coarse, {kSide, kSide}, false);  // [6, 1, 28, 28]
  }
  const DatasetInfo& info() const override { return info_; }
  int64_t NumExamples(Split split) const override { return pixels_.size(0); }
  Batch GetBatch(Split split, int64_t batch_size, int64_t index, int64_t epoch,
                 uint64_t seed) const override {
    std::vector<int64_t> indices;
    for (int64_t i = 0; i < batch_size; ++i) indices.push_back((index * batch_size + i) % 6);
    return GetExamples(split, indices);
  }
  Batch GetExamples(Split split, const std::vector<int64_t>& indices) const override {
    at::Tensor idx = at::tensor(indices, at::kLong);
    Batch b;
    b.inputs = (pixels_.index_select(0, idx) - kMean) / kStd;
    b.targets = idx.remainder(10);
    return b;
  }

 private:
  DatasetInfo info_;
  at::Tensor pixels_;
};

// A tiny vmoe_vit: D 16, 4 blocks (MoE in blocks 1 and 3), 4 experts.
ExperimentSpec TinySpec(const std::string& name, const std::string& router, uint64_t seed) {
  ExperimentSpec spec;
  spec.set_name(name);
  spec.set_seed(seed);
  spec.mutable_dataset()->set_name("fashion_mnist");
  ModelSpec* model = spec.mutable_model();
  model->set_name("vmoe_vit");
  model->set_preset("cpu_tiny");
  model->mutable_vit()->set_patch_size(kPatch);
  model->mutable_vit()->set_num_layers(4);
  model->mutable_vit()->set_model_dim(16);
  model->mutable_vit()->set_num_heads(2);
  model->mutable_vit()->set_dense_hidden(16);
  model->mutable_moe()->set_num_experts(kExperts);
  model->mutable_moe()->set_expert_hidden(16);
  spec.mutable_router()->set_name(router);
  spec.mutable_router()->set_top_k(1);
  EXPECT_TRUE(ResolveSpec(&spec).ok());
  return spec;
}

// Writes a checkpoint of a freshly initialised model, as a trained run would.
std::string WriteCheckpoint(const ExperimentSpec& spec, const DatasetInfo& info,
                            const std::string& dir) {
  torch::manual_seed(spec.seed());
  std::shared_ptr<Model> model = *CreateModel(spec, info);
  torch::optim::SGD optimizer(model->parameters(), torch::optim::SGDOptions(0.1));
  TrainingState state;
  state.rng_state = at::detail::getDefaultCPUGenerator().get_state();
  const std::string path = absl::StrCat(dir, "/", spec.name(), "_checkpoint.pt");
  absl::Status s = SaveCheckpoint(path, *model, optimizer, state);
  EXPECT_TRUE(s.ok()) << s;
  return path;
}

struct Expected {
  int expert = -1;  // largest combine weight among the selected, -1 none
  int count = 0;
};

// The routing of MoE layer `layer` computed here from the model's own
// forward pass, token by token: [image][patch].
std::vector<std::vector<Expected>> ExpectedRouting(const ExperimentSpec& spec,
                                                   const std::string& checkpoint,
                                                   const Batch& batch, int layer) {
  torch::manual_seed(spec.seed() + 1000);  // weights come from the checkpoint
  std::shared_ptr<Model> model = *CreateModel(spec, SyntheticImages().info());
  EXPECT_TRUE(LoadWeights(checkpoint, *model, nullptr).ok());
  torch::NoGradGuard no_grad;
  model->eval();
  ModelOutput out = model->Forward(batch, ForwardOptions{.keep_routing = true});
  const RoutingDecision& d = out.routing.at(layer < 0 ? out.routing.size() - 1 : layer);
  EXPECT_EQ(d.selected.size(1), kPatches + 1);  // the class token comes first
  std::vector<std::vector<Expected>> result(d.selected.size(0), std::vector<Expected>(kPatches));
  for (int64_t i = 0; i < d.selected.size(0); ++i) {
    for (int p = 0; p < kPatches; ++p) {
      Expected& e = result[i][p];
      double best = -1;
      for (int x = 0; x < kExperts; ++x) {
        if (!d.selected[i][p + 1][x].item<bool>()) continue;
        ++e.count;
        const double w = d.combine_weights[i][p + 1][x].item<double>();
        if (w > best) {
          best = w;
          e.expert = x;
        }
      }
    }
  }
  return result;
}

uint8_t Grey(const Batch& batch, int image, int y, int x) {
  const double v = batch.inputs[image][0][y][x].item<double>() * kStd + kMean;
  return cv::saturate_cast<uchar>(v * 255.0);
}

cv::Vec3b Blended(const cv::Vec3b& colour, uint8_t grey, double alpha) {
  cv::Vec3b out;
  for (int c = 0; c < 3; ++c)
    out[c] = cv::saturate_cast<uchar>(alpha * colour[c] + (1 - alpha) * grey);
  return out;
}

void ExpectNear(const cv::Vec3b& got, const cv::Vec3b& want, const std::string& where) {
  for (int c = 0; c < 3; ++c) {
    EXPECT_NEAR(got[c], want[c], 2)
        << where << " channel " << c << ": got " << got << ", want " << want;
  }
}

class ExpertMapsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = absl::StrCat(::testing::TempDir(), "/expert_maps_test");
    std::filesystem::create_directories(dir_);
    ExperimentSpec tc = TinySpec("tiny_token_choice", "token_choice", 3);
    ExperimentSpec ec = TinySpec("tiny_expert_choice", "expert_choice", 4);
    rows_.push_back({"Token choice, k=1", tc, WriteCheckpoint(tc, data_.info(), dir_)});
    rows_.push_back({"Expert choice, k=1", ec, WriteCheckpoint(ec, data_.info(), dir_)});
  }

  std::string dir_;
  SyntheticImages data_;
  std::vector<ExpertMapRow> rows_;
};

TEST_F(ExpertMapsTest, EveryPatchShowsTheExpertItsRoutingGave) {
  ExpertMapOptions options;
  options.num_images = 3;
  options.seed = 11;
  absl::StatusOr<ExpertMapFigure> figure = RenderExpertMaps(rows_, data_, options);
  ASSERT_TRUE(figure.ok()) << figure.status();
  const cv::Mat& picture = figure->picture;
  if (const char* out = std::getenv("TEST_UNDECLARED_OUTPUTS_DIR")) {
    cv::imwrite(absl::StrCat(out, "/expert_maps_example.png"), picture);
  }
  ASSERT_EQ(figure->test_indices.size(), 3u);
  EXPECT_EQ(figure->test_indices, ExpertMapImageIndices(6, 3, 11));
  ASSERT_EQ(figure->routing.size(), 2u);
  EXPECT_EQ(figure->routing[0].layer, 1);  // the last of 2 MoE layers
  EXPECT_EQ(figure->routing[0].num_moe_layers, 2);

  // Layout: upscaled x8 (28 px -> 224 px cells, 4 px patches -> 32 px), a
  // row-label column, then the image and one column per row.
  const int scale = 8, cell = kSide * scale, side = kPatch * scale;
  const int columns = 3;
  EXPECT_EQ(picture.type(), CV_8UC3);
  EXPECT_EQ(picture.cols, 2 * ExpertMapLayout::kMargin + ExpertMapLayout::kRowLabelWidth +
                              columns * (cell + ExpertMapLayout::kGap) - ExpertMapLayout::kGap);
  const int grid_top = ExpertMapLayout::kMargin + ExpertMapLayout::kTitleHeight +
                       ExpertMapLayout::kColumnTitleHeight;
  // Three image rows, then a legend of at least two lines.
  EXPECT_GT(picture.rows, grid_top + 3 * (cell + ExpertMapLayout::kGap) + 40);

  const Batch batch = data_.GetExamples(Split::kTest, figure->test_indices);
  int no_expert = 0, several = 0;
  for (int c = 0; c < 2; ++c) {
    const auto expected = ExpectedRouting(rows_[c].spec, rows_[c].checkpoint, batch, -1);
    for (int i = 0; i < 3; ++i) {
      const int cell_y = grid_top + i * (cell + ExpertMapLayout::kGap);
      for (int p = 0; p < kPatches; ++p) {
        const int py = p / kGrid, px = p % kGrid;
        // The patch's centre pixel shows the source pixel below it.
        const int dy = side / 2, dx = side / 2;
        const int y = cell_y + py * side + dy;
        const int x0 = ExpertMapLayout::kMargin + ExpertMapLayout::kRowLabelWidth;
        const int image_x = x0 + px * side + dx;
        const int x = x0 + (c + 1) * (cell + ExpertMapLayout::kGap) + px * side + dx;
        const uint8_t grey = Grey(batch, i, py * kPatch + dy / scale, px * kPatch + dx / scale);
        const std::string where = absl::StrCat("column ", c, " image ", i, " patch ", p);
        ExpectNear(picture.at<cv::Vec3b>(y, image_x), cv::Vec3b(grey, grey, grey),
                   where + " (original)");
        const Expected& e = expected[i][p];
        EXPECT_EQ(figure->routing[c].top_expert[i][p].item<int64_t>(), e.expert) << where;
        EXPECT_EQ(figure->routing[c].num_experts[i][p].item<int64_t>(), e.count) << where;
        if (e.expert >= 0) {
          ExpectNear(picture.at<cv::Vec3b>(y, x), Blended(ExpertColor(e.expert), grey, 0.55),
                     where);
        } else {
          ++no_expert;
          ASSERT_NE((dx + dy) % kHatchPeriod, 0);
          ExpectNear(picture.at<cv::Vec3b>(y, x), Blended(kNoExpertColor, grey, 0.55), where);
          // A hatch line runs through (dx + 1, dy + 3): 16 + 1 + 16 + 3 = 36.
          EXPECT_EQ(picture.at<cv::Vec3b>(y + 3, x + 1), kHatchColor) << where;
        }
        // Several experts: the count's black box in the top-left corner.
        const cv::Vec3b corner = picture.at<cv::Vec3b>(y - dy, x - dx);
        if (e.count > 1) {
          ++several;
          EXPECT_EQ(corner, cv::Vec3b(0, 0, 0)) << where;
        } else {
          EXPECT_NE(corner, cv::Vec3b(0, 0, 0)) << where;
        }
      }
    }
  }
  // Expert choice (E 4, capacity 50 * 1 / 4 per expert) leaves some patches
  // without an expert and gives some several, so both encodings were checked.
  EXPECT_GT(no_expert, 0);
  EXPECT_GT(several, 0);
}

TEST_F(ExpertMapsTest, ChosenLayerAndImagesAreTheSameForEveryColumn) {
  ExpertMapOptions options;
  options.num_images = 2;
  options.layer = 0;
  absl::StatusOr<ExpertMapFigure> figure = RenderExpertMaps(rows_, data_, options);
  ASSERT_TRUE(figure.ok()) << figure.status();
  EXPECT_EQ(figure->routing[1].layer, 0);
  const Batch batch = data_.GetExamples(Split::kTest, figure->test_indices);
  const auto expected = ExpectedRouting(rows_[1].spec, rows_[1].checkpoint, batch, 0);
  for (int p = 0; p < kPatches; ++p) {
    EXPECT_EQ(figure->routing[1].top_expert[1][p].item<int64_t>(), expected[1][p].expert);
  }

  options.layer = 2;
  absl::StatusOr<ExpertMapFigure> bad = RenderExpertMaps(rows_, data_, options);
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.status().message(), HasSubstr("layer: 2 is not an MoE layer"));
  EXPECT_THAT(bad.status().message(), HasSubstr("Token choice, k=1"));
}

TEST_F(ExpertMapsTest, MissingCheckpointNamesTheRunToTrain) {
  rows_[1].checkpoint = dir_ + "/not_trained/checkpoint.pt";
  absl::StatusOr<ExpertMapFigure> figure = RenderExpertMaps(rows_, data_, ExpertMapOptions{});
  ASSERT_FALSE(figure.ok());
  EXPECT_EQ(figure.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(figure.status().message(), HasSubstr("row 'Expert choice, k=1'"));
  EXPECT_THAT(figure.status().message(), HasSubstr("run 'tiny_expert_choice'"));
  EXPECT_THAT(figure.status().message(), HasSubstr(rows_[1].checkpoint));
  EXPECT_THAT(figure.status().message(), HasSubstr("must be trained first"));
}

TEST_F(ExpertMapsTest, TrainingFreeRowsLoadTheWeightsTheyShare) {
  // The unified router reuses the token-choice checkpoint's gate weights.
  ExperimentSpec unified = TinySpec("tiny_unified", "unified", 3);
  rows_.push_back({"USMoE (swapped in)", unified, rows_[0].checkpoint, true});
  absl::StatusOr<ExpertMapFigure> figure = RenderExpertMaps(rows_, data_, ExpertMapOptions{});
  ASSERT_TRUE(figure.ok()) << figure.status();
  EXPECT_EQ(figure->routing.size(), 3u);
}

TEST(ExpertMapsTablesTest, TablesNameVisionRows) {
  int tables_with_maps = 0;
  absl::StatusOr<std::vector<std::string>> names = TableNames();
  ASSERT_TRUE(names.ok()) << names.status();
  for (const std::string& name : *names) {
    absl::StatusOr<TableSpec> table = LoadTable(name);
    ASSERT_TRUE(table.ok()) << table.status();
    EXPECT_TRUE(ValidateExpertMaps(*table).ok()) << name << ": " << ValidateExpertMaps(*table);
    if (!table->has_expert_maps()) continue;
    ++tables_with_maps;
    for (const TableRow& row : table->rows()) {
      bool drawn = false;
      for (const std::string& label : table->expert_maps().rows()) drawn |= label == row.label();
      if (!drawn) continue;
      absl::StatusOr<ExperimentSpec> spec =
          RowSpec(*table, row, /*paper_scale=*/false, /*validate=*/false);
      ASSERT_TRUE(spec.ok()) << spec.status();
      EXPECT_TRUE(spec->model().has_vit()) << row.label();
    }
  }
  EXPECT_GE(tables_with_maps, 1);

  TableSpec bad;
  bad.add_rows()->set_label("a");
  bad.mutable_expert_maps()->add_rows("b");
  EXPECT_THAT(ValidateExpertMaps(bad).message(), HasSubstr("'b' is not a row"));
}

}  // namespace
}  // namespace moelab
