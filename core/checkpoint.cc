#include "core/checkpoint.h"

#include <ATen/ATen.h>
#include <c10/util/C++17.h>
#include <c10/util/Exception.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <torch/serialize/input-archive.h>
#include <torch/serialize/output-archive.h>
#include <torch/utils.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <exception>
#include <filesystem>
#include <functional>
#include <memory>
#include <unordered_set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "core/atomic_file.h"

namespace moelab {
namespace {

// The archive's "format" entry: v2 files end with a checksum trailer.
constexpr char kFormat[] = "moelab-checkpoint-v2";
constexpr char kFormatV1[] = "moelab-checkpoint-v1";
constexpr char kTrailerMagic[] = "MOELABCK";  // 8 bytes, no terminator written
constexpr size_t kTrailerSize = 24;

// FNV-1a 64, the hash SpecHash uses: stable across versions and machines.
class Fnv1a64 {
 public:
  void Update(const void* data, size_t n) {
    const unsigned char* p = static_cast<const unsigned char*>(data);
    uint64_t h = hash_;
    for (size_t i = 0; i < n; ++i) {
      h ^= p[i];
      h *= 1099511628211ull;
    }
    hash_ = h;
  }
  uint64_t hash() const { return hash_; }

 private:
  uint64_t hash_ = 1469598103934665603ull;
};

void PutLittleEndian(uint64_t value, char* out) {
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((value >> (8 * i)) & 0xff);
}

uint64_t GetLittleEndian(const char* in) {
  uint64_t value = 0;
  for (int i = 7; i >= 0; --i) value = (value << 8) | static_cast<unsigned char>(in[i]);
  return value;
}

std::string WeightKey(const std::string& name) { return "weights/" + name; }

// An expert share's i-th tensor's optimizer state (a nested archive; its
// name may not hold the dots of parameter names).
std::string ExpertOptimizerKey(size_t i) { return absl::StrCat("expert_optimizer_", i); }

void WriteLayout(torch::serialize::OutputArchive& archive, const ExpertLayout& layout) {
  archive.write("expert_layout_degree", c10::IValue(int64_t{layout.degree}));
  archive.write("expert_layout_shard", c10::IValue(int64_t{layout.shard}));
}

// The recorded layout; files written before layouts were recorded came from
// one process holding every expert.
ExpertLayout ReadLayout(torch::serialize::InputArchive& archive) {
  ExpertLayout layout;
  c10::IValue value;
  if (archive.try_read("expert_layout_degree", value)) {
    layout.degree = static_cast<int32_t>(value.toInt());
  }
  if (archive.try_read("expert_layout_shard", value)) {
    layout.shard = static_cast<int32_t>(value.toInt());
  }
  return layout;
}

int32_t ReadEpochsDone(torch::serialize::InputArchive& archive) {
  c10::IValue value;
  archive.read("epochs_done", value);
  return static_cast<int32_t>(value.toInt());
}

std::string DescribeLayout(const ExpertLayout& layout) {
  return layout.degree == 1
             ? std::string("one process holding every expert")
             : absl::StrCat("the experts split over ", layout.degree, " ranks (expert parallel)");
}

void WriteWeights(torch::serialize::OutputArchive& archive, Model& model) {
  for (const auto& item : model.named_parameters()) {
    archive.write(WeightKey(item.key()), item.value().detach().cpu());
  }
  for (const auto& item : model.named_buffers()) {
    archive.write(WeightKey(item.key()), item.value().detach().cpu(),
                  /*is_buffer=*/true);
  }
}

// The tensors of the model's routers (parameters and buffers).
std::unordered_set<const c10::TensorImpl*> RouterTensors(const Model& model) {
  std::unordered_set<const c10::TensorImpl*> tensors;
  for (const std::shared_ptr<Router>& router : model.Routers()) {
    for (const at::Tensor& t : router->parameters()) tensors.insert(t.unsafeGetTensorImpl());
    for (const at::Tensor& t : router->buffers()) tensors.insert(t.unsafeGetTensorImpl());
  }
  return tensors;
}

// Copies archived tensors into the model's parameters and buffers by name,
// after checking all of them (see LoadWeights for the rule).
class ScopedFd;

// One share of an expert-parallel set, open for reading (see ExpertShardPath).
struct ShardArchive {
  std::string path;
  torch::serialize::InputArchive archive;
  std::unique_ptr<ScopedFd> file;
};

absl::Status ReadWeights(torch::serialize::InputArchive& archive, Model& model,
                         const std::string& path, std::vector<std::string>* not_loaded,
                         const std::vector<std::unique_ptr<ShardArchive>>* shares = nullptr) {
  torch::NoGradGuard no_grad;
  const bool partial = not_loaded != nullptr;
  const std::unordered_set<const c10::TensorImpl*> router_tensors =
      partial ? RouterTensors(model) : std::unordered_set<const c10::TensorImpl*>{};
  std::vector<std::pair<at::Tensor, at::Tensor>> copies;  // (target, saved)
  std::vector<std::string> missing_router, missing_required, mismatched;
  auto check = [&](const std::string& name, const at::Tensor& target,
                   bool is_buffer) -> absl::Status {
    at::Tensor saved;
    if (!archive.try_read(WeightKey(name), saved, is_buffer)) {
      if (partial && router_tensors.count(target.unsafeGetTensorImpl()) > 0) {
        missing_router.push_back(name);
      } else {
        missing_required.push_back(name);
      }
      return absl::OkStatus();
    }
    // An expert tensor of an expert-parallel set: the shares hold it too,
    // and the whole is shares 0 (this file), 1, ..., n-1 in order.
    at::Tensor first;
    if (shares != nullptr && !shares->empty() &&
        shares->front()->archive.try_read(WeightKey(name), first, is_buffer)) {
      std::vector<at::Tensor> parts = {saved};
      for (const std::unique_ptr<ShardArchive>& share : *shares) {
        // A fresh tensor per share: try_read into a defined one set_()s it,
        // which would change the part already collected.
        at::Tensor part = share == shares->front() ? first : at::Tensor();
        if ((!part.defined() && !share->archive.try_read(WeightKey(name), part, is_buffer)) ||
            part.sizes() != saved.sizes()) {
          mismatched.push_back(absl::StrCat("'", name, "' in '", share->path,
                                            "' is missing or has another shape than share 0's"));
          return absl::OkStatus();
        }
        parts.push_back(part);
      }
      saved = at::cat(parts, 0);
    }
    if (saved.sizes() != target.sizes()) {
      mismatched.push_back(absl::StrCat("'", name, "' has shape ", c10::str(saved.sizes()),
                                        ", the model expects ", c10::str(target.sizes())));
      return absl::OkStatus();
    }
    copies.emplace_back(target, saved);
    return absl::OkStatus();
  };
  int64_t tensors = 0;
  for (const auto& item : model.named_parameters()) {
    ++tensors;
    if (absl::Status s = check(item.key(), item.value(), false); !s.ok()) return s;
  }
  for (const auto& item : model.named_buffers()) {
    ++tensors;
    if (absl::Status s = check(item.key(), item.value(), true); !s.ok()) return s;
  }
  if (!missing_required.empty()) {
    constexpr size_t kListed = 5;
    const std::vector<std::string> listed(
        missing_required.begin(),
        missing_required.begin() + std::min(kListed, missing_required.size()));
    const std::string names =
        absl::StrCat(absl::StrJoin(listed, ", "),
                     missing_required.size() > kListed
                         ? absl::StrCat(" and ", missing_required.size() - kListed, " more")
                         : "");
    if (!partial) {
      return absl::DataLossError(absl::StrCat("checkpoint '", path, "' has no tensor for ", names,
                                              " (was it written by a different spec?)"));
    }
    return absl::InvalidArgumentError(absl::StrFormat(
        "checkpoint '%s' does not fit this model: %d of its %d tensors outside the "
        "routers are missing (%s)%s; only router parameters may differ (a checkpoint of "
        "the same model with another router). Was it written by another model?",
        path, missing_required.size(), tensors - static_cast<int64_t>(router_tensors.size()), names,
        mismatched.empty()
            ? ""
            : absl::StrCat(" and ", mismatched.size(), " have another shape (", mismatched.front(),
                           mismatched.size() > 1 ? ", ..." : "", ")")));
  }
  if (!mismatched.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "checkpoint '", path, "': ", mismatched.front(),
        mismatched.size() > 1 ? absl::StrCat(" (and ", mismatched.size() - 1, " more)") : ""));
  }
  for (auto& [target, saved] : copies) target.copy_(saved);
  if (partial) *not_loaded = std::move(missing_router);
  return absl::OkStatus();
}

