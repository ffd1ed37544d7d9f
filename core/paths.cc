#include "core/paths.h"

#include <cstdlib>

namespace moelab {

std::string ResolveUserPath(const std::string& path) {
  if (path.empty() || path[0] == '/') return path;
  const char* dir = std::getenv("BUILD_WORKING_DIRECTORY");
  if (dir == nullptr || *dir == '\0') return path;
  return std::string(dir) + "/" + path;
}

std::string WorkspacePath(const std::string& relative) {
  if (relative.empty() || relative[0] == '/') return relative;
  const char* root = std::getenv("BUILD_WORKSPACE_DIRECTORY");
  if (root == nullptr || *root == '\0') return relative;
  return std::string(root) + "/" + relative;
}

}  // namespace moelab
