#include "core/checkpoint.h"

#include <ATen/ATen.h>
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
#include <memory>
#include <unordered_set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
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

// An expert-parallel rank's checkpoint, open for reading (checkpoint.rank<r>.pt
// beside rank 0's checkpoint.pt; see ExpertShardPaths).
struct ShardArchive {
  std::string path;
  torch::serialize::InputArchive archive;
  std::unique_ptr<ScopedFd> file;
};

absl::Status ReadWeights(torch::serialize::InputArchive& archive, Model& model,
                         const std::string& path, std::vector<std::string>* not_loaded,
                         std::vector<std::unique_ptr<ShardArchive>>* shards = nullptr,
                         int* consolidated_ranks = nullptr) {
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
    // An expert-parallel run's tensor of E/n experts, for a model of all E:
    // ranks 1..n-1 hold the rest, in order.
    const int64_t ranks = saved.dim() > 0 && saved.size(0) > 0 && target.dim() == saved.dim() &&
                                  target.size(0) % saved.size(0) == 0 &&
                                  target.sizes().slice(1) == saved.sizes().slice(1)
                              ? target.size(0) / saved.size(0)
                              : 1;
    if (saved.sizes() != target.sizes() && ranks > 1 && shards != nullptr &&
        static_cast<int64_t>(shards->size()) >= ranks - 1) {
      std::vector<at::Tensor> parts = {saved};
      for (int64_t r = 1; r < ranks; ++r) {
        at::Tensor part;
        ShardArchive& shard = *(*shards)[r - 1];
        if (!shard.archive.try_read(WeightKey(name), part, is_buffer) ||
            part.sizes() != saved.sizes()) {
          mismatched.push_back(absl::StrCat("'", name, "' in '", shard.path,
                                            "' is missing or has another shape than rank 0's"));
          return absl::OkStatus();
        }
        parts.push_back(part);
      }
      saved = at::cat(parts, 0);
      if (consolidated_ranks != nullptr) *consolidated_ranks = static_cast<int>(ranks);
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
                            torch::optim::Optimizer& optimizer, const TrainingState& state) {
  absl::StatusOr<AtomicFileWriter> out = AtomicFileWriter::Open(path);
  if (!out.ok()) {
    return absl::Status(out.status().code(), absl::StrCat("cannot write checkpoint '", path,
                                                          "': ", out.status().message()));
  }
  Fnv1a64 hash;
  absl::Status write_error;
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
      archive.write(absl::StrCat("probe/", i, "/selected"), state.probe[i].selected);
      if (state.probe[i].head.defined()) {
        archive.write(absl::StrCat("probe/", i, "/head"), state.probe[i].head);
      }
    }
    WriteWeights(archive, model);
    torch::serialize::OutputArchive optimizer_archive;
    optimizer.save(optimizer_archive);
    archive.write("optimizer", optimizer_archive);
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

absl::Status LoadCheckpoint(const std::string& path, Model& model,
                            torch::optim::Optimizer& optimizer, TrainingState* state,
                            std::vector<std::string>* warnings) {
  torch::serialize::InputArchive archive;
  std::unique_ptr<ScopedFd> file;
  if (absl::Status s = OpenArchive(path, archive, warnings, &file); !s.ok()) return s;
  try {
    c10::IValue value;
    archive.read("epochs_done", value);
    state->epochs_done = static_cast<int32_t>(value.toInt());
    archive.read("step", value);
    state->step = value.toInt();
    archive.read("result", value);
    if (!state->result.ParseFromString(value.toStringRef())) {
      return absl::DataLossError(absl::StrCat("checkpoint '", path, "': corrupt run record"));
    }
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
  } catch (const std::exception& e) {
    return absl::DataLossError(
        absl::StrCat("cannot read checkpoint '", path, "': ", ExceptionMessage(e)));
  }
  return absl::OkStatus();
}

std::vector<std::string> ExpertShardPaths(const std::string& path) {
  std::vector<std::string> paths;
  const std::filesystem::path file(path);
  if (file.filename() != "checkpoint.pt") return paths;
  for (int rank = 1;; ++rank) {
    const std::filesystem::path shard =
        file.parent_path() / absl::StrCat("checkpoint.rank", rank, ".pt");
    std::error_code error;
    if (!std::filesystem::exists(shard, error)) break;
    paths.push_back(shard.string());
  }
  return paths;
}

absl::Status LoadWeights(const std::string& path, Model& model,
                         std::vector<std::string>* not_loaded, std::vector<std::string>* warnings) {
  torch::serialize::InputArchive archive;
  std::unique_ptr<ScopedFd> file;
  if (absl::Status s = OpenArchive(path, archive, warnings, &file); !s.ok()) return s;
  try {
    absl::Status whole = ReadWeights(archive, model, path, not_loaded);
    const std::vector<std::string> shard_paths = ExpertShardPaths(path);
    // Only a checkpoint that does not fit as it is may be one rank's share:
    // its siblings are opened then, and must be of the same epoch.
    if (whole.ok() || !absl::IsInvalidArgument(whole) || shard_paths.empty()) return whole;
    c10::IValue epoch;
    archive.read("epochs_done", epoch);
    std::vector<std::unique_ptr<ShardArchive>> shards;
    for (const std::string& shard_path : shard_paths) {
      auto shard = std::make_unique<ShardArchive>();
      shard->path = shard_path;
      if (absl::Status s = OpenArchive(shard_path, shard->archive, warnings, &shard->file);
          !s.ok()) {
        return s;
      }
      c10::IValue shard_epoch;
      shard->archive.read("epochs_done", shard_epoch);
      if (shard_epoch.toInt() != epoch.toInt()) {
        return absl::DataLossError(absl::StrCat(
            "expert-parallel checkpoint '", shard_path, "' is of epoch ", shard_epoch.toInt(),
            " and rank 0's '", path, "' of epoch ", epoch.toInt(),
            ": the set is inconsistent (a rank was stopped between the ranks' writes)"));
      }
      shards.push_back(std::move(shard));
    }
    int consolidated_ranks = 0;
    absl::Status s = ReadWeights(archive, model, path, not_loaded, &shards, &consolidated_ranks);
    if (s.ok() && consolidated_ranks > 1) {
      const std::string note = absl::StrCat(
          "checkpoint '", path, "' holds 1/", consolidated_ranks,
          " of each MoE layer's experts (an expert-parallel run): the others were read from ",
          "checkpoint.rank1.pt .. checkpoint.rank", consolidated_ranks - 1, ".pt beside it");
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