// An open file descriptor, closed on scope exit.
class ScopedFd {
 public:
  explicit ScopedFd(int fd) : fd_(fd) {}
  ScopedFd(const ScopedFd&) = delete;
  ScopedFd& operator=(const ScopedFd&) = delete;
  ~ScopedFd() {
    if (fd_ >= 0) ::close(fd_);
  }
  int get() const { return fd_; }

 private:
  int fd_;
};

// Reads exactly `n` bytes at `offset`; false on an error or a short file.
bool ReadAt(int fd, uint64_t offset, void* buffer, size_t n) {
  char* out = static_cast<char*>(buffer);
  while (n > 0) {
    const ssize_t got = ::pread(fd, out, n, static_cast<off_t>(offset));
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) return false;
    out += got;
    offset += got;
    n -= static_cast<size_t>(got);
  }
  return true;
}

// Opens the checkpoint at `path`, verifies its checksum trailer and loads
// the archive in front of it. The archive reads through `*file`, which the
// caller keeps open while it reads from `archive`.
absl::Status OpenArchive(const std::string& path, torch::serialize::InputArchive& archive,
                         std::vector<std::string>* warnings, std::unique_ptr<ScopedFd>* file) {
  *file = std::make_unique<ScopedFd>(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  const ScopedFd& fd = **file;
  if (fd.get() < 0) {
    const int error = errno;
    const std::string message =
        absl::StrCat("cannot open checkpoint '", path, "': ", std::strerror(error));
    return error == ENOENT ? absl::NotFoundError(message) : absl::DataLossError(message);
  }
  struct stat info;
  if (::fstat(fd.get(), &info) != 0) {
    return absl::DataLossError(
        absl::StrCat("cannot read checkpoint '", path, "': ", std::strerror(errno)));
  }
  const uint64_t file_size = static_cast<uint64_t>(info.st_size);
  char trailer[kTrailerSize];
  const bool has_trailer = file_size >= kTrailerSize &&
                           ReadAt(fd.get(), file_size - kTrailerSize, trailer, kTrailerSize) &&
                           std::memcmp(trailer, kTrailerMagic, 8) == 0;
  uint64_t archive_size = file_size;
  if (has_trailer) {
    archive_size = GetLittleEndian(trailer + 8);
    const uint64_t recorded = GetLittleEndian(trailer + 16);
    if (archive_size != file_size - kTrailerSize) {
      return absl::DataLossError(
          absl::StrCat("checkpoint '", path, "' is damaged: its checksum trailer records ",
                       archive_size, " archive bytes, the file holds ", file_size - kTrailerSize,
                       " (truncated or appended to?); it cannot be used"));
    }
    Fnv1a64 hash;
    std::vector<char> buffer(1 << 20);
    for (uint64_t at = 0; at < archive_size;) {
      const size_t n = static_cast<size_t>(std::min<uint64_t>(buffer.size(), archive_size - at));
      if (!ReadAt(fd.get(), at, buffer.data(), n)) {
        return absl::DataLossError(absl::StrCat("cannot read checkpoint '", path, "' at byte ", at,
                                                ": ", std::strerror(errno)));
      }
      hash.Update(buffer.data(), n);
      at += n;
    }
    if (hash.hash() != recorded) {
      return absl::DataLossError(absl::StrFormat(
          "checkpoint '%s' is corrupt: the FNV-1a 64 checksum of its %d archive bytes is "
          "%016x, the file records %016x (bytes changed on disk after it was written); it "
          "cannot be used",
          path, archive_size, hash.hash(), recorded));
    }
  }
  const int raw_fd = fd.get();
  try {
    archive.load_from(
        [raw_fd, archive_size](uint64_t pos, void* buf, size_t nbytes) -> size_t {
          if (pos >= archive_size) return 0;
          nbytes = static_cast<size_t>(std::min<uint64_t>(nbytes, archive_size - pos));
          return ReadAt(raw_fd, pos, buf, nbytes) ? nbytes : 0;
        },
        [archive_size]() -> size_t { return static_cast<size_t>(archive_size); });
    c10::IValue format;
    const bool readable = archive.try_read("format", format) && format.isString();
    const std::string name = readable ? format.toStringRef() : "";
    if (name == kFormat && !has_trailer) {
      return absl::DataLossError(
          absl::StrCat("checkpoint '", path, "' is damaged: a ", kFormat,
                       " file ends with a checksum trailer and this one does not (truncated or "
                       "overwritten?); it cannot be used"));
    }
    if (name == kFormatV1 && !has_trailer) {
      const std::string warning = absl::StrCat(
          "checkpoint '", path, "' was written before checkpoints carried a checksum (", kFormatV1,
          "): it was loaded without verification");
      if (warnings != nullptr) {
        warnings->push_back(warning);
      } else {
        std::fprintf(stderr, "warning: %s\n", warning.c_str());
      }
    } else if (name != kFormat) {
      return absl::DataLossError(absl::StrCat("'", path, "' is not a moelab checkpoint"));
    }
  } catch (const std::exception& e) {
    return absl::DataLossError(
        absl::StrCat("cannot read checkpoint '", path, "': ", ExceptionMessage(e)));
  }
  return absl::OkStatus();
}

// Writes the archive `fill` builds to `path` atomically (a temporary file
// and a rename), followed by the checksum trailer.
absl::Status WriteCheckpointFile(
    const std::string& path, const std::function<void(torch::serialize::OutputArchive&)>& fill) {
  absl::StatusOr<AtomicFileWriter> out = AtomicFileWriter::Open(path);
  if (!out.ok()) {
    return absl::Status(out.status().code(), absl::StrCat("cannot write checkpoint '", path,
                                                          "': ", out.status().message()));
  }
  Fnv1a64 hash;
  absl::Status write_error;
  try {
    torch::serialize::OutputArchive archive;
    fill(archive);
    // LibTorch writes the zip sequentially through this function. A short
    // count would make it throw, and throw again from its writer's
    // destructor (std::terminate: the SIGABRT a full disk used to cause), so
    // after a failed write the rest of the archive is consumed unwritten and
    // the error reported below.
    archive.save_to([&](const void* data, size_t n) -> size_t {
      if (!write_error.ok()) return n;
      write_error = out->Append(absl::string_view(static_cast<const char*>(data), n));
      hash.Update(data, n);
      return n;
    });
  } catch (const std::exception& e) {
    // `out` removes its temporary when it goes out of scope.
    const absl::Status cause =
        write_error.ok() ? absl::InternalError(ExceptionMessage(e)) : write_error;
    return absl::Status(cause.code(),
                        absl::StrCat("cannot write checkpoint '", path, "': ", cause.message(),
                                     " (the partial file was removed)"));
  }
  if (!write_error.ok()) {
    return absl::Status(write_error.code(), absl::StrCat("cannot write checkpoint '", path,
                                                         "': ", write_error.message(),
                                                         " (the partial file was removed)"));
  }
  char trailer[kTrailerSize];
  std::memcpy(trailer, kTrailerMagic, 8);
  PutLittleEndian(static_cast<uint64_t>(out->size()), trailer + 8);
  PutLittleEndian(hash.hash(), trailer + 16);
  absl::Status status = out->Append(absl::string_view(trailer, kTrailerSize));
  if (status.ok()) status = out->Commit();
  if (!status.ok()) {
    return absl::Status(status.code(),
                        absl::StrCat("cannot write checkpoint '", path, "': ", status.message(),
                                     " (the partial file was removed)"));
  }
  return absl::OkStatus();
}

// Opens share `layout.shard` of the set whose rank-0 file is `checkpoint`,
// of epoch `epochs_done`, and checks that it is that share.
absl::Status OpenShare(const std::string& checkpoint, const ExpertLayout& layout,
                       int32_t epochs_done, ShardArchive* share,
                       std::vector<std::string>* warnings) {
  share->path = ExpertShardPath(checkpoint, layout.shard, epochs_done);
  if (absl::Status s = OpenArchive(share->path, share->archive, warnings, &share->file); !s.ok()) {
    if (!absl::IsNotFound(s)) return s;
    return absl::DataLossError(absl::StrCat("expert-parallel checkpoint '", checkpoint,
                                            "' (after epoch ", epochs_done, ") holds share 0 of ",
                                            layout.degree, " and needs share ", layout.shard,
                                            " in '", share->path, "', which is missing"));
  }
  try {
    const ExpertLayout recorded = ReadLayout(share->archive);
    const int32_t epoch = ReadEpochsDone(share->archive);
    if (recorded.degree != layout.degree || recorded.shard != layout.shard ||
        epoch != epochs_done) {
      return absl::DataLossError(absl::StrCat(
          "'", share->path, "' records share ", recorded.shard, " of ", recorded.degree,
          " after epoch ", epoch, ", not share ", layout.shard, " of ", layout.degree,
          " after epoch ", epochs_done, " as its name and '", checkpoint, "' say"));
    }
  } catch (const std::exception& e) {
    return absl::DataLossError(
        absl::StrCat("cannot read expert share '", share->path, "': ", ExceptionMessage(e)));
  }
  return absl::OkStatus();
}

// Replaces the experts `model` holds, and their optimizer state, with those
// of an open share (SaveExpertShard's file).
absl::Status ReadShareOrThrow(ShardArchive& share, Model& model,
                              torch::optim::Optimizer& optimizer) {
  c10::IValue names_value;
  share.archive.read("expert_names", names_value);
  const std::vector<std::string> names = absl::StrSplit(names_value.toStringRef(), ',');
  const auto parameters = model.named_parameters();
  std::vector<std::pair<at::Tensor, at::Tensor>> copies;  // (target, saved)
  for (const std::string& name : names) {
    const at::Tensor* target = parameters.find(name);
    at::Tensor saved;
    if (target == nullptr || !share.archive.try_read(WeightKey(name), saved)) {
      return absl::DataLossError(
          absl::StrCat("expert share '", share.path, "' lists '", name, "', which ",
                       target == nullptr ? "this model lacks" : "it does not hold"));
    }
    if (saved.sizes() != target->sizes()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "expert share '", share.path, "': '", name, "' has shape ", c10::str(saved.sizes()),
          ", this rank's experts ", c10::str(target->sizes())));
    }
    copies.emplace_back(*target, saved);
  }
  auto& states = optimizer.state();
  for (size_t i = 0; i < copies.size(); ++i) {
    const std::string key = c10::guts::to_string(copies[i].first.unsafeGetTensorImpl());
    torch::serialize::InputArchive saved_state;
    if (!share.archive.try_read(ExpertOptimizerKey(i), saved_state)) {
      states.erase(key);  // no step had updated it
      continue;
    }
    // The optimizer's own kind of state (Adam's, SGD's), from any entry.
    auto like = states.find(key);
    if (like == states.end()) like = states.begin();
    if (like == states.end()) {
      return absl::DataLossError(
          absl::StrCat("expert share '", share.path, "' holds optimizer state for '", names[i],
                       "' and the rank-0 checkpoint none at all: the set is inconsistent"));
    }
    std::unique_ptr<torch::optim::OptimizerParamState> restored = like->second->clone();
    restored->serialize(saved_state);
    states[key] = std::move(restored);
  }
  torch::NoGradGuard no_grad;
  for (auto& [target, saved] : copies) target.copy_(saved);
  return absl::OkStatus();
}

