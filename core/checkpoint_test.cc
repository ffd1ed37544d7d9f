// Checkpoints: round trip, the checksum that catches changed bytes, old
// (v1) files, a model that does not fit, and failed writes.

#include "core/checkpoint.h"

#include <ATen/ATen.h>
#include <c10/util/C++17.h>
#include <c10/util/Exception.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/optim/sgd.h>
#include <torch/serialize/input-archive.h>
#include <torch/serialize/output-archive.h>

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/atomic_file.h"
#include "core/testing/file_size_limit.h"

namespace moelab {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::testing::Not;

class TinyRouter : public Router {
 public:
  explicit TinyRouter(const std::string& parameter) {
    register_parameter(parameter, at::randn({4, 8}));
  }
  RoutingDecision Route(const at::Tensor&, const RoutingContext&) override { return {}; }
  bool IsCausal(bool) const override { return true; }
};

// A model that only holds tensors and one TinyRouter, for checkpoints.
class TensorsOnlyModel : public Model {
 public:
  explicit TensorsOnlyModel(const std::string& router_parameter) {
    router_ = register_module("router", std::make_shared<TinyRouter>(router_parameter));
  }
  ModelOutput Forward(const Batch&, const ForwardOptions&) override { return {}; }
  ModelStats Stats() const override { return {}; }
  bool IsCausal() const override { return true; }
  std::vector<std::shared_ptr<Router>> Routers() const override { return {router_}; }

