#include "core/atomic_file.h"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <utility>

#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace moelab {
namespace {

// `what` the file at `path` failed with `error` (an errno value): out of
// space or over a size limit is ResourceExhausted, the rest Internal.
absl::Status ErrnoError(absl::string_view what, const std::string& path, int error = errno) {
  const std::string message = absl::StrCat(what, " '", path, "': ", std::strerror(error));
  if (error == ENOSPC || error == EDQUOT || error == EFBIG) {
    return absl::ResourceExhaustedError(message);
  }
  return absl::InternalError(message);
}

}  // namespace

std::string TemporaryPathFor(const std::string& path) {
  return absl::StrCat(path, ".tmp.", ::getpid());
}

int RemoveStaleTemporaries(const std::string& directory) {
  std::error_code error;
  std::filesystem::directory_iterator it(directory, error);
  if (error) return 0;
  int removed = 0;
  for (const std::filesystem::directory_entry& entry : it) {
    const std::string name = entry.path().filename().string();
    const size_t at = name.rfind(".tmp.");
    if (at == std::string::npos || !entry.is_regular_file(error)) continue;
    int pid = 0;
    if (!absl::SimpleAtoi(name.substr(at + 5), &pid) || pid <= 0) continue;
    // kill(pid, 0) probes without signalling: ESRCH means no such process.
    const bool alive = pid == ::getpid() || ::kill(pid, 0) == 0 || errno != ESRCH;
    if (!alive && std::filesystem::remove(entry.path(), error)) ++removed;
  }
  return removed;
}

absl::Status CommitAtomicFile(const std::string& temporary, const std::string& path) {
  const int fd = ::open(temporary.c_str(), O_RDONLY);
  if (fd < 0) return ErrnoError("cannot open", temporary);
  const bool synced = ::fsync(fd) == 0;
  ::close(fd);
  if (!synced) return ErrnoError("cannot flush", temporary);
  if (std::rename(temporary.c_str(), path.c_str()) != 0) {
    absl::Status status = ErrnoError("cannot rename onto", path);
    std::remove(temporary.c_str());
    return status;
  }
  return absl::OkStatus();
}

absl::StatusOr<AtomicFileWriter> AtomicFileWriter::Open(const std::string& path) {
  std::string temporary = TemporaryPathFor(path);
  const int fd = ::open(temporary.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return ErrnoError("cannot create", temporary);
  return AtomicFileWriter(path, std::move(temporary), fd);
}

AtomicFileWriter::AtomicFileWriter(AtomicFileWriter&& other) noexcept
    : path_(std::move(other.path_)),
      temporary_(std::move(other.temporary_)),
      fd_(std::exchange(other.fd_, -1)),
      size_(other.size_),
      error_(std::move(other.error_)) {}

AtomicFileWriter& AtomicFileWriter::operator=(AtomicFileWriter&& other) noexcept {
  if (this != &other) {
    Abandon();
    path_ = std::move(other.path_);
    temporary_ = std::move(other.temporary_);
    fd_ = std::exchange(other.fd_, -1);
    size_ = other.size_;
    error_ = std::move(other.error_);
  }
  return *this;
}

AtomicFileWriter::~AtomicFileWriter() { Abandon(); }

void AtomicFileWriter::Abandon() {
  if (fd_ < 0) return;
  ::close(fd_);
  fd_ = -1;
  ::unlink(temporary_.c_str());
}

absl::Status AtomicFileWriter::Append(absl::string_view bytes) {
  if (!error_.ok()) return error_;
  if (fd_ < 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("'", temporary_, "' is already committed or closed"));
  }
  const char* data = bytes.data();
  size_t left = bytes.size();
  while (left > 0) {
    const ssize_t n = ::write(fd_, data, left);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      // write() returns 0 only for a zero-length request; treat it as an
      // I/O error rather than spin.
      error_ = ErrnoError("cannot write", temporary_, n < 0 ? errno : EIO);
      Abandon();
      return error_;
    }
    data += n;
    left -= static_cast<size_t>(n);
    size_ += n;
  }
  return absl::OkStatus();
}

absl::Status AtomicFileWriter::Commit() {
  if (!error_.ok()) return error_;
  if (fd_ < 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("'", temporary_, "' is already committed or closed"));
  }
  // A file system may report a full disk only when the data reach it.
  if (::fsync(fd_) != 0) {
    error_ = ErrnoError("cannot flush", temporary_);
    Abandon();
    return error_;
  }
  const int fd = std::exchange(fd_, -1);
  if (::close(fd) != 0) {
    error_ = ErrnoError("cannot close", temporary_);
    ::unlink(temporary_.c_str());
    return error_;
  }
  if (std::rename(temporary_.c_str(), path_.c_str()) != 0) {
    error_ = ErrnoError("cannot rename onto", path_);
    ::unlink(temporary_.c_str());
    return error_;
  }
  return absl::OkStatus();
}

absl::Status WriteFileAtomically(const std::string& path, absl::string_view contents) {
  absl::StatusOr<AtomicFileWriter> out = AtomicFileWriter::Open(path);
  if (!out.ok()) return out.status();
  if (absl::Status s = out->Append(contents); !s.ok()) return s;
  return out->Commit();
}

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open '", path, "'"));
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

}  // namespace moelab
