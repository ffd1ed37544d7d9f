#include "routers/route_tool.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>
#include <caffe2/serialize/inline_container.h>
#include <torch/csrc/jit/serialization/pickle.h>
#include <torch/csrc/jit/serialization/unpickler.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <iterator>
#include <memory>
#include <set>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "core/paths.h"
#include "core/router.h"
#include "google/protobuf/io/tokenizer.h"
#include "google/protobuf/text_format.h"
#include "proto/experiment.pb.h"

namespace moelab {
namespace {

// Keys of the input file that are router inputs, not parameters.
const std::set<std::string>& InputKeys() {
  static const auto* keys = new std::set<std::string>{"hidden", "token_ids", "padding_mask",
                                                      "attention_probs", "attention_values"};
  return *keys;
}

std::string ShapeString(const at::Tensor& t) {
  return absl::StrCat("[", absl::StrJoin(t.sizes(), ", "), "]");
}

class CollectErrors : public google::protobuf::io::ErrorCollector {
 public:
  void AddError(int line, int column, const std::string& message) override {
    errors_.push_back(absl::StrCat(line + 1, ":", column + 1, ": ", message));
  }
  void AddWarning(int line, int column, const std::string& message) override {
    AddError(line, column, message);
  }
  std::string Joined() const { return absl::StrJoin(errors_, "; "); }

 private:
  std::vector<std::string> errors_;
};

absl::StatusOr<RouterSpec> ParseRouterSpec(const std::string& text) {
  if (text.empty()) {
    return absl::InvalidArgumentError(
        "--router: required, a RouterSpec in text format such as "
        "'name: \"token_choice\" top_k: 2'");
  }
  RouterSpec spec;
  CollectErrors errors;
  google::protobuf::TextFormat::Parser parser;
  parser.RecordErrorsTo(&errors);
  if (!parser.ParseFromString(text, &spec)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--router: not a RouterSpec in text format: ", errors.Joined()));
  }
  if (!spec.has_top_k()) spec.set_top_k(2);  // core's default (core/spec.cc)
  return spec;
}

// Python's pickler writes a dict of one item as EMPTY_DICT, the key, the value
// and SETITEM ('s'); LibTorch 1.13's unpickler knows only the batched form,
// MARK ('(') ... SETITEMS ('u'), which Python uses for two items or more. This
// rewrites a top-level one-item dict into the batched form, leaving any other
// stream as it is. Python writes the first batch of a dict with MARK unless
// the dict has exactly one item, so "no MARK after the dict's memo entry and
// SETITEM last" identifies that case; the memo indices do not change.
std::string BatchSingleItemDict(std::string pickle) {
  size_t i = 0;
  if (pickle.size() >= 2 && pickle[0] == '\x80') i = 2;       // PROTO n
  if (i >= pickle.size() || pickle[i] != '}') return pickle;  // EMPTY_DICT
  ++i;
  if (i < pickle.size() && pickle[i] == 'q') {  // BINPUT n
    i += 2;
  } else if (i < pickle.size() && pickle[i] == 'r') {  // LONG_BINPUT nnnn
    i += 5;
  } else if (i < pickle.size() && pickle[i] == '\x94') {  // MEMOIZE
    i += 1;
  }
  // The key must follow; "s." (SETITEM, STOP) must end the stream.
  if (i + 2 >= pickle.size() || pickle[i] == '(' || pickle[i] == '.' ||
      pickle.compare(pickle.size() - 2, 2, "s.") != 0) {
    return pickle;
  }
  pickle[pickle.size() - 2] = 'u';  // SETITEMS
  pickle.insert(i, 1, '(');         // MARK
  return pickle;
}

// The object of a torch.save zip archive (Python's or torch::pickle_save's),
// read as torch::jit::pickle_load does but accepting a one-item dict. Throws
// c10::Error on a malformed archive or pickle.
c10::IValue UnpickleZipArchive(const std::string& path) {
  caffe2::serialize::PyTorchStreamReader archive(path);
  at::DataPtr pickle_data;
  size_t pickle_size = 0;
  std::tie(pickle_data, pickle_size) = archive.getRecord("data.pkl");
  const std::string pickle =
      BatchSingleItemDict(std::string(static_cast<const char*>(pickle_data.get()), pickle_size));
  size_t position = 0;
  auto read = [&](char* buffer, size_t length) -> size_t {
    const size_t n = std::min(length, pickle.size() - position);
    std::memcpy(buffer, pickle.data() + position, n);
    position += n;
    return n;
  };
  auto read_record = [&archive](const std::string& name) {
    return std::get<0>(archive.getRecord("data/" + name));
  };
  torch::jit::Unpickler unpickler(read, /*type_resolver=*/nullptr,
                                  /*obj_loader=*/nullptr, read_record,
                                  /*device=*/c10::nullopt);
  unpickler.set_version(archive.version());
  return unpickler.parse_ivalue();
}

absl::StatusOr<std::vector<std::pair<std::string, at::Tensor>>> ReadInput(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::NotFoundError(absl::StrCat("--input: cannot open '", path, "'"));
  }
  std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const bool zip = bytes.size() >= 4 && bytes[0] == 'P' && bytes[1] == 'K' && bytes[2] == '\x03' &&
                   bytes[3] == '\x04';
  c10::IValue value;
  try {
    value = zip ? UnpickleZipArchive(path) : torch::jit::pickle_load(bytes);
  } catch (const c10::Error& e) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--input: '", path, "' is not a torch.save file: ", e.what_without_backtrace()));
  }
  if (!value.isGenericDict()) {
    return absl::InvalidArgumentError(absl::StrCat("--input: '", path, "' holds a ",
                                                   value.tagKind(),
                                                   ", expected a dict of tensors keyed by name"));
  }
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  for (const auto& item : value.toGenericDict()) {
    if (!item.key().isString()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--input: '", path, "' has a key that is not a string (", item.key().tagKind(), ")"));
    }
    const std::string key = item.key().toStringRef();
    if (!item.value().isTensor()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--input: key '", key, "' holds a ", item.value().tagKind(), ", expected a tensor"));
    }
    tensors.emplace_back(key, item.value().toTensor());
  }
  return tensors;
}

