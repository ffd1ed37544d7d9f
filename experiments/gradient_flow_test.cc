// The gradient-flow audit: with the auxiliary losses switched off, the task
// loss alone must reach every learnable parameter of every registered router,
// at top_k 1 and 2 and, where the router accepts it, a fractional k. A router
// whose selection cuts its own parameters off from the loss (a renormalised
// top-1 weight is identically 1) trains nothing but its aux losses, silently.
// Linked with every plugin, so a new router is audited without editing this
// file; routers with no learnable parameters must be named below.
//
// Also here, because paired runs need it as much as paired initialisation
// (models/model_spec_util.h): the training batches of (seed, epoch) are the
// same whatever the global torch generator did before (the trainer's model
// init, a router drawing at forward time, dropout), checked on a token-stream
// LM dataset and on Fashion-MNIST with augmentation.

#include <ATen/ATen.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cctype>
#include <filesystem>
#include <functional>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/dataset.h"
#include "core/model.h"
#include "core/router.h"
#include "experiments/table_rows.h"
#include "experiments/testing/tiny_lm.h"
#include "proto/experiment.pb.h"

namespace moelab {
namespace {

using ::testing::HasSubstr;

// Routers that by design learn nothing: they route by a fixed hash of the
// token id or at random. Each must really have no parameters, and every
// router not named here must have at least one.
const std::set<std::string>& ParameterFreeRouters() {
  static const auto* names = new std::set<std::string>{"hash", "random"};
  return *names;
}

struct Case {
  std::string router;
  // Names the non-default parameterisation ("" for the defaults).
  std::string variant;
  double top_k = 1;
  // Applied to the router spec before resolution.
  std::function<void(RouterSpec*)> options;
};

std::string CaseName(const Case& c) {
  std::ostringstream k;
  k << c.top_k;
  std::string name = c.router + (c.variant.empty() ? "" : "_" + c.variant) + "_k" + k.str();
  // Test names take letters, digits and '_' only (spec names have '.').
  for (char& ch : name) {
    if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
  }
  return name;
}

std::string Describe(const Case& c) {
  std::ostringstream out;
  out << "router '" << c.router << "'" << (c.variant.empty() ? "" : " (" + c.variant + ")")
      << " at top_k " << c.top_k;
  return out.str();
}

std::vector<Case> Cases() {
  std::vector<Case> cases;
  for (const std::string& name : RouterRegistry().Names()) {
    if (name.rfind("testing_", 0) == 0) continue;
    std::vector<double> ks = {1, 2};
    if ((*RouterRegistry().Find(name))->fractional_top_k) ks.push_back(1.5);
    for (double k : ks) cases.push_back({name, "", k, nullptr});
  }
  // Parameterisations that add parameters: a learnable W_s.
  for (double k : {1.0, 2.0}) {
    cases.push_back({"similarity_aware", "projection_full", k,
                     [](RouterSpec* s) { s->mutable_similarity_aware()->set_projection(FULL); }});
    cases.push_back({"similarity_aware", "projection_low_rank", k, [](RouterSpec* s) {
                       s->mutable_similarity_aware()->set_projection(LOW_RANK);
                       s->mutable_similarity_aware()->set_projection_rank(8);
                     }});
  }
  // Every router configuration a paper table trains (its rows at CPU
  // scale), exactly as the table specifies it: a table row that cannot learn
  // its gate would test nothing.
  absl::StatusOr<std::vector<std::string>> tables = TableNames();
  TORCH_CHECK(tables.ok(), tables.status().ToString());
  std::set<std::string> seen;
  for (const std::string& name : *tables) {
    absl::StatusOr<TableSpec> table = LoadTable(name);
    TORCH_CHECK(table.ok(), table.status().ToString());
    for (const TableRow& row : table->rows()) {
      if (!row.init_from_row().empty()) continue;  // training-free: trains nothing
      absl::StatusOr<ExperimentSpec> spec = RowSpec(*table, row, /*paper_scale=*/false);
      TORCH_CHECK(spec.ok(), name, " row ", row.label(), ": ", spec.status().ToString());
      const RouterSpec router = spec->router();
      if (!seen.insert(router.SerializeAsString()).second) continue;
      cases.push_back({router.name(), absl::StrCat("table_", spec->name()), router.top_k(),
                       [router](RouterSpec* s) { *s = router; }});
    }
  }
  return cases;
}

// The tiny LM (attention-aware routers get the attention of their block)
// with every MoE block routed by `c`, aux losses off.
ExperimentSpec TinyLmSpec(const Case& c) {
  ExperimentSpec spec = TinyMoeLmSpec(c.router, c.top_k);
  RouterSpec* router = spec.mutable_router();
  if (c.options) c.options(router);
  router->set_load_balance_coef(0.0f);
  router->set_z_loss_coef(0.0f);
  return spec;
}

class GradientFlowTest : public ::testing::TestWithParam<Case> {};

TEST_P(GradientFlowTest, TaskLossReachesEveryRouterParameter) {
  const Case& c = GetParam();
  const std::string what = Describe(c);
  ExperimentSpec spec = TinyLmSpec(c);
  absl::StatusOr<std::shared_ptr<Model>> created = MakeTinyMoeLm(&spec, 1);
  ASSERT_TRUE(created.ok()) << what << ": " << created.status();
  const RouterRegistration* router_entry = *RouterRegistry().Find(c.router);
  const RouterDims dims = (*ModelRegistry().Find(spec.model().name()))->router_dims(spec.model());
  ASSERT_TRUE(CheckTopK(spec.router(), *router_entry, dims).ok()) << what;
  Model& model = **created;
  model.train();
  const std::vector<std::shared_ptr<Router>> routers = model.Routers();
  ASSERT_EQ(routers.size(), static_cast<size_t>(kTinyLayers)) << what;

  ModelOutput out = model.Forward(TinyLmBatch(2), {});
  ASSERT_TRUE(out.loss.defined()) << what;
  // The coefficients are 0: nothing but the task loss can carry gradient.
  EXPECT_EQ(out.aux_loss.item<double>(), 0.0) << what;
  out.loss.backward();

  const bool parameter_free = ParameterFreeRouters().count(c.router) > 0;
  for (size_t layer = 0; layer < routers.size(); ++layer) {
    const auto parameters = routers[layer]->named_parameters();
    if (parameter_free) {
      EXPECT_EQ(parameters.size(), 0u) << what << " is listed as parameter-free but layer " << layer
                                       << " has " << parameters.size() << " parameters (first: '"
                                       << parameters.keys().front() << "'); take it off the list";
      continue;
    }
    EXPECT_GT(parameters.size(), 0u) << what << " has no learnable parameters in layer " << layer
                                     << "; if that is by design, add it to ParameterFreeRouters()";
    for (const auto& p : parameters) {
      const std::string where =
          what + ", layer " + std::to_string(layer) + ", parameter '" + p.key() + "'";
      const at::Tensor& grad = p.value().grad();
      ASSERT_TRUE(grad.defined()) << where << ": no gradient at all from the task loss";
      EXPECT_TRUE(at::isfinite(grad).all().item<bool>()) << where << ": non-finite gradient";
      EXPECT_GT(grad.abs().max().item<double>(), 0.0)
          << where << ": the task loss gives it an all-zero gradient";
    }
  }
}

INSTANTIATE_TEST_SUITE_P(EveryRouter, GradientFlowTest, ::testing::ValuesIn(Cases()),
                         [](const auto& info) { return CaseName(info.param); });

TEST(GradientFlowAuditTest, CoversTheRoutersOfBothPapersAndFractionalK) {
  std::set<std::string> names;
  for (const Case& c : Cases()) names.insert(CaseName(c));
  for (const char* expected :
       {"token_choice_k1", "token_choice_k2", "expert_choice_k1", "similarity_aware_k1",
        "attention_aware_k1", "unified_k1", "unified_k1_5", "xmoe_k1", "sinkhorn_k1",
        "similarity_aware_projection_full_k1", "similarity_aware_projection_low_rank_k2"}) {
    EXPECT_TRUE(names.count(expected)) << expected;
  }
}

TEST(GradientFlowAuditTest, ParameterFreeListNamesRegisteredRouters) {
  for (const std::string& name : ParameterFreeRouters()) {
    EXPECT_TRUE(RouterRegistry().Find(name).ok())
        << name << " is listed as parameter-free but is not registered";
  }
}

// A renormalised top-1 weight is r_e / r_e = 1 whatever the gate says: the
// gate gets no gradient from the task loss. The spec is refused.
TEST(GradientFlowAuditTest, RenormalizedTopOneTokenChoiceIsRefused) {
  RouterSpec spec;
  spec.set_name("token_choice");
  spec.set_top_k(1);
  spec.mutable_token_choice()->set_renormalize(true);
  const RouterDims dims{kTinyDim, kTinyExperts, kTinyHeads, /*causal_model=*/true};
  const RouterRegistration* entry = *RouterRegistry().Find("token_choice");
  if (entry->resolve) entry->resolve(&spec, dims);

  const absl::Status validated = entry->validate(spec, dims);
  EXPECT_FALSE(validated.ok());
  EXPECT_THAT(std::string(validated.message()), HasSubstr("router.token_choice.renormalize"));
  EXPECT_THAT(std::string(validated.message()), HasSubstr("zero gradient"));
  const absl::StatusOr<std::shared_ptr<Router>> created = CreateRouter(spec, dims);
  ASSERT_FALSE(created.ok());
  EXPECT_THAT(std::string(created.status().message()),
              HasSubstr("router.token_choice.renormalize"));
  EXPECT_THAT(std::string(created.status().message()), HasSubstr("zero gradient"));

  // At top_k 2 renormalisation keeps a gradient and stays allowed.
  spec.set_top_k(2);
  EXPECT_TRUE(CreateRouter(spec, dims).ok());
}

// ------------------------------------------------------------ data order

constexpr uint64_t kDataSeed = 7;
constexpr int64_t kDataBatch = 8, kDataBatches = 3;

// Resolves and loads `spec`, then takes the first kDataBatches training
// batches of (seed, epoch); `disturb` runs before the load and before each
// batch and may do anything to the global torch generator.
std::vector<Batch> TrainingBatches(DatasetSpec spec, int64_t epoch, uint64_t seed,
                                   const std::function<void(int)>& disturb) {
  const DatasetRegistration* entry = *DatasetRegistry().Find(spec.name());
  if (entry->resolve) entry->resolve(&spec);
  disturb(0);
  absl::StatusOr<std::unique_ptr<Dataset>> data = LoadDataset(spec);
  EXPECT_TRUE(data.ok()) << data.status();
  std::vector<Batch> batches;
  if (!data.ok()) return batches;
  for (int64_t i = 0; i < kDataBatches; ++i) {
    disturb(static_cast<int>(i) + 1);
    batches.push_back((*data)->GetBatch(Split::kTrain, kDataBatch, i, epoch, seed));
  }
  return batches;
}

void Quiet(int step) { at::manual_seed(1); }

// Reseeds differently and draws different amounts at every step.
void Noisy(int step) {
  at::manual_seed(1000 + 17 * step);
  at::randn({3 + 5 * step});
  at::rand({1000});
  at::randint(100, {7});
}

bool SameBatches(const std::vector<Batch>& a, const std::vector<Batch>& b) {
  if (a.size() != b.size() || a.empty()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (!a[i].inputs.equal(b[i].inputs) || !a[i].targets.equal(b[i].targets)) return false;
  }
  return true;
}

void ExpectOrderDependsOnSeedAndEpochOnly(const DatasetSpec& spec) {
  const std::vector<Batch> quiet = TrainingBatches(spec, 1, kDataSeed, Quiet);
  const std::vector<Batch> noisy = TrainingBatches(spec, 1, kDataSeed, Noisy);
  ASSERT_EQ(quiet.size(), static_cast<size_t>(kDataBatches));
  EXPECT_TRUE(SameBatches(quiet, noisy))
      << spec.name() << ": the training batches of (seed " << kDataSeed
      << ", epoch 1) changed with the global torch generator's state";
  // The comparison can fail: the epoch and the seed do change the order.
  EXPECT_FALSE(SameBatches(quiet, TrainingBatches(spec, 2, kDataSeed, Quiet)))
      << spec.name() << ": epochs 1 and 2 start with the same batches";
  EXPECT_FALSE(SameBatches(quiet, TrainingBatches(spec, 1, kDataSeed + 1, Quiet)))
      << spec.name() << ": seeds " << kDataSeed << " and " << kDataSeed + 1
      << " give the same batches";
}

TEST(PairedSeedDataOrderTest, TokenStreamLmBatchesIgnoreTheGlobalGenerator) {
  DatasetSpec spec;
  spec.set_name("synthetic_lm");  // a TokenStreamDataset, like sotu and wikitext
  spec.mutable_synthetic_lm()->set_vocab_size(100);
  spec.mutable_synthetic_lm()->set_sequence_length(16);
  spec.mutable_synthetic_lm()->set_num_sequences(64);
  ExpectOrderDependsOnSeedAndEpochOnly(spec);
}

TEST(PairedSeedDataOrderTest, AugmentedFashionMnistBatchesIgnoreTheGlobalGenerator) {
  const std::string dir = "/usr/share/datasets/fashion-mnist";
  if (!std::filesystem::exists(dir + "/train-images-idx3-ubyte.gz")) {
    GTEST_SKIP() << "Fashion-MNIST not installed in " << dir
                 << " (Debian package dataset-fashion-mnist)";
  }
  DatasetSpec spec;
  spec.set_name("fashion_mnist");
  spec.mutable_fashion_mnist()->set_data_dir(dir);
  spec.mutable_fashion_mnist()->set_max_train_examples(512);
  spec.mutable_fashion_mnist()->set_augment(true);
  ExpectOrderDependsOnSeedAndEpochOnly(spec);

  // Augmentation is on: the same examples in the same order, other pixels.
  DatasetSpec plain = spec;
  plain.mutable_fashion_mnist()->set_augment(false);
  const std::vector<Batch> augmented = TrainingBatches(spec, 1, kDataSeed, Quiet);
  const std::vector<Batch> unaugmented = TrainingBatches(plain, 1, kDataSeed, Quiet);
  ASSERT_EQ(augmented.size(), unaugmented.size());
  for (size_t i = 0; i < augmented.size(); ++i) {
    EXPECT_TRUE(augmented[i].targets.equal(unaugmented[i].targets)) << "batch " << i;
  }
  EXPECT_FALSE(SameBatches(augmented, unaugmented));
}

}  // namespace
}  // namespace moelab