absl::Status ReadShare(ShardArchive& share, Model& model, torch::optim::Optimizer& optimizer) {
  try {
    return ReadShareOrThrow(share, model, optimizer);
  } catch (const std::exception& e) {
    return absl::DataLossError(
        absl::StrCat("cannot read expert share '", share.path, "': ", ExceptionMessage(e)));
  }
}

}  // namespace

std::string ExceptionMessage(const std::exception& e) {
  const auto* torch_error = dynamic_cast<const c10::Error*>(&e);
  absl::string_view text =
      torch_error != nullptr ? torch_error->what_without_backtrace() : e.what();
  text = text.substr(0, text.find('\n'));
  while (!text.empty() && (text.back() == ' ' || text.back() == '\r')) text.remove_suffix(1);
  return text.empty() ? std::string("unknown error") : std::string(text);
}

absl::Status SaveCheckpoint(const std::string& path, Model& model,
                            torch::optim::Optimizer& optimizer, const TrainingState& state,
                            const ExpertLayout& layout) {
  return WriteCheckpointFile(path, [&](torch::serialize::OutputArchive& archive) {
    archive.write("format", c10::IValue(std::string(kFormat)));
    archive.write("epochs_done", c10::IValue(int64_t{state.epochs_done}));
    archive.write("step", c10::IValue(state.step));
    archive.write("result", c10::IValue(state.result.SerializeAsString()));
    archive.write("rng_state", state.rng_state);
    WriteLayout(archive, layout);
    archive.write("probe_layers", c10::IValue(int64_t(state.probe.size())));
    for (size_t i = 0; i < state.probe.size(); ++i) {
      archive.write(absl::StrCat("probe/", i, "/top1"), state.probe[i].top1);
      archive.write(absl::StrCat("probe/", i, "/selected"), state.probe[i].selected);
      if (state.probe[i].head.defined()) {
        archive.write(absl::StrCat("probe/", i, "/head"), state.probe[i].head);
      }
    }
    WriteWeights(archive, model);
    torch::serialize::OutputArchive optimizer_archive;
    optimizer.save(optimizer_archive);
    archive.write("optimizer", optimizer_archive);
  });
}

