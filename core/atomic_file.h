#ifndef MOELAB_CORE_ATOMIC_FILE_H_
#define MOELAB_CORE_ATOMIC_FILE_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace moelab {

// Writes `contents` to `path` through a temporary file in the same directory
// and a rename, so a reader (or a run killed mid-write) sees either the old
// file or the new one, never a partial file. A failed write (disk full, file
// size limit, I/O error) removes the temporary and returns an error naming
// it: ResourceExhausted for ENOSPC, EDQUOT and EFBIG.
absl::Status WriteFileAtomically(const std::string& path, absl::string_view contents);

// Reads a whole file; NotFound names the path.
absl::StatusOr<std::string> ReadFile(const std::string& path);

// Writes a file piece by piece with WriteFileAtomically's guarantees: the
// bytes go to TemporaryPathFor(path), Commit() flushes them to disk and
// renames the temporary onto `path`. A writer destroyed (or moved from)
// without a successful Commit() removes its temporary, so an error anywhere
// on the way leaves neither a partial `path` nor a stray temporary.
//
//   absl::StatusOr<AtomicFileWriter> out = AtomicFileWriter::Open(path);
//   if (!out.ok()) return out.status();
//   if (absl::Status s = out->Append(bytes); !s.ok()) return s;
//   return out->Commit();
class AtomicFileWriter {
 public:
  static absl::StatusOr<AtomicFileWriter> Open(const std::string& path);

  AtomicFileWriter(AtomicFileWriter&& other) noexcept;
  AtomicFileWriter& operator=(AtomicFileWriter&& other) noexcept;
  AtomicFileWriter(const AtomicFileWriter&) = delete;
  AtomicFileWriter& operator=(const AtomicFileWriter&) = delete;
  ~AtomicFileWriter();

  // Appends all of `bytes`; after an error every later call fails too.
  absl::Status Append(absl::string_view bytes);
  // fsync, close, rename onto path(). At most once.
  absl::Status Commit();

  const std::string& path() const { return path_; }
  const std::string& temporary_path() const { return temporary_; }
  // Bytes appended so far.
  int64_t size() const { return size_; }

 private:
  AtomicFileWriter(std::string path, std::string temporary, int fd)
      : path_(std::move(path)), temporary_(std::move(temporary)), fd_(fd) {}
  // Closes the descriptor and removes the temporary (uncommitted writers).
  void Abandon();

  std::string path_;
  std::string temporary_;
  int fd_ = -1;
  int64_t size_ = 0;
  absl::Status error_;
};

// The temporary name WriteFileAtomically uses for `path`; writers that
// produce the file themselves (e.g. torch archives) write here, then call
// CommitAtomicFile.
std::string TemporaryPathFor(const std::string& path);

// Flushes `temporary` to disk and renames it onto `path`.
absl::Status CommitAtomicFile(const std::string& temporary, const std::string& path);

// Removes the temporaries (TemporaryPathFor names, "<file>.tmp.<pid>") that
// writers killed mid-write left in `directory`: those whose process no
// longer runs. A live writer's file is kept. Returns how many were removed;
// a missing directory removes none.
int RemoveStaleTemporaries(const std::string& directory);

}  // namespace moelab

#endif  // MOELAB_CORE_ATOMIC_FILE_H_
