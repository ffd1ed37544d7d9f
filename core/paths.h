#ifndef MOELAB_CORE_PATHS_H_
#define MOELAB_CORE_PATHS_H_

#include <string>

namespace moelab {

// `bazel run` starts binaries inside their runfiles tree; a relative path a
// user typed is meant relative to the directory the command was started in
// ($BUILD_WORKING_DIRECTORY). Absolute paths are returned unchanged.
std::string ResolveUserPath(const std::string& path);

}  // namespace moelab

#endif  // MOELAB_CORE_PATHS_H_