absl::Status SaveExpertShard(const std::string& path, Model& model,
                             torch::optim::Optimizer& optimizer,
                             const std::vector<at::Tensor>& expert_sharded,
                             const ExpertLayout& layout, int32_t epochs_done) {
  std::vector<std::string> names;
  std::vector<at::Tensor> tensors;
  for (const auto& item : model.named_parameters()) {
    if (std::any_of(expert_sharded.begin(), expert_sharded.end(), [&](const at::Tensor& e) {
          return e.unsafeGetTensorImpl() == item.value().unsafeGetTensorImpl();
        })) {
      names.push_back(item.key());
      tensors.push_back(item.value());
    }
  }
  if (names.size() != expert_sharded.size()) {
    return absl::InternalError(absl::StrCat("cannot write expert share '", path,
                                            "': ", expert_sharded.size() - names.size(),
                                            " of its tensors are not the model's parameters"));
  }
  const auto& states = optimizer.state();
  return WriteCheckpointFile(path, [&](torch::serialize::OutputArchive& archive) {
    archive.write("format", c10::IValue(std::string(kFormat)));
    archive.write("epochs_done", c10::IValue(int64_t{epochs_done}));
    WriteLayout(archive, layout);
    archive.write("expert_names", c10::IValue(absl::StrJoin(names, ",")));
    for (size_t i = 0; i < names.size(); ++i) {
      archive.write(WeightKey(names[i]), tensors[i].detach().cpu());
      const auto state = states.find(c10::guts::to_string(tensors[i].unsafeGetTensorImpl()));
      if (state == states.end()) continue;
      torch::serialize::OutputArchive state_archive;
      state->second->serialize(state_archive);
      archive.write(ExpertOptimizerKey(i), state_archive);
    }
  });
}

