#ifndef MOELAB_CORE_ATOMIC_FILE_H_
#define MOELAB_CORE_ATOMIC_FILE_H_

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace moelab {

// Writes `contents` to `path` through a temporary file in the same directory
// and a rename, so a reader (or a run killed mid-write) sees either the old
// file or the new one, never a partial file.
absl::Status WriteFileAtomically(const std::string& path,
                                 absl::string_view contents);

// Reads a whole file; NotFound names the path.
absl::StatusOr<std::string> ReadFile(const std::string& path);

// The temporary name WriteFileAtomically uses for `path`; writers that
// produce the file themselves (e.g. torch archives) write here, then call
// CommitAtomicFile.
std::string TemporaryPathFor(const std::string& path);

// Flushes `temporary` to disk and renames it onto `path`.
absl::Status CommitAtomicFile(const std::string& temporary,
                              const std::string& path);

// Removes the temporaries (TemporaryPathFor names, "<file>.tmp.<pid>") that
// writers killed mid-write left in `directory`: those whose process no
// longer runs. A live writer's file is kept. Returns how many were removed;
// a missing directory removes none.
int RemoveStaleTemporaries(const std::string& directory);

}  // namespace moelab

#endif  // MOELAB_CORE_ATOMIC_FILE_H_
