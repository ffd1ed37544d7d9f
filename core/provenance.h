#ifndef MOELAB_CORE_PROVENANCE_H_
#define MOELAB_CORE_PROVENANCE_H_

// Which source code produced a run: the git commit of the checkout the
// binary was built from, and whether the tree differed from it. Tables
// compare these so that no table mixes numbers from different code.

#include <string>

#include "proto/result.pb.h"

namespace moelab {

// The source tree's revision. The tree is found from $BUILD_WORKSPACE_DIRECTORY
// (set by `bazel run`), else $MOELAB_SOURCE_DIR, else the working directory;
// `revision` is "unknown" when none of them is a git checkout or git is
// missing. Changes under results/ (reports that tables write while their runs
// are cached) do not count as modifications. Never fails: provenance is
// recorded, not required.
// Read once per process (the first call) and remembered: `bazel run` builds
// the binary from the tree it then runs in, so the tree at start is the code
// of every run this process makes, even if the tree changes meanwhile.
SourceRevision CurrentSourceRevision();

// The same, read from the tree now (for tests of the reading itself).
SourceRevision ReadSourceRevision();

// "abc123def456" or "abc123def456+1f2e3d4c5b6a" (modified tree), from the
// parts; "unknown" for an empty commit.
std::string RevisionLabel(const SourceRevision& source);

}  // namespace moelab

#endif  // MOELAB_CORE_PROVENANCE_H_