std::string ExpertShardPath(const std::string& checkpoint, int shard, int epochs_done) {
  return (std::filesystem::path(checkpoint).parent_path() /
          absl::StrCat("checkpoint.rank", shard, ".epoch", epochs_done, ".pt"))
      .string();
}

absl::Status LoadCheckpoint(const std::string& path, Model& model,
                            torch::optim::Optimizer& optimizer, TrainingState* state,
                            std::vector<std::string>* warnings, const ExpertLayout& layout) {
  torch::serialize::InputArchive archive;
  std::unique_ptr<ScopedFd> file;
  if (absl::Status s = OpenArchive(path, archive, warnings, &file); !s.ok()) return s;
  try {
    const ExpertLayout recorded = ReadLayout(archive);
    if (recorded.shard != 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "'", path, "' is share ", recorded.shard,
          " of an expert-parallel set: ", "a run resumes from the set's checkpoint.pt"));
    }
    if (recorded.degree != layout.degree) {
      return absl::FailedPreconditionError(absl::StrCat(
          "cannot resume from checkpoint '", path, "': it was written with ",
          DescribeLayout(recorded), ", this run has ", DescribeLayout(layout),
          "; a run resumes on the layout it was written with (a new run can start from its "
          "weights with evaluation.init_checkpoint, which consolidates the experts)"));
    }
    c10::IValue value;
    state->epochs_done = ReadEpochsDone(archive);
    archive.read("step", value);
    state->step = value.toInt();
    archive.read("result", value);
    if (!state->result.ParseFromString(value.toStringRef())) {
      return absl::DataLossError(absl::StrCat("checkpoint '", path, "': corrupt run record"));
    }
    MoveLegacyLayerFields(&state->result);
    archive.read("rng_state", state->rng_state);
    archive.read("probe_layers", value);
    state->probe.assign(value.toInt(), ProbeAssignment{});
    for (size_t i = 0; i < state->probe.size(); ++i) {
      archive.read(absl::StrCat("probe/", i, "/top1"), state->probe[i].top1);
      archive.read(absl::StrCat("probe/", i, "/selected"), state->probe[i].selected);
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
    // Rank 0's file holds share 0 of the experts: another share's rank
    // replaces them (and their optimizer state) with its own.
    if (layout.shard != 0) {
      ShardArchive share;
      if (absl::Status s = OpenShare(path, layout, state->epochs_done, &share, warnings); !s.ok()) {
        return s;
      }
      if (absl::Status s = ReadShare(share, model, optimizer); !s.ok()) return s;
    }
  } catch (const std::exception& e) {
    return absl::DataLossError(
        absl::StrCat("cannot read checkpoint '", path, "': ", ExceptionMessage(e)));
  }
  return absl::OkStatus();
}