 private:
  std::shared_ptr<Router> router_;
};

// A model with an embedding-like table large enough that the middle of its
// checkpoint file lies inside tensor data, a buffer and one router.
// `prefix` names its non-router tensors (another model: other names).
class TinyModel : public TensorsOnlyModel {
 public:
  explicit TinyModel(const std::string& prefix = "token",
                     const std::string& router_parameter = "gate_weight")
      : TensorsOnlyModel(router_parameter) {
    register_parameter(prefix + "_table", at::randn({256, 64}));
    register_parameter(prefix + "_out", at::randn({64, 8}));
    register_buffer(prefix + "_scale", at::ones({8}));
  }
};

std::string TempDir(const std::string& name) {
  const std::string dir = absl::StrCat(::testing::TempDir(), "/checkpoint_", name);
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

absl::Status Save(const std::string& path, TinyModel& model, int epochs_done = 2) {
  torch::optim::SGD optimizer(model.parameters(), torch::optim::SGDOptions(0.1));
  TrainingState state;
  state.epochs_done = epochs_done;
  state.step = 40;
  state.result.set_status("RUNNING");
  state.rng_state = at::detail::getDefaultCPUGenerator().get_state();
  return SaveCheckpoint(path, model, optimizer, state);
}

std::string Read(const std::string& path) {
  absl::StatusOr<std::string> bytes = ReadFile(path);
  EXPECT_TRUE(bytes.ok()) << bytes.status();
  return bytes.ok() ? *bytes : "";
}

void Write(const std::string& path, const std::string& bytes) {
  ASSERT_TRUE(WriteFileAtomically(path, bytes).ok());
}

std::vector<std::string> Files(const std::string& dir) {
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(dir)) {
    names.push_back(entry.path().filename().string());
  }
  return names;
}

TEST(CheckpointTest, RoundTripRestoresWeightsAndState) {
  const std::string path = TempDir("round_trip") + "/checkpoint.pt";
  TinyModel saved;
  ASSERT_TRUE(Save(path, saved).ok());
  TinyModel restored;
  torch::optim::SGD optimizer(restored.parameters(), torch::optim::SGDOptions(0.1));
  TrainingState state;
  std::vector<std::string> warnings;
  const absl::Status s = LoadCheckpoint(path, restored, optimizer, &state, &warnings);
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_TRUE(warnings.empty());
  EXPECT_EQ(state.epochs_done, 2);
  EXPECT_EQ(state.step, 40);
  EXPECT_EQ(state.result.status(), "RUNNING");
  const auto a = saved.named_parameters(), b = restored.named_parameters();
  for (const auto& item : a) {
    EXPECT_TRUE(at::equal(item.value(), b[item.key()])) << item.key();
  }
  // The file ends with the 24-byte trailer: "MOELABCK", then the archive
  // length (little-endian) before it.
  const std::string bytes = Read(path);
  ASSERT_GT(bytes.size(), 24u);
  EXPECT_EQ(bytes.substr(bytes.size() - 24, 8), "MOELABCK");
  uint64_t length = 0;
  for (int i = 7; i >= 0; --i) {
    length = (length << 8) | static_cast<unsigned char>(bytes[bytes.size() - 16 + i]);
  }
  EXPECT_EQ(length, bytes.size() - 24);
}

TEST(CheckpointTest, SixteenFlippedBytesInATensorAreDataLossNamingTheFile) {
  const std::string path = TempDir("flipped") + "/checkpoint.pt";
  TinyModel model;
  ASSERT_TRUE(Save(path, model).ok());
  std::string bytes = Read(path);
  const size_t middle = bytes.size() / 2;
  for (size_t i = middle; i < middle + 16; ++i) bytes[i] = static_cast<char>(~bytes[i]);
  Write(path, bytes);
  // The bytes are inside a tensor's data: the zip archive alone still loads
  // (LibTorch does not check the zip's CRCs), so only the checksum sees it.
  torch::serialize::InputArchive unchecked;
  EXPECT_NO_THROW(unchecked.load_from(bytes.data(), bytes.size() - 24));

  TinyModel target;
  const at::Tensor before = target.named_parameters()["token_table"].clone();
  torch::optim::SGD optimizer(target.parameters(), torch::optim::SGDOptions(0.1));
  TrainingState state;
  const absl::Status resumed = LoadCheckpoint(path, target, optimizer, &state);
  EXPECT_TRUE(absl::IsDataLoss(resumed)) << resumed;
  EXPECT_THAT(resumed.message(), HasSubstr(absl::StrCat("checkpoint '", path, "' is corrupt")));
  EXPECT_THAT(resumed.message(), HasSubstr("checksum"));
  const absl::Status weights = LoadWeights(path, target, nullptr);
  EXPECT_TRUE(absl::IsDataLoss(weights)) << weights;
  EXPECT_THAT(weights.message(), HasSubstr(path));
  // Nothing was copied into the model.
  EXPECT_TRUE(at::equal(target.named_parameters()["token_table"], before));
}

TEST(CheckpointTest, AVersionTwoFileWithoutItsTrailerIsRefused) {
  const std::string path = TempDir("truncated") + "/checkpoint.pt";
  TinyModel model;
  ASSERT_TRUE(Save(path, model).ok());
  const std::string bytes = Read(path);
  Write(path, bytes.substr(0, bytes.size() - 24));
  const absl::Status s = LoadWeights(path, model, nullptr);
  EXPECT_TRUE(absl::IsDataLoss(s)) << s;
  EXPECT_THAT(s.message(), HasSubstr("is damaged"));
  // One byte appended: the trailer no longer ends the file.
  Write(path, bytes + "x");
  EXPECT_TRUE(absl::IsDataLoss(LoadWeights(path, model, nullptr)));
}

TEST(CheckpointTest, AVersionOneFileLoadsWithAWarning) {
  const std::string path = TempDir("v1") + "/checkpoint.pt";
  TinyModel saved;
  torch::serialize::OutputArchive archive;
  archive.write("format", c10::IValue(std::string("moelab-checkpoint-v1")));
  for (const auto& item : saved.named_parameters()) {
    archive.write("weights/" + item.key(), item.value().detach());
  }
  for (const auto& item : saved.named_buffers()) {
    archive.write("weights/" + item.key(), item.value().detach(), /*is_buffer=*/true);
  }
  archive.save_to(path);
  TinyModel restored;
  std::vector<std::string> warnings;
  const absl::Status s = LoadWeights(path, restored, nullptr, &warnings);
  ASSERT_TRUE(s.ok()) << s;
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_THAT(warnings[0], HasSubstr("loaded without verification"));
  EXPECT_THAT(warnings[0], HasSubstr(path));
  EXPECT_TRUE(at::equal(restored.named_parameters()["token_table"],
                        saved.named_parameters()["token_table"]));
}

TEST(CheckpointTest, ACorruptZipGivesOneLineWithoutABacktrace) {
  const std::string path = TempDir("garbage") + "/checkpoint.pt";
  Write(path, std::string(4096, 'z'));
  TinyModel model;
  const absl::Status s = LoadWeights(path, model, nullptr);
  EXPECT_TRUE(absl::IsDataLoss(s)) << s;
  EXPECT_THAT(s.message(), HasSubstr(absl::StrCat("cannot read checkpoint '", path, "': ")));
  EXPECT_THAT(s.message(), Not(HasSubstr("\n")));
  EXPECT_THAT(s.message(), Not(HasSubstr("frame #")));
}

TEST(CheckpointTest, AnotherModelsCheckpointIsRefusedNotWarned) {
  const std::string path = TempDir("other_model") + "/checkpoint.pt";
  TinyModel vision("patch");  // same router, other tensors
  ASSERT_TRUE(Save(path, vision).ok());
  TinyModel language("token");
  const at::Tensor before = language.named_parameters()["router.gate_weight"].clone();
  std::vector<std::string> not_loaded;
  const absl::Status s = LoadWeights(path, language, &not_loaded);
  EXPECT_TRUE(absl::IsInvalidArgument(s)) << s;
  EXPECT_THAT(s.message(), HasSubstr(absl::StrCat("checkpoint '", path,
                                                  "' does not fit this model: 3 of its 3 "
                                                  "tensors outside the routers are missing")));
  EXPECT_THAT(s.message(), HasSubstr("token_table"));
  // Not even the matching router weight was copied.
  EXPECT_TRUE(at::equal(language.named_parameters()["router.gate_weight"], before));
}

TEST(CheckpointTest, AnotherRoutersCheckpointLoadsAndListsTheRouterTensors) {
  const std::string path = TempDir("other_router") + "/checkpoint.pt";
  TinyModel trained("token", "gate_weight");
  ASSERT_TRUE(Save(path, trained).ok());
  TinyModel swapped("token", "similarity_weight");
  std::vector<std::string> not_loaded;
  const absl::Status s = LoadWeights(path, swapped, &not_loaded);
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_THAT(not_loaded, ::testing::ElementsAre("router.similarity_weight"));
  EXPECT_TRUE(at::equal(swapped.named_parameters()["token_table"],
                        trained.named_parameters()["token_table"]));
  // Without `not_loaded` every tensor must be there.
  EXPECT_TRUE(absl::IsDataLoss(LoadWeights(path, swapped, nullptr)));
}

// A model with 4 "experts" (rows of one parameter) beside a replicated
// table; built as a 2-rank expert-parallel shard it keeps rows
// [2 rank, 2 rank + 2), as MoeLayerImpl::ShardExperts does.
class ExpertsModel : public TensorsOnlyModel {
 public:
  ExpertsModel(const at::Tensor& experts, const at::Tensor& table)
      : TensorsOnlyModel("gate_weight") {
    register_parameter("layer_experts", experts.clone());
    register_parameter("layer_table", table.clone());
  }
};

// The momentum buffer SGD keeps for `parameter`.
at::Tensor Momentum(torch::optim::Optimizer& optimizer, const at::Tensor& parameter) {
  const auto& states = optimizer.state();
  const auto it = states.find(c10::guts::to_string(parameter.unsafeGetTensorImpl()));
  if (it == states.end()) return at::Tensor();
  return static_cast<const torch::optim::SGDParamState&>(*it->second).momentum_buffer();
}

// An expert-parallel set of 2 shares after `epochs_done` epochs, each
// rank's model and optimizer after one momentum step whose expert gradient
// is rank + 1 (the replicated table's is 1 on both, as data parallelism
// makes it).
class ExpertSet {
 public:
  explicit ExpertSet(const std::string& name) : dir_(TempDir(name)) {
    torch::manual_seed(3);
    experts_ = at::randn({12, 8});
    table_ = at::randn({16, 8});
  }
  const std::string& dir() const { return dir_; }
  std::string checkpoint() const { return dir_ + "/checkpoint.pt"; }
  const at::Tensor& experts() const { return experts_; }
  const at::Tensor& table() const { return table_; }

