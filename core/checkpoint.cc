#include "core/checkpoint.h"

#include <cstdio>
#include <exception>

#include <ATen/ATen.h>
#include <torch/serialize/input-archive.h>
#include <torch/utils.h>
#include <torch/serialize/output-archive.h>

#include "absl/strings/str_cat.h"
#include "core/atomic_file.h"

namespace moelab {
namespace {

constexpr char kFormat[] = "moelab-checkpoint-v1";

std::string WeightKey(const std::string& name) { return "weights/" + name; }

void WriteWeights(torch::serialize::OutputArchive& archive, Model& model) {
  for (const auto& item : model.named_parameters()) {
    archive.write(WeightKey(item.key()), item.value().detach().cpu());
  }
  for (const auto& item : model.named_buffers()) {
    archive.write(WeightKey(item.key()), item.value().detach().cpu(),
                  /*is_buffer=*/true);
  }
}

// Copies archived tensors into the model's parameters and buffers by name.
absl::Status ReadWeights(torch::serialize::InputArchive& archive, Model& model,
                         const std::string& path,
                         std::vector<std::string>* not_loaded) {
  torch::NoGradGuard no_grad;
  auto load = [&](const std::string& name, at::Tensor& target,
                  bool is_buffer) -> absl::Status {
    at::Tensor saved;
    if (!archive.try_read(WeightKey(name), saved, is_buffer)) {
      if (not_loaded == nullptr) {
        return absl::DataLossError(absl::StrCat(
            "checkpoint '", path, "' has no tensor for '", name,
            "' (was it written by a different spec?)"));
      }
      not_loaded->push_back(name);
      return absl::OkStatus();
    }
    if (saved.sizes() != target.sizes()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "checkpoint '", path, "': '", name, "' has shape ",
          c10::str(saved.sizes()), ", the model expects ",
          c10::str(target.sizes())));
    }
    target.copy_(saved);
    return absl::OkStatus();
  };
  for (auto& item : model.named_parameters()) {
    if (absl::Status s = load(item.key(), item.value(), false); !s.ok()) return s;
  }
  for (auto& item : model.named_buffers()) {
    if (absl::Status s = load(item.key(), item.value(), true); !s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::Status OpenArchive(const std::string& path,
                         torch::serialize::InputArchive& archive) {
  try {
    archive.load_from(path);
    c10::IValue format;
    if (!archive.try_read("format", format) || !format.isString() ||
        format.toStringRef() != kFormat) {
      return absl::DataLossError(
          absl::StrCat("'", path, "' is not a moelab checkpoint"));
    }
  } catch (const std::exception& e) {
    return absl::DataLossError(
        absl::StrCat("cannot read checkpoint '", path, "': ", e.what()));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status SaveCheckpoint(const std::string& path, Model& model,
                            torch::optim::Optimizer& optimizer,
                            const TrainingState& state) {
  const std::string temporary = TemporaryPathFor(path);
  try {
    torch::serialize::OutputArchive archive;
    archive.write("format", c10::IValue(std::string(kFormat)));
    archive.write("epochs_done", c10::IValue(int64_t{state.epochs_done}));
    archive.write("step", c10::IValue(state.step));
    archive.write("result", c10::IValue(state.result.SerializeAsString()));
    archive.write("rng_state", state.rng_state);
    archive.write("probe_layers", c10::IValue(int64_t(state.probe.size())));
    for (size_t i = 0; i < state.probe.size(); ++i) {
      archive.write(absl::StrCat("probe/", i, "/top1"), state.probe[i].top1);
      archive.write(absl::StrCat("probe/", i, "/selected"),
                    state.probe[i].selected);
      if (state.probe[i].head.defined()) {
        archive.write(absl::StrCat("probe/", i, "/head"), state.probe[i].head);
      }
    }
    WriteWeights(archive, model);
    torch::serialize::OutputArchive optimizer_archive;
    optimizer.save(optimizer_archive);
    archive.write("optimizer", optimizer_archive);
    archive.save_to(temporary);
  } catch (const std::exception& e) {
    std::remove(temporary.c_str());
    return absl::InternalError(
        absl::StrCat("cannot write checkpoint '", path, "': ", e.what()));
  }
  return CommitAtomicFile(temporary, path);
}

absl::Status LoadCheckpoint(const std::string& path, Model& model,
                            torch::optim::Optimizer& optimizer,
                            TrainingState* state) {
  torch::serialize::InputArchive archive;
  if (absl::Status s = OpenArchive(path, archive); !s.ok()) return s;
  try {
    c10::IValue value;
    archive.read("epochs_done", value);
    state->epochs_done = static_cast<int32_t>(value.toInt());
    archive.read("step", value);
    state->step = value.toInt();
    archive.read("result", value);
    if (!state->result.ParseFromString(value.toStringRef())) {
      return absl::DataLossError(
          absl::StrCat("checkpoint '", path, "': corrupt run record"));
    }
    archive.read("rng_state", state->rng_state);
    archive.read("probe_layers", value);
    state->probe.assign(value.toInt(), ProbeAssignment{});
    for (size_t i = 0; i < state->probe.size(); ++i) {
      archive.read(absl::StrCat("probe/", i, "/top1"), state->probe[i].top1);
      archive.read(absl::StrCat("probe/", i, "/selected"),
                   state->probe[i].selected);
      // Only routers that choose an attention head have one.
      at::Tensor head;
      if (archive.try_read(absl::StrCat("probe/", i, "/head"), head)) {
        state->probe[i].head = head;
      }
    }
    if (absl::Status s = ReadWeights(archive, model, path, nullptr); !s.ok()) {
      return s;
    }
    torch::serialize::InputArchive optimizer_archive;
    archive.read("optimizer", optimizer_archive);
    optimizer.load(optimizer_archive);
  } catch (const std::exception& e) {
    return absl::DataLossError(
        absl::StrCat("cannot read checkpoint '", path, "': ", e.what()));
  }
  return absl::OkStatus();
}

absl::Status LoadWeights(const std::string& path, Model& model,
                         std::vector<std::string>* not_loaded) {
  torch::serialize::InputArchive archive;
  if (absl::Status s = OpenArchive(path, archive); !s.ok()) return s;
  try {
    return ReadWeights(archive, model, path, not_loaded);
  } catch (const std::exception& e) {
    return absl::DataLossError(
        absl::StrCat("cannot read checkpoint '", path, "': ", e.what()));
  }
}

}  // namespace moelab