absl::Status LoadWeights(const std::string& path, Model& model,
                         std::vector<std::string>* not_loaded, std::vector<std::string>* warnings) {
  torch::serialize::InputArchive archive;
  std::unique_ptr<ScopedFd> file;
  if (absl::Status s = OpenArchive(path, archive, warnings, &file); !s.ok()) return s;
  try {
    const ExpertLayout layout = ReadLayout(archive);
    if (layout.shard != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("'", path, "' is share ", layout.shard, " of an expert-parallel set: ",
                       "load the set's checkpoint.pt, which names the other shares"));
    }
    if (layout.degree == 1) return ReadWeights(archive, model, path, not_loaded);
    const int32_t epochs_done = ReadEpochsDone(archive);
    std::vector<std::unique_ptr<ShardArchive>> shares;
    for (int32_t shard = 1; shard < layout.degree; ++shard) {
      shares.push_back(std::make_unique<ShardArchive>());
      if (absl::Status s = OpenShare(path, ExpertLayout{layout.degree, shard}, epochs_done,
                                     shares.back().get(), warnings);
          !s.ok()) {
        return s;
      }
    }
    absl::Status s = ReadWeights(archive, model, path, not_loaded, &shares);
    if (s.ok()) {
      const std::string note = absl::StrCat(
          "checkpoint '", path, "' holds share 0 of ", layout.degree,
          " of each MoE layer's experts (an expert-parallel run): the others were read from ",
          ExpertShardPath(path, 1, epochs_done),
          layout.degree > 2
              ? absl::StrCat(" .. checkpoint.rank", layout.degree - 1, ".epoch", epochs_done, ".pt")
              : "");
      if (warnings != nullptr) {
        warnings->push_back(note);
      } else {
        std::fprintf(stderr, "note: %s\n", note.c_str());
      }
    }
    return s;
  } catch (const std::exception& e) {
    return absl::DataLossError(
        absl::StrCat("cannot read checkpoint '", path, "': ", ExceptionMessage(e)));
  }
}

}  // namespace moelab