// Every floating-point tensor of the file must hold finite numbers: a NaN or
// an infinity would give arbitrary selections. The error names the key, the
// first non-finite element's index in the file's shape and its value.
absl::Status CheckFinite(const std::vector<std::pair<std::string, at::Tensor>>& tensors) {
  for (const auto& [key, tensor] : tensors) {
    if (!tensor.is_floating_point() || tensor.numel() == 0) continue;
    const at::Tensor flat = tensor.reshape({-1});
    const at::Tensor bad = at::logical_not(at::isfinite(flat)).nonzero();
    if (bad.numel() == 0) continue;
    int64_t offset = bad[0][0].item<int64_t>();
    const double value = flat[offset].item<double>();
    std::vector<int64_t> index(tensor.dim());
    for (int64_t d = tensor.dim() - 1; d >= 0; --d) {
      index[d] = offset % tensor.size(d);
      offset /= tensor.size(d);
    }
    return absl::InvalidArgumentError(absl::StrCat(
        "--input: key '", key, "' ", ShapeString(tensor), " holds ",
        std::isnan(value) ? "nan" : (value > 0 ? "inf" : "-inf"), " at [",
        absl::StrJoin(index, ", "), "] (its first non-finite element); expected finite numbers"));
  }
  return absl::OkStatus();
}

// The router's inputs from the file, batched ([T, ...] gains B = 1).
struct RouteInputs {
  at::Tensor hidden;  // [B, T, D] float32
  bool unbatched = false;
  RoutingContext context;
  // Everything else in the file, by key.
  std::vector<std::pair<std::string, at::Tensor>> parameters;
};

