// The route tool on inputs written here with torch::pickle_save: the binary
// (a data dependency) for a round trip against a direct Route call, its exit
// code and its linked routers; RunRouteTool in process for the error cases
// (each run of the binary pays LibTorch's start-up).

#include <ATen/ATen.h>
#include <caffe2/serialize/inline_container.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <torch/csrc/jit/serialization/pickle.h>
#include <torch/nn/module.h>

#include <cmath>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/router.h"
#include "google/protobuf/text_format.h"
#include "proto/experiment.pb.h"
#include "routers/route_tool.h"

namespace moelab {
namespace {

using ::testing::HasSubstr;

std::string TempDir() { return std::getenv("TEST_TMPDIR"); }

std::string RouteBinary() {
  return absl::StrCat(std::getenv("TEST_SRCDIR"), "/", std::getenv("TEST_WORKSPACE"),
                      "/routers/route");
}

std::string ShellQuote(const std::string& s) {
  std::string quoted = "'";
  for (char c : s) {
    if (c == '\'') {
      quoted += "'\\''";
    } else {
      quoted += c;
    }
  }
  return quoted + "'";
}

struct RunResult {
  int exit_code = -1;
  std::string stderr_text;
};

// Runs route with `args` from the directory the user "typed" it in
// (BUILD_WORKING_DIRECTORY = TEST_TMPDIR), so relative paths land there.
RunResult RunRoute(const std::vector<std::string>& args) {
  const std::string err = TempDir() + "/route_stderr.txt";
  std::string command = absl::StrCat("BUILD_WORKING_DIRECTORY=", ShellQuote(TempDir()), " ",
                                     ShellQuote(RouteBinary()));
  for (const std::string& arg : args) absl::StrAppend(&command, " ", ShellQuote(arg));
  absl::StrAppend(&command, " 2>", ShellQuote(err));
  const int status = std::system(command.c_str());
  RunResult result;
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  std::ifstream in(err);
  result.stderr_text.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  return result;
}

void WriteTensors(const std::string& name,
                  const std::vector<std::pair<std::string, at::Tensor>>& tensors) {
  c10::Dict<std::string, at::Tensor> dict;
  for (const auto& [key, value] : tensors) dict.insert(key, value);
  const std::vector<char> bytes = torch::jit::pickle_save(c10::IValue(dict));
  std::ofstream out(TempDir() + "/" + name, std::ios::binary);
  out.write(bytes.data(), bytes.size());
}

c10::Dict<std::string, at::Tensor> ReadTensors(const std::string& name) {
  std::ifstream in(TempDir() + "/" + name, std::ios::binary);
  std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return c10::impl::toTypedDict<std::string, at::Tensor>(
      torch::jit::pickle_load(bytes).toGenericDict());
}

std::shared_ptr<Router> DirectRouter(const std::string& text, const RouterDims& dims,
                                     const at::Tensor& gate_weight) {
  RouterSpec spec;
  EXPECT_TRUE(google::protobuf::TextFormat::ParseFromString(text, &spec));
  const RouterRegistration* entry = *RouterRegistry().Find(spec.name());
  entry->resolve(&spec, dims);
  auto router = CreateRouter(spec, dims);
  EXPECT_TRUE(router.ok()) << router.status();
  at::NoGradGuard no_grad;
  (*router)->named_parameters()["gate_weight"].copy_(gate_weight);
  return *router;
}

// [T, D] in, [T, E] out: the batch dimension is added and removed again.
TEST(RouteToolTest, UnbatchedRoundTripMatchesDirectRoute) {
  at::manual_seed(21);
  const at::Tensor hidden = at::randn({5, 4});
  const at::Tensor gate = at::randn({3, 4});
  WriteTensors("sim_in.pt", {{"hidden", hidden}, {"gate_weight", gate}});
  const std::string spec =
      "name: \"similarity_aware\" top_k: 2 load_balance_coef: 0.1 "
      "similarity_aware { temperature: 0.5 renormalize: true }";
  RunResult run =
      RunRoute({"--router=" + spec, "--input=sim_in.pt", "--output=sim_out.pt", "--causal_model"});
  ASSERT_EQ(run.exit_code, 0) << run.stderr_text;

  auto out = ReadTensors("sim_out.pt");
  auto router = DirectRouter(spec, {.model_dim = 4, .num_experts = 3, .causal_model = true}, gate);
  EXPECT_TRUE(router->IsCausal(false));  // causal resolved from --causal_model
  RoutingDecision d = router->Route(hidden.unsqueeze(0), {});
  ASSERT_TRUE(out.contains("selected"));
  EXPECT_EQ(out.at("selected").scalar_type(), at::kBool);
  EXPECT_EQ(out.at("logits").sizes(), (std::vector<int64_t>{5, 3}));
  EXPECT_TRUE(at::equal(out.at("selected"), d.selected[0]));
  for (const auto& [key, expected] : std::vector<std::pair<std::string, at::Tensor>>{
           {"logits", d.logits[0]},
           {"gate_probs", d.gate_probs[0]},
           {"aggregated_probs", d.aggregated_probs[0]},
           {"aggregation_self_weight", d.aggregation_self_weight[0]},
           {"aggregation_effective_neighbours", d.aggregation_effective_neighbours[0]},
           {"combine_weights", d.combine_weights[0]},
           {"aux_load_balance", d.aux_losses[0].second}}) {
    ASSERT_TRUE(out.contains(key)) << key;
    EXPECT_TRUE(at::allclose(out.at(key), expected, 0, 1e-6)) << key;
  }
  EXPECT_FALSE(out.contains("dropped"));
  EXPECT_FALSE(out.contains("aggregation_head"));  // attention-aware only
}

// The unknown-name error lists every router linked into the binary: all of
// routers/ must be there.
TEST(RouteToolTest, EveryRouterPluginIsLinked) {
  WriteTensors("plain_in.pt", {{"hidden", at::randn({2, 4})}});
  RunResult run = RunRoute({"--router=name: \"no_such_router\"", "--input=plain_in.pt",
                            "--output=x.pt", "--num_experts=2"});
  EXPECT_EQ(run.exit_code, 1);
  for (const char* name : {"attention_aware", "expert_choice", "hash", "random", "similarity_aware",
                           "sinkhorn", "token_choice", "unified", "xmoe"}) {
    EXPECT_THAT(run.stderr_text, HasSubstr(name));
  }
  EXPECT_THAT(run.stderr_text,
              ::testing::StartsWith("route: router.name: unknown router 'no_such_router'"));
}

// Relative paths are relative to $BUILD_WORKING_DIRECTORY, as under
// `bazel run`.
class RouteToolInProcessTest : public ::testing::Test {
 protected:
  void SetUp() override { setenv("BUILD_WORKING_DIRECTORY", TempDir().c_str(), 1); }
};

TEST_F(RouteToolInProcessTest, BatchedAttentionRoundTripMatchesDirectRoute) {
  at::manual_seed(22);
  const at::Tensor hidden = at::randn({2, 4, 3});
  const at::Tensor gate = at::randn({4, 3});
  RoutingContext context;
  context.attention_probs = at::softmax(at::randn({2, 2, 4, 4}), -1);
  context.attention_values = at::randn({2, 2, 4, 3});
  context.padding_mask = at::ones({2, 4}, at::kBool);
  context.padding_mask[1][3] = false;
  WriteTensors("att_in.pt", {{"hidden", hidden},
                             {"gate_weight", gate},
                             {"attention_probs", context.attention_probs},
                             {"attention_values", context.attention_values},
                             {"padding_mask", context.padding_mask},
                             {"token_ids", at::arange(8).view({2, 4})}});
  const std::string spec = "name: \"attention_aware\" top_k: 1 attention_aware { sigma: 1.5 }";
  absl::Status status = RunRouteTool(
      {.router_text = spec, .input_path = "att_in.pt", .output_path = TempDir() + "/att_out.pt"});
  ASSERT_TRUE(status.ok()) << status;

  auto out = ReadTensors("att_out.pt");
  auto router = DirectRouter(spec, {.model_dim = 3, .num_experts = 4, .num_heads = 2}, gate);
  RoutingDecision d = router->Route(hidden, context);
  EXPECT_EQ(out.at("selected").sizes(), (std::vector<int64_t>{2, 4, 4}));
  EXPECT_TRUE(at::equal(out.at("selected"), d.selected));
  EXPECT_TRUE(at::allclose(out.at("aggregated_probs"), d.aggregated_probs, 0, 1e-6));
  EXPECT_TRUE(at::allclose(out.at("combine_weights"), d.combine_weights, 0, 1e-6));
  ASSERT_TRUE(out.contains("aggregation_head"));
  EXPECT_EQ(out.at("aggregation_head").scalar_type(), at::kLong);
  EXPECT_TRUE(at::equal(out.at("aggregation_head"), d.aggregation_head));
  EXPECT_TRUE(at::allclose(out.at("aggregation_self_weight"), d.aggregation_self_weight, 0, 1e-6));
  EXPECT_TRUE(at::allclose(out.at("aggregation_effective_neighbours"),
                           d.aggregation_effective_neighbours, 0, 1e-6));

  // --training: the routers skip the diagnostics in training, so the file
  // has none of them; the decision itself is the same.
  status = RunRouteTool({.router_text = spec,
                         .input_path = "att_in.pt",
                         .output_path = TempDir() + "/att_train_out.pt",
                         .training = true});
  ASSERT_TRUE(status.ok()) << status;
  auto trained = ReadTensors("att_train_out.pt");
  for (const char* key :
       {"aggregation_self_weight", "aggregation_effective_neighbours", "aggregation_head"}) {
    EXPECT_FALSE(trained.contains(key)) << key;
  }
  EXPECT_TRUE(at::equal(trained.at("selected"), d.selected));
  EXPECT_TRUE(at::allclose(trained.at("aggregated_probs"), d.aggregated_probs, 0, 1e-6));
  EXPECT_TRUE(at::allclose(trained.at("combine_weights"), d.combine_weights, 0, 1e-6));
}

// A copy of `t` with `value` at `index`.
at::Tensor WithValueAt(const at::Tensor& t, const std::vector<int64_t>& index, double value) {
  at::Tensor copy = t.clone();
  at::Tensor element = copy;
  for (int64_t i : index) element = element[i];
  element.fill_(value);
  return copy;
}

struct ErrorCase {
  std::string what;
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  std::string spec;
  std::string message;
  int64_t num_experts = 0;
};

TEST_F(RouteToolInProcessTest, BadInputIsAClearError) {
  at::manual_seed(23);
  const at::Tensor hidden = at::randn({3, 4});
  const at::Tensor gate = at::randn({2, 4});
  const std::string similarity = "name: \"similarity_aware\" top_k: 1";
  const std::vector<ErrorCase> cases = {
      {"unknown key",
       {{"hidden", hidden}, {"gate_weight", gate}, {"gate_bias", gate}},
       similarity,
       "--input: key 'gate_bias' is neither a router input (attention_probs, "
       "attention_values, hidden, padding_mask, token_ids) nor a parameter of "
       "router 'similarity_aware' (its parameters: gate_weight)"},
      {"missing parameter",
       {{"hidden", hidden}},
       similarity,
       "parameter 'gate_weight' [2, 4] is missing from the file",
       2},
      {"shape mismatch",
       {{"hidden", hidden}, {"gate_weight", at::randn({2, 5})}},
       similarity,
       "key 'gate_weight' has shape [2, 5] but router 'similarity_aware' needs [2, 4]"},
      {"missing FULL parameter",
       {{"hidden", hidden}, {"gate_weight", gate}},
       "name: \"similarity_aware\" top_k: 1 similarity_aware { projection: FULL }",
       "parameter 'similarity_weight' [4, 4] is missing"},
      {"no hidden", {{"gate_weight", gate}}, similarity, "key 'hidden' is missing"},
      {"integer hidden",
       {{"hidden", at::ones({3, 4}, at::kLong)}, {"gate_weight", gate}},
       similarity,
       "key 'hidden' must be a [T, D] or [B, T, D] float tensor"},
      {"bad option",
       {{"hidden", hidden}, {"gate_weight", gate}},
       "name: \"similarity_aware\" similarity_aware { temperature: -1 }",
       "router.similarity_aware.temperature: must be > 0, got -1"},
      {"top_k too large",
       {{"hidden", hidden}, {"gate_weight", gate}},
       "name: \"similarity_aware\" top_k: 3",
       "router.top_k: must be <= the number"},
      {"text format",
       {{"hidden", hidden}, {"gate_weight", gate}},
       "name: \"similarity_aware\" top_kk: 1",
       "--router: not a RouterSpec in text format: 1:"},
      {"unknown router",
       {{"hidden", hidden}, {"gate_weight", gate}},
       "name: \"similarity\"",
       "router.name: unknown router 'similarity'"},
      {"no attention",
       {{"hidden", hidden}, {"gate_weight", gate}},
       "name: \"attention_aware\" top_k: 1",
       "the file needs 'attention_probs' [H, T, T] and 'attention_values' [H, T, D]"},
      {"attention shape",
       {{"hidden", hidden},
        {"gate_weight", gate},
        {"attention_probs", at::ones({2, 3, 2})},
        {"attention_values", at::ones({2, 3, 4})}},
       "name: \"attention_aware\" top_k: 1",
       "key 'attention_probs' must be [H, T, T] = [2, 3, 3], got [2, 3, 2]"},
      {"attention values shape",
       {{"hidden", hidden.unsqueeze(0)},
        {"gate_weight", gate},
        {"attention_probs", at::ones({1, 2, 3, 3})},
        {"attention_values", at::ones({1, 2, 3, 5})}},
       "name: \"attention_aware\" top_k: 1",
       "key 'attention_values' must be [B, H, T, D] = [1, 2, 3, 4], got [1, 2, 3, 5]"},
      {"half the attention",
       {{"hidden", hidden}, {"gate_weight", gate}, {"attention_probs", at::ones({2, 3, 3})}},
       "name: \"attention_aware\" top_k: 1",
       "go together"},
      {"experts disagree",
       {{"hidden", hidden}, {"gate_weight", gate}},
       similarity,
       "--num_experts: 3 disagrees",
       3},
      {"no experts",
       {{"hidden", hidden}},
       similarity,
       "--num_experts: cannot tell the number of experts"},
      {"padding dtype",
       {{"hidden", hidden}, {"gate_weight", gate}, {"padding_mask", at::ones({3})}},
       similarity,
       "'padding_mask' must be bool"},
      {"padding shape",
       {{"hidden", hidden}, {"gate_weight", gate}, {"padding_mask", at::ones({1, 3}, at::kBool)}},
       similarity,
       "key 'padding_mask' must be [T] = [3], got [1, 3]"},
      {"token ids dtype",
       {{"hidden", hidden}, {"gate_weight", gate}, {"token_ids", at::ones({3})}},
       similarity,
       "'token_ids' must hold integers"},
      {"nan in hidden",
       {{"hidden", WithValueAt(hidden.unsqueeze(0).repeat({2, 1, 1}), {1, 2, 3}, NAN)},
        {"gate_weight", gate}},
       similarity,
       "--input: key 'hidden' [2, 3, 4] holds nan at [1, 2, 3] (its first "
       "non-finite element); expected finite numbers"},
      {"inf in a parameter",
       {{"hidden", hidden}, {"gate_weight", WithValueAt(gate, {1, 0}, INFINITY)}},
       similarity,
       "--input: key 'gate_weight' [2, 4] holds inf at [1, 0] (its first "
       "non-finite element)"},
      {"-inf in attention",
       {{"hidden", hidden},
        {"gate_weight", gate},
        {"attention_probs", WithValueAt(at::ones({2, 3, 3}), {0, 2, 1}, -INFINITY)},
        {"attention_values", at::ones({2, 3, 4})}},
       "name: \"attention_aware\" top_k: 1",
       "--input: key 'attention_probs' [2, 3, 3] holds -inf at [0, 2, 1]"},
  };
  for (const ErrorCase& c : cases) {
    WriteTensors("bad_in.pt", c.tensors);
    absl::Status status = RunRouteTool({.router_text = c.spec,
                                        .input_path = "bad_in.pt",
                                        .output_path = "bad_out.pt",
                                        .num_experts = c.num_experts});
    EXPECT_FALSE(status.ok()) << c.what;
    EXPECT_THAT(std::string(status.message()), HasSubstr(c.message)) << c.what;
  }

  // Files that are not there or not a dict of tensors; missing flags.
  auto run = [](const std::string& input, const std::string& router) {
    return RunRouteTool({.router_text = router, .input_path = input, .output_path = "o.pt"});
  };
  EXPECT_THAT(std::string(run("nowhere.pt", similarity).message()),
              HasSubstr("--input: cannot open '" + TempDir() + "/nowhere.pt'"));
  std::ofstream(TempDir() + "/garbage.pt") << "not a pickle";
  EXPECT_THAT(std::string(run("garbage.pt", similarity).message()),
              HasSubstr("is not a torch.save file"));
  const std::vector<char> list_bytes =
      torch::jit::pickle_save(c10::IValue(c10::List<at::Tensor>({hidden})));
  std::ofstream(TempDir() + "/list.pt", std::ios::binary)
      .write(list_bytes.data(), list_bytes.size());
  EXPECT_THAT(std::string(run("list.pt", similarity).message()),
              HasSubstr("expected a dict of tensors"));
  EXPECT_THAT(std::string(run("list.pt", "").message()), HasSubstr("--router: required"));
  EXPECT_THAT(std::string(run("", similarity).message()), HasSubstr("--input: required"));
  WriteTensors("ok_in.pt", {{"hidden", hidden}, {"gate_weight", gate}});
  EXPECT_THAT(std::string(RunRouteTool({.router_text = similarity,
                                        .input_path = "ok_in.pt",
                                        .output_path = "no_such_dir/out.pt"})
                              .message()),
              HasSubstr("--output: cannot write"));
}

// What Python 1.13's `torch.save({'hidden': torch.zeros(2, 3)}, f)` writes
// as data.pkl, opcode by opcode (pickletools.dis). A dict of one item ends in
// SETITEM ('s') with no MARK, which LibTorch's own unpickler does not know
// (it once refused such a file as "not a torch.save file").
constexpr char kPythonOneKeyDictPickle[] =
    "\x80\x02"  // PROTO 2
    "}"
    "q\x00"  // EMPTY_DICT, BINPUT 0
    "X\x06\x00\x00\x00"
    "hidden"
    "q\x01"  // BINUNICODE 'hidden'
    "c"
    "torch._utils\n_rebuild_tensor_v2\n"
    "q\x02"  // GLOBAL
    "("
    "("  // MARK, MARK
    "X\x07\x00\x00\x00"
    "storage"
    "q\x03"
    "c"
    "torch\nFloatStorage\n"
    "q\x04"
    "X\x01\x00\x00\x00"
    "0"
    "q\x05"  // storage key '0'
    "X\x03\x00\x00\x00"
    "cpu"
    "q\x06"
    "K\x06"
    "t"
    "q\x07"  // numel 6, TUPLE
    "Q"      // BINPERSID
    "K\x00"
    "K\x02"
    "K\x03"
    "\x86"
    "q\x08"  // offset 0, size (2, 3)
    "K\x03"
    "K\x01"
    "\x86"
    "q\x09"  // stride (3, 1)
    "\x89"   // requires_grad False
    "c"
    "collections\nOrderedDict\n"
    "q\x0a"
    ")"
    "R"
    "q\x0b"
    "t"
    "q\x0c"
    "R"
    "q\x0d"  // TUPLE, REDUCE
    "s"      // SETITEM
    ".";     // STOP

// A torch.save zip archive as Python writes it: data.pkl above and the
// storage of `hidden` ([2, 3] float) as data/0.
void WritePythonOneKeyDict(const std::string& name, const at::Tensor& hidden) {
  ASSERT_EQ(hidden.sizes(), (std::vector<int64_t>{2, 3}));
  const at::Tensor storage = hidden.to(at::kFloat).contiguous();
  std::ofstream out(TempDir() + "/" + name, std::ios::binary);
  caffe2::serialize::PyTorchStreamWriter writer([&out](const void* data, size_t size) {
    out.write(static_cast<const char*>(data), size);
    return size;
  });
  writer.writeRecord("data.pkl", kPythonOneKeyDictPickle, sizeof(kPythonOneKeyDictPickle) - 1);
  writer.writeRecord("data/0", storage.data_ptr(), storage.nbytes());
  writer.writeEndOfFile();
}

// Through the binary, which links every router (`random` takes no
// parameters, so `hidden` alone is a complete input).
TEST(RouteToolTest, PythonOneKeyDictIsRead) {
  WritePythonOneKeyDict("one_key.pt", at::arange(6, at::kFloat).view({2, 3}));
  RunResult run = RunRoute({"--router=name: \"random\" top_k: 1", "--input=one_key.pt",
                            "--output=one_key_out.pt", "--num_experts=4"});
  ASSERT_EQ(run.exit_code, 0) << run.stderr_text;
  auto out = ReadTensors("one_key_out.pt");
  EXPECT_EQ(out.at("selected").sizes(), (std::vector<int64_t>{2, 4}));
  EXPECT_TRUE(at::equal(out.at("selected").sum(-1), at::ones({2}, at::kLong)));
}

// The values and shape come through: a NaN is reported where it was put.
TEST_F(RouteToolInProcessTest, PythonOneKeyDictValuesAreRead) {
  WritePythonOneKeyDict("one_key_nan.pt",
                        WithValueAt(at::arange(6, at::kFloat).view({2, 3}), {1, 2}, NAN));
  absl::Status status = RunRouteTool({.router_text = "name: \"similarity_aware\" top_k: 1",
                                      .input_path = "one_key_nan.pt",
                                      .output_path = "one_key_nan_out.pt",
                                      .num_experts = 4});
  EXPECT_EQ(status.message(),
            "--input: key 'hidden' [2, 3] holds nan at [1, 2] (its first "
            "non-finite element); expected finite numbers");
}

// A non-finite input through the binary: exit code 1, one line, no output.
TEST(RouteToolTest, NonFiniteInputExitsWithOneLine) {
  at::manual_seed(24);
  WriteTensors("inf_in.pt", {{"hidden", WithValueAt(at::randn({3, 4}), {0, 1}, INFINITY)},
                             {"gate_weight", at::randn({2, 4})}});
  RunResult run = RunRoute(
      {"--router=name: \"token_choice\" top_k: 1", "--input=inf_in.pt", "--output=inf_out.pt"});
  EXPECT_EQ(run.exit_code, 1);
  EXPECT_EQ(run.stderr_text,
            "route: --input: key 'hidden' [3, 4] holds inf at [0, 1] (its "
            "first non-finite element); expected finite numbers\n");
  EXPECT_FALSE(std::ifstream(TempDir() + "/inf_out.pt").good());
}

}  // namespace
}  // namespace moelab