  // The experts of `degree` shares, each after its step.
  at::Tensor ExpertsAfterStep(int degree) const {
    std::vector<at::Tensor> parts;
    const int64_t per_share = experts_.size(0) / degree;
    for (int shard = 0; shard < degree; ++shard) {
      parts.push_back(experts_.slice(0, per_share * shard, per_share * (shard + 1)) -
                      0.1 * (shard + 1));
    }
    return at::cat(parts, 0);
  }

  absl::Status Save(int shard, int epochs_done, int degree = 2) {
    torch::manual_seed(5);  // the same router on every rank, as replicated state is
    const int64_t per_share = experts_.size(0) / degree;
    ExpertsModel model(experts_.slice(0, per_share * shard, per_share * (shard + 1)), table_);
    torch::optim::SGD optimizer(model.parameters(), torch::optim::SGDOptions(0.1).momentum(0.9));
    const auto parameters = model.named_parameters();
    parameters["layer_experts"].mutable_grad() = at::full({per_share, 8}, shard + 1.0);
    parameters["layer_table"].mutable_grad() = at::ones({16, 8});
    optimizer.step();
    const ExpertLayout layout{.degree = degree, .shard = shard};
    if (shard != 0) {
      return SaveExpertShard(ExpertShardPath(checkpoint(), shard, epochs_done), model, optimizer,
                             {parameters["layer_experts"]}, layout, epochs_done);
    }
    TrainingState state;
    state.epochs_done = epochs_done;
    state.rng_state = at::detail::getDefaultCPUGenerator().get_state();
    return SaveCheckpoint(checkpoint(), model, optimizer, state, layout);
  }