// `t` as given in the file must be `expected` ([T] shapes lack the batch
// dimension when hidden does); `layout` names the dimensions, e.g. "[B, T]".
absl::Status CheckShape(absl::string_view key, const at::Tensor& t,
                        const std::vector<int64_t>& expected, absl::string_view layout) {
  if (t.sizes().vec() != expected) {
    return absl::InvalidArgumentError(absl::StrCat("--input: key '", key, "' must be ", layout,
                                                   " = [", absl::StrJoin(expected, ", "), "], got ",
                                                   ShapeString(t)));
  }
  return absl::OkStatus();
}

absl::StatusOr<RouteInputs> SplitInputs(std::vector<std::pair<std::string, at::Tensor>> tensors) {
  RouteInputs inputs;
  at::Tensor hidden, token_ids, padding_mask, attention_probs, attention_values;
  for (auto& [key, tensor] : tensors) {
    if (key == "hidden") {
      hidden = tensor;
    } else if (key == "token_ids") {
      token_ids = tensor;
    } else if (key == "padding_mask") {
      padding_mask = tensor;
    } else if (key == "attention_probs") {
      attention_probs = tensor;
    } else if (key == "attention_values") {
      attention_values = tensor;
    } else {
      inputs.parameters.emplace_back(key, tensor);
    }
  }
  if (!hidden.defined()) {
    return absl::InvalidArgumentError(
        "--input: key 'hidden' is missing ([T, D] or [B, T, D] float)");
  }
  if (!hidden.is_floating_point() || (hidden.dim() != 2 && hidden.dim() != 3)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--input: key 'hidden' must be a [T, D] or [B, T, D] float "
                     "tensor, got ",
                     ShapeString(hidden), " ", hidden.scalar_type()));
  }
  if (hidden.numel() == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("--input: key 'hidden' is empty: ", ShapeString(hidden)));
  }
  inputs.unbatched = hidden.dim() == 2;
  const int64_t tokens = hidden.size(-2), dim = hidden.size(-1);
  // The file's shapes: [T, ...] when hidden is [T, D], [B, T, ...] otherwise.
  std::vector<int64_t> lead;
  if (!inputs.unbatched) lead.push_back(hidden.size(0));
  const std::string b = inputs.unbatched ? "" : "B, ";
  auto shape = [&](std::vector<int64_t> rest) {
    std::vector<int64_t> full = lead;
    full.insert(full.end(), rest.begin(), rest.end());
    return full;
  };
  // Unbatched inputs gain the batch dimension of size 1 in front.
  auto batched = [&](const at::Tensor& t) { return inputs.unbatched ? t.unsqueeze(0) : t; };
  inputs.hidden = batched(hidden).to(at::kFloat).contiguous();

  if (token_ids.defined()) {
    if (token_ids.is_floating_point() || token_ids.is_complex() ||
        token_ids.scalar_type() == at::kBool) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--input: key 'token_ids' must hold integers, got ", token_ids.scalar_type()));
    }
    if (absl::Status s =
            CheckShape("token_ids", token_ids, shape({tokens}), absl::StrCat("[", b, "T]"));
        !s.ok()) {
      return s;
    }
    inputs.context.token_ids = batched(token_ids).to(at::kLong);
  }
  if (padding_mask.defined()) {
    if (padding_mask.is_floating_point() || padding_mask.is_complex()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--input: key 'padding_mask' must be bool (true at real tokens), got ",
                       padding_mask.scalar_type()));
    }
    if (absl::Status s =
            CheckShape("padding_mask", padding_mask, shape({tokens}), absl::StrCat("[", b, "T]"));
        !s.ok()) {
      return s;
    }
    inputs.context.padding_mask = batched(padding_mask).to(at::kBool);
  }
  if (attention_probs.defined() != attention_values.defined()) {
    return absl::InvalidArgumentError(
        "--input: 'attention_probs' and 'attention_values' go together; the "
        "file has only one of them");
  }
  if (attention_probs.defined()) {
    if (!attention_probs.is_floating_point() || !attention_values.is_floating_point()) {
      return absl::InvalidArgumentError(
          "--input: 'attention_probs' and 'attention_values' must be float tensors");
    }
    if (attention_probs.dim() != static_cast<int64_t>(lead.size()) + 3 ||
        attention_probs.size(-3) == 0) {
      return absl::InvalidArgumentError(absl::StrCat("--input: key 'attention_probs' must be [", b,
                                                     "H, T, T] with H >= 1, got ",
                                                     ShapeString(attention_probs)));
    }
    const int64_t heads = attention_probs.size(-3);
    if (absl::Status s =
            CheckShape("attention_probs", attention_probs, shape({heads, tokens, tokens}),
                       absl::StrCat("[", b, "H, T, T]"));
        !s.ok()) {
      return s;
    }
    if (absl::Status s = CheckShape("attention_values", attention_values,
                                    shape({heads, tokens, dim}), absl::StrCat("[", b, "H, T, D]"));
        !s.ok()) {
      return s;
    }
    inputs.context.attention_probs = batched(attention_probs).to(at::kFloat);
    inputs.context.attention_values = batched(attention_values).to(at::kFloat);
  }
  return inputs;
}

