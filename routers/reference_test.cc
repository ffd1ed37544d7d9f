// Compares the C++ routers with an independent float64 PyTorch reference.
//
// routers/testdata/reference_routers.py implements each router straight from
// the router conventions; routers/testdata/make_fixtures.py runs it on small
// random cases and writes, per case, testdata/fixtures/<case>.pt (inputs,
// parameters, the flags `training` and `causal_model`, and the reference's
// outputs prefixed `expected_`) and <case>.pbtxt (the RouterSpec). This test
// builds each router from its spec, loads the case's parameters into it, routes
// the case's hidden states and checks every expected output: selections
// exactly, values to 1e-5 (relative above magnitude 1). The fixtures avoid
// near-ties, so float32 rounding cannot flip a selection.

#include <ATen/ATen.h>
#include <torch/csrc/jit/serialization/pickle.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "core/router.h"
#include "google/protobuf/text_format.h"
#include "gtest/gtest.h"
#include "proto/experiment.pb.h"

namespace moelab {
namespace {

namespace fs = std::filesystem;

// Fixture entries that are not router parameters.
const std::set<std::string>& NonParameterInputs() {
  static const auto* names = new std::set<std::string>{
      "hidden", "attention_probs", "attention_values", "padding_mask", "training", "causal_model"};
  return *names;
}

constexpr char kExpectedPrefix[] = "expected_";

fs::path FixtureDir() {
  fs::path root;
  if (const char* srcdir = std::getenv("TEST_SRCDIR")) {
    const char* workspace = std::getenv("TEST_WORKSPACE");
    root = fs::path(srcdir) / (workspace != nullptr ? workspace : "moelab");
  }
  return root / "routers" / "testdata" / "fixtures";
}

// Case names: the stems of the fixture directory's .pt files, sorted.
std::vector<std::string> CaseNames() {
  std::vector<std::string> names;
  std::error_code error;
  for (const auto& entry : fs::directory_iterator(FixtureDir(), error)) {
    if (entry.path().extension() == ".pt") {
      names.push_back(entry.path().stem().string());
    }
  }
  std::sort(names.begin(), names.end());
  return names;
}

absl::StatusOr<std::string> ReadFile(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", path.string()));
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// A Python torch.save of a dict of tensors, read back by name.
absl::StatusOr<std::map<std::string, at::Tensor>> ReadTensors(const fs::path& path) {
  absl::StatusOr<std::string> bytes = ReadFile(path);
  if (!bytes.ok()) return bytes.status();
  const c10::IValue loaded =
      torch::jit::pickle_load(std::vector<char>(bytes->begin(), bytes->end()));
  if (!loaded.isGenericDict()) {
    return absl::InvalidArgumentError(absl::StrCat(path.string(), ": not a dict of tensors"));
  }
  std::map<std::string, at::Tensor> tensors;
  for (const auto& entry : loaded.toGenericDict()) {
    tensors[entry.key().toStringRef()] = entry.value().toTensor();
  }
  return tensors;
}

absl::StatusOr<RouterSpec> ReadSpec(const fs::path& path) {
  absl::StatusOr<std::string> text = ReadFile(path);
  if (!text.ok()) return text.status();
  RouterSpec spec;
  if (!google::protobuf::TextFormat::ParseFromString(*text, &spec)) {
    return absl::InvalidArgumentError(
        absl::StrCat(path.string(), ": not a RouterSpec in text format"));
  }
  return spec;
}

// Where |actual - expected| exceeds 1e-5 * max(1, |expected|), the first such
// entry and the largest difference; empty when all entries are close.
std::string Mismatch(const at::Tensor& actual, const at::Tensor& expected) {
  const at::Tensor a = actual.detach().to(at::kDouble);
  const at::Tensor e = expected.to(at::kDouble);
  const at::Tensor diff = (a - e).abs();
  const at::Tensor bad = diff > 1e-5 * e.abs().clamp_min(1.0);
  if (!bad.any().item<bool>()) return "";
  const int64_t first = bad.flatten().nonzero()[0][0].item<int64_t>();
  std::ostringstream out;
  out << bad.sum().item<int64_t>() << " entries differ; first at flat index " << first << ": got "
      << a.flatten()[first].item<double>() << ", reference " << e.flatten()[first].item<double>()
      << "; largest difference " << diff.max().item<double>();
  return out.str();
}

class ReferenceTest : public ::testing::TestWithParam<std::string> {};

TEST_P(ReferenceTest, MatchesReference) {
  const std::string& name = GetParam();
  absl::StatusOr<std::map<std::string, at::Tensor>> loaded =
      ReadTensors(FixtureDir() / (name + ".pt"));
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  const std::map<std::string, at::Tensor>& t = *loaded;
  absl::StatusOr<RouterSpec> spec = ReadSpec(FixtureDir() / (name + ".pbtxt"));
  ASSERT_TRUE(spec.ok()) << spec.status();
  const auto has = [&t](const std::string& key) { return t.count(key) > 0; };
  for (const char* key : {"hidden", "training", "causal_model", "expected_logits",
                          "expected_selected", "expected_combine_weights"}) {
    ASSERT_TRUE(has(key)) << "fixture lacks " << key;
  }

  const at::Tensor& hidden = t.at("hidden");
  const bool training = t.at("training").item<bool>();
  const bool causal_model = t.at("causal_model").item<bool>();
  const RouterDims dims{.model_dim = hidden.size(2),
                        .num_experts = t.at("expected_logits").size(2),
                        .num_heads = has("attention_probs") ? t.at("attention_probs").size(1) : 2,
                        .causal_model = causal_model};

  absl::StatusOr<const RouterRegistration*> entry = RouterRegistry().Find(spec->name());
  ASSERT_TRUE(entry.ok()) << entry.status();
  if ((*entry)->resolve) (*entry)->resolve(&*spec, dims);
  absl::StatusOr<std::shared_ptr<Router>> created = CreateRouter(*spec, dims);
  ASSERT_TRUE(created.ok()) << created.status();
  Router& router = **created;

  // Every router parameter comes from the fixture, and every fixture input
  // that is not hidden state or context is a router parameter.
  std::set<std::string> unused_inputs;
  for (const auto& [key, value] : t) {
    if (key.rfind(kExpectedPrefix, 0) != 0 && !NonParameterInputs().count(key)) {
      unused_inputs.insert(key);
    }
  }
  {
    at::NoGradGuard no_grad;
    for (auto& parameter : router.named_parameters(/*recurse=*/true)) {
      ASSERT_TRUE(has(parameter.key()))
          << "router parameter '" << parameter.key() << "' not in the fixture";
      const at::Tensor& value = t.at(parameter.key());
      ASSERT_EQ(value.numel(), parameter.value().numel()) << parameter.key();
      if (value.dim() > 0 && parameter.value().dim() > 0) {
        ASSERT_EQ(value.sizes(), parameter.value().sizes()) << parameter.key();
      }
      parameter.value().copy_(value.reshape(parameter.value().sizes()));
      unused_inputs.erase(parameter.key());
    }
  }
  EXPECT_TRUE(unused_inputs.empty())
      << "fixture parameter(s) the router does not have, first: " << *unused_inputs.begin();

  router.train(training);
  RoutingContext context;
  const int64_t batch = hidden.size(0), tokens = hidden.size(1);
  context.token_ids = at::arange(batch * tokens, at::kLong).reshape({batch, tokens});
  if (has("padding_mask")) context.padding_mask = t.at("padding_mask");
  context.training = training;
  context.causal = causal_model;
  if (has("attention_probs")) {
    context.attention_probs = t.at("attention_probs");
    context.attention_values = t.at("attention_values");
  }
  EXPECT_EQ(router.NeedsAttention(), has("attention_probs"));

  const RoutingDecision d = router.Route(hidden, context);

  const auto expect_close = [&](const std::string& field, const at::Tensor& actual) {
    const at::Tensor& expected = t.at(std::string(kExpectedPrefix) + field);
    ASSERT_TRUE(actual.defined()) << field << " is undefined";
    ASSERT_EQ(actual.sizes(), expected.sizes()) << field;
    const std::string mismatch = Mismatch(actual, expected);
    EXPECT_TRUE(mismatch.empty()) << field << ": " << mismatch;
  };
  const auto expect_equal_mask = [&](const std::string& field, const at::Tensor& actual) {
    const at::Tensor& expected = t.at(std::string(kExpectedPrefix) + field);
    ASSERT_TRUE(actual.defined()) << field << " is undefined";
    ASSERT_EQ(actual.scalar_type(), at::kBool) << field;
    ASSERT_EQ(actual.sizes(), expected.sizes()) << field;
    EXPECT_TRUE(at::equal(actual, expected))
        << field << ": " << at::ne(actual, expected).sum().item<int64_t>()
        << " entries differ\ngot\n"
        << actual << "\nreference\n"
        << expected;
  };

  expect_close("logits", d.logits);
  if (has("expected_gate_probs")) expect_close("gate_probs", d.gate_probs);
  if (has("expected_aggregated_probs")) {
    expect_close("aggregated_probs", d.aggregated_probs);
  } else {
    EXPECT_FALSE(d.aggregated_probs.defined())
        << "aggregated_probs is for graph-of-tokens routers only";
  }
  // The description of the aggregation weights W (graph-of-tokens routers).
  for (const auto& [field, actual] :
       {std::pair<std::string, at::Tensor>{"aggregation_self_weight", d.aggregation_self_weight},
        {"aggregation_effective_neighbours", d.aggregation_effective_neighbours}}) {
    if (has(kExpectedPrefix + field)) {
      expect_close(field, actual);
      EXPECT_FALSE(actual.requires_grad()) << field << " must be detached";
    } else {
      EXPECT_FALSE(actual.defined()) << field << " is for aggregating routers";
    }
  }
  if (has("expected_aggregation_head")) {
    const at::Tensor& expected = t.at("expected_aggregation_head");
    ASSERT_TRUE(d.aggregation_head.defined()) << "aggregation_head is undefined";
    ASSERT_EQ(d.aggregation_head.scalar_type(), at::kLong);
    EXPECT_TRUE(at::equal(d.aggregation_head, expected)) << "aggregation_head: got\n"
                                                         << d.aggregation_head << "\nreference\n"
                                                         << expected;
  } else {
    EXPECT_FALSE(d.aggregation_head.defined())
        << "aggregation_head is for attention-aware routing only";
  }
  expect_equal_mask("selected", d.selected);
  expect_close("combine_weights", d.combine_weights);
  EXPECT_TRUE(d.combine_weights.requires_grad()) << "combine_weights must be differentiable";
  if (has("expected_dropped")) {
    // An undefined `dropped` means no token lost a choice.
    expect_equal_mask("dropped",
                      d.dropped.defined() ? d.dropped : at::zeros({batch, tokens}, at::kBool));
  }

  std::map<std::string, at::Tensor> aux(d.aux_losses.begin(), d.aux_losses.end());
  for (const std::string loss : {"load_balance", "z_loss"}) {
    if (has(absl::StrCat(kExpectedPrefix, "aux_", loss))) {
      ASSERT_TRUE(aux.count(loss)) << "missing aux loss " << loss;
      expect_close("aux_" + loss, aux.at(loss));
    } else {
      EXPECT_FALSE(aux.count(loss)) << loss << " reported with coefficient 0";
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, ReferenceTest, ::testing::ValuesIn(CaseNames()),
                         [](const auto& info) { return info.param; });

// Guards against an empty or partial fixture directory, which would make the
// parameterised test above vacuous.
TEST(ReferenceFixturesTest, CoverEveryRouter) {
  const std::vector<std::string> names = CaseNames();
  EXPECT_GE(names.size(), 20u) << "fixtures in " << FixtureDir().string();
  std::set<std::string> routers;
  for (const std::string& name : names) {
    absl::StatusOr<RouterSpec> spec = ReadSpec(FixtureDir() / (name + ".pbtxt"));
    ASSERT_TRUE(spec.ok()) << spec.status();
    routers.insert(spec->name());
  }
  EXPECT_EQ(routers, (std::set<std::string>{"attention_aware", "expert_choice", "similarity_aware",
                                            "sinkhorn", "token_choice", "unified", "xmoe"}));
}

}  // namespace
}  // namespace moelab
