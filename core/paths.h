#ifndef MOELAB_CORE_PATHS_H_
#define MOELAB_CORE_PATHS_H_

#include <string>

namespace moelab {

// `bazel run` starts binaries inside their runfiles tree; a relative path a
// user typed is meant relative to the directory the command was started in
// ($BUILD_WORKING_DIRECTORY). Absolute paths are returned unchanged.
std::string ResolveUserPath(const std::string& path);

// A path inside the source tree: under `bazel run` the workspace root is
// $BUILD_WORKSPACE_DIRECTORY (so edited specs and tables are read without a
// rebuild); otherwise paths are relative to the current directory (tests
// run from the runfiles tree, which mirrors the workspace).
std::string WorkspacePath(const std::string& relative);

}  // namespace moelab

#endif  // MOELAB_CORE_PATHS_H_