absl::StatusOr<int64_t> NumExperts(const RouteInputs& inputs, int64_t flag) {
  if (flag < 0) {
    return absl::InvalidArgumentError(absl::StrCat("--num_experts: must be >= 1, got ", flag));
  }
  int64_t from_gate = 0;
  for (const auto& [key, tensor] : inputs.parameters) {
    if (key == "gate_weight" && tensor.dim() == 2) from_gate = tensor.size(0);
  }
  if (flag > 0 && from_gate > 0 && flag != from_gate) {
    return absl::InvalidArgumentError(
        absl::StrCat("--num_experts: ", flag, " disagrees with the input's gate_weight, ",
                     "which has ", from_gate, " rows (one per expert)"));
  }
  const int64_t experts = flag > 0 ? flag : from_gate;
  if (experts < 1) {
    return absl::InvalidArgumentError(
        "--num_experts: cannot tell the number of experts; pass --num_experts "
        "or a gate_weight [E, D] in the input");
  }
  return experts;
}

// Copies the file's parameters into the router; every parameter must come
// from the file, so that results never depend on a random initialisation.
absl::Status LoadParameters(const std::string& router_name, Router& router,
                            const RouteInputs& inputs) {
  auto parameters = router.named_parameters(/*recurse=*/true);
  const std::string known =
      parameters.is_empty() ? std::string("none") : absl::StrJoin(parameters.keys(), ", ");
  std::set<std::string> loaded;
  at::NoGradGuard no_grad;
  for (const auto& [key, value] : inputs.parameters) {
    torch::Tensor* parameter = parameters.find(key);
    if (parameter == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--input: key '", key, "' is neither a router input (", absl::StrJoin(InputKeys(), ", "),
          ") nor a parameter of router '", router_name, "' (its parameters: ", known, ")"));
    }
    if (value.sizes() != parameter->sizes()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--input: key '", key, "' has shape ", ShapeString(value), " but router '",
                       router_name, "' needs ", ShapeString(*parameter)));
    }
    if (value.is_complex()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--input: key '", key, "' must be real, got ", value.scalar_type()));
    }
    parameter->copy_(value);
    loaded.insert(key);
  }
  for (const auto& parameter : parameters) {
    if (loaded.count(parameter.key()) == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("--input: router '", router_name, "' parameter '", parameter.key(), "' ",
                       ShapeString(parameter.value()),
                       " is missing from the file (results must not depend on a random "
                       "initialisation)"));
    }
  }
  return absl::OkStatus();
}