 private:
  std::string dir_;
  at::Tensor experts_, table_;
};

TEST(CheckpointTest, AnExpertParallelSetLoadsAsOneModel) {
  ExpertSet set("expert_set");
  ASSERT_TRUE(set.Save(0, /*epochs_done=*/3).ok());
  ASSERT_TRUE(set.Save(1, /*epochs_done=*/3).ok());
  EXPECT_EQ(ExpertShardPath(set.checkpoint(), 1, 3), set.dir() + "/checkpoint.rank1.epoch3.pt");

  ExpertsModel whole(at::zeros({12, 8}), at::zeros({16, 8}));
  std::vector<std::string> warnings;
  ASSERT_TRUE(LoadWeights(set.checkpoint(), whole, nullptr, &warnings).ok());
  const auto parameters = whole.named_parameters();
  // Each share after its step: lr 0.1 times its gradient.
  EXPECT_TRUE(at::allclose(parameters["layer_experts"], set.ExpertsAfterStep(2)));
  EXPECT_TRUE(at::allclose(parameters["layer_table"], set.table() - 0.1));
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_THAT(warnings[0], HasSubstr("holds share 0 of 2 of each MoE layer's experts"));

  // The replicated state is in rank 0's file only: a share is not a
  // checkpoint of its own.
  ExpertsModel alone(at::zeros({12, 8}), at::zeros({16, 8}));
  const absl::Status share = LoadWeights(ExpertShardPath(set.checkpoint(), 1, 3), alone, nullptr);
  EXPECT_TRUE(absl::IsInvalidArgument(share)) << share;
  EXPECT_THAT(std::string(share.message()), HasSubstr("is share 1 of an expert-parallel set"));
  EXPECT_LT(fs::file_size(ExpertShardPath(set.checkpoint(), 1, 3)),
            fs::file_size(set.checkpoint()));
}

TEST(CheckpointTest, ThreeSharesConsolidateInOrder) {
  ExpertSet set("expert_three");
  for (int shard : {0, 1, 2}) ASSERT_TRUE(set.Save(shard, /*epochs_done=*/1, /*degree=*/3).ok());
  ExpertsModel whole(at::zeros({12, 8}), at::zeros({16, 8}));
  ASSERT_TRUE(LoadWeights(set.checkpoint(), whole, nullptr, nullptr).ok());
  EXPECT_TRUE(at::allclose(whole.named_parameters()["layer_experts"], set.ExpertsAfterStep(3)));
}

TEST(CheckpointTest, EachShareResumesItsOwnExpertsAndOptimizerState) {
  ExpertSet set("expert_resume");
  ASSERT_TRUE(set.Save(0, /*epochs_done=*/3).ok());
  ASSERT_TRUE(set.Save(1, /*epochs_done=*/3).ok());
  for (int shard : {0, 1}) {
    SCOPED_TRACE(absl::StrCat("share ", shard));
    ExpertsModel model(at::zeros({6, 8}), at::zeros({16, 8}));
    torch::optim::SGD optimizer(model.parameters(), torch::optim::SGDOptions(0.1).momentum(0.9));
    TrainingState state;
    const absl::Status s = LoadCheckpoint(set.checkpoint(), model, optimizer, &state, nullptr,
                                          ExpertLayout{.degree = 2, .shard = shard});
    ASSERT_TRUE(s.ok()) << s;
    EXPECT_EQ(state.epochs_done, 3);
    const auto parameters = model.named_parameters();
    // After the saved step: lr 0.1 times the gradient.
    EXPECT_TRUE(at::allclose(parameters["layer_experts"],
                             set.ExpertsAfterStep(2).slice(0, 6 * shard, 6 * shard + 6)));
    EXPECT_TRUE(at::allclose(parameters["layer_table"], set.table() - 0.1));
    EXPECT_TRUE(
        at::equal(Momentum(optimizer, parameters["layer_experts"]), at::full({6, 8}, shard + 1.0)));
    EXPECT_TRUE(at::equal(Momentum(optimizer, parameters["layer_table"]), at::ones({16, 8})));
  }
}

TEST(CheckpointTest, AnExpertSetResumesOnlyOnItsOwnLayoutAndWhole) {
  ExpertSet set("expert_layout");
  ASSERT_TRUE(set.Save(0, /*epochs_done=*/3).ok());
  ASSERT_TRUE(set.Save(1, /*epochs_done=*/2).ok());  // the share of the set before
  {
    // One process holding every expert: another layout.
    ExpertsModel model(at::zeros({12, 8}), at::zeros({16, 8}));
    torch::optim::SGD optimizer(model.parameters(), torch::optim::SGDOptions(0.1));
    TrainingState state;
    const absl::Status s = LoadCheckpoint(set.checkpoint(), model, optimizer, &state);
    EXPECT_TRUE(absl::IsFailedPrecondition(s)) << s;
    EXPECT_THAT(std::string(s.message()),
                HasSubstr("written with the experts split over 2 ranks (expert parallel), this "
                          "run has one process holding every expert"));
  }
  // Rank 0's file of epoch 3 needs share 1 of epoch 3, which was never
  // committed: only that of epoch 2 is on disk.
  ExpertsModel whole(at::zeros({12, 8}), at::zeros({16, 8}));
  absl::Status missing = LoadWeights(set.checkpoint(), whole, nullptr);
  EXPECT_TRUE(absl::IsDataLoss(missing)) << missing;
  EXPECT_THAT(std::string(missing.message()),
              HasSubstr("needs share 1 in '" + set.dir() + "/checkpoint.rank1.epoch3.pt'"));
  // A share under another epoch's name is refused, not mixed in.
  fs::copy_file(ExpertShardPath(set.checkpoint(), 1, 2), ExpertShardPath(set.checkpoint(), 1, 3));
  absl::Status renamed = LoadWeights(set.checkpoint(), whole, nullptr);
  EXPECT_TRUE(absl::IsDataLoss(renamed)) << renamed;
  EXPECT_THAT(std::string(renamed.message()), HasSubstr("records share 1 of 2 after epoch 2"));
  EXPECT_TRUE(at::equal(whole.named_parameters()["layer_experts"], at::zeros({12, 8})));
}

TEST(CheckpointTest, AFailedWriteReturnsAnErrorAndLeavesNoTemporary) {
  const std::string dir = TempDir("full");
  const std::string path = dir + "/checkpoint.pt";
  TinyModel model;
  ASSERT_TRUE(Save(path, model, /*epochs_done=*/1).ok());
  const std::string good = Read(path);
  ASSERT_GT(good.size(), 64u << 10);
  absl::Status s;
  {
    FileSizeLimit limit(16 << 10);
    s = Save(path, model, /*epochs_done=*/2);
  }
  EXPECT_TRUE(absl::IsResourceExhausted(s)) << s;
  EXPECT_THAT(s.message(), HasSubstr(absl::StrCat("cannot write checkpoint '", path, "'")));
  EXPECT_THAT(s.message(), HasSubstr("File too large"));
  EXPECT_THAT(s.message(), HasSubstr("the partial file was removed"));
  EXPECT_THAT(Files(dir), ::testing::ElementsAre("checkpoint.pt"));
  EXPECT_EQ(Read(path), good);  // the previous checkpoint stands

  // The same for small files written in one piece.
  {
    FileSizeLimit limit(1 << 10);
    s = WriteFileAtomically(dir + "/result.json", std::string(4 << 10, '{'));
  }
  EXPECT_TRUE(absl::IsResourceExhausted(s)) << s;
  EXPECT_THAT(s.message(), HasSubstr("cannot write '" + dir + "/result.json.tmp."));
  EXPECT_THAT(Files(dir), ::testing::ElementsAre("checkpoint.pt"));
}

TEST(AtomicFileWriterTest, AnUncommittedWriterRemovesItsTemporary) {
  const std::string dir = TempDir("writer");
  {
    absl::StatusOr<AtomicFileWriter> out = AtomicFileWriter::Open(dir + "/a.txt");
    ASSERT_TRUE(out.ok()) << out.status();
    ASSERT_TRUE(out->Append("partial").ok());
    EXPECT_TRUE(fs::exists(out->temporary_path()));
  }
  EXPECT_TRUE(Files(dir).empty());
  absl::StatusOr<AtomicFileWriter> out = AtomicFileWriter::Open(dir + "/b.txt");
  ASSERT_TRUE(out.ok());
  ASSERT_TRUE(out->Append("one ").ok());
  ASSERT_TRUE(out->Append("two").ok());
  EXPECT_EQ(out->size(), 7);
  ASSERT_TRUE(out->Commit().ok());
  EXPECT_EQ(Read(dir + "/b.txt"), "one two");
  EXPECT_THAT(Files(dir), ::testing::ElementsAre("b.txt"));
}

TEST(ExceptionMessageTest, TorchErrorsGiveTheirFirstLineOnly) {
  try {
    TORCH_CHECK(false, "tensor 'x' has 3 dimensions, expected 2");
  } catch (const c10::Error& e) {
    EXPECT_THAT(std::string(e.what()), HasSubstr("\n"));  // the backtrace
    EXPECT_EQ(ExceptionMessage(e), "tensor 'x' has 3 dimensions, expected 2");
  }
  EXPECT_EQ(ExceptionMessage(std::runtime_error("one\ntwo")), "one");
  EXPECT_EQ(ExceptionMessage(std::bad_alloc()), "std::bad_alloc");
}

}  // namespace
}  // namespace moelab