absl::Status WriteDecision(const RoutingDecision& decision, bool unbatched,
                           const std::string& path) {
  c10::Dict<std::string, at::Tensor> out;
  auto put = [&](const std::string& key, const at::Tensor& t) {
    if (!t.defined()) return;
    at::Tensor value = t.detach();
    if (unbatched && value.dim() > 0) value = value.squeeze(0);
    out.insert(key, value.contiguous());
  };
  put("logits", decision.logits);
  put("gate_probs", decision.gate_probs);
  put("aggregated_probs", decision.aggregated_probs);
  put("selected", decision.selected.to(at::kBool));
  put("combine_weights", decision.combine_weights);
  if (decision.dropped.defined()) put("dropped", decision.dropped.to(at::kBool));
  put("aggregation_self_weight", decision.aggregation_self_weight);
  put("aggregation_effective_neighbours", decision.aggregation_effective_neighbours);
  put("aggregation_head", decision.aggregation_head);
  for (const auto& [name, loss] : decision.aux_losses) {
    put(absl::StrCat("aux_", name), loss);
  }
  const std::vector<char> bytes = torch::jit::pickle_save(c10::IValue(out));
  std::ofstream file(path, std::ios::binary | std::ios::trunc);
  if (!file) {
    return absl::PermissionDeniedError(absl::StrCat("--output: cannot write '", path, "'"));
  }
  file.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  file.close();
  if (!file) {
    return absl::DataLossError(absl::StrCat("--output: failed writing '", path, "'"));
  }
  return absl::OkStatus();
}

absl::Status Run(const RouteToolOptions& options) {
  absl::StatusOr<RouterSpec> spec = ParseRouterSpec(options.router_text);
  if (!spec.ok()) return spec.status();
  if (options.input_path.empty()) {
    return absl::InvalidArgumentError("--input: required, a torch.save'd dict");
  }
  if (options.output_path.empty()) {
    return absl::InvalidArgumentError("--output: required");
  }
  absl::StatusOr<const RouterRegistration*> registration = RouterRegistry().Find(spec->name());
  if (!registration.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("router.name: ", registration.status().message()));
  }

  const std::string input_path = ResolveUserPath(options.input_path);
  auto tensors = ReadInput(input_path);
  if (!tensors.ok()) return tensors.status();
  if (absl::Status s = CheckFinite(*tensors); !s.ok()) return s;
  absl::StatusOr<RouteInputs> inputs = SplitInputs(*std::move(tensors));
  if (!inputs.ok()) return inputs.status();
  absl::StatusOr<int64_t> experts = NumExperts(*inputs, options.num_experts);
  if (!experts.ok()) return experts.status();

  const RouterDims dims{.model_dim = inputs->hidden.size(2),
                        .num_experts = *experts,
                        .num_heads = inputs->context.attention_probs.defined()
                                         ? inputs->context.attention_probs.size(1)
                                         : 0,
                        .causal_model = options.causal_model};
  ResolveRouterSpec(**registration, &*spec, dims);
  if (absl::Status s = CheckTopK(*spec, **registration, dims); !s.ok()) return s;

  at::manual_seed(options.seed);
  absl::StatusOr<std::shared_ptr<Router>> router = CreateRouter(*spec, dims);
  if (!router.ok()) return router.status();
  if (absl::Status s = LoadParameters(spec->name(), **router, *inputs); !s.ok()) {
    return s;
  }
  if ((*router)->NeedsAttention() && !inputs->context.attention_probs.defined()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--input: router '", spec->name(),
                     "' reads the attention layer: the file needs 'attention_probs' [",
                     inputs->unbatched ? "" : "B, ", "H, T, T] and 'attention_values' [",
                     inputs->unbatched ? "" : "B, ", "H, T, D]"));
  }

  (*router)->train(options.training);
  inputs->context.training = options.training;
  inputs->context.causal = dims.causal_model;
  RoutingDecision decision;
  {
    at::NoGradGuard no_grad;
    decision = (*router)->Route(inputs->hidden, inputs->context);
  }
  return WriteDecision(decision, inputs->unbatched, ResolveUserPath(options.output_path));
}

}  // namespace

absl::Status RunRouteTool(const RouteToolOptions& options) {
  try {
    return Run(options);
  } catch (const c10::Error& e) {
    return absl::InternalError(e.what_without_backtrace());
  } catch (const std::exception& e) {
    return absl::InternalError(e.what());
  }
}

}  // namespace moelab
