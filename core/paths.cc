#include "core/paths.h"

#include <cstdlib>

namespace moelab {

std::string ResolveUserPath(const std::string& path) {
  if (path.empty() || path[0] == '/') return path;
  const char* dir = std::getenv("BUILD_WORKING_DIRECTORY");
  if (dir == nullptr || *dir == '\0') return path;
  return std::string(dir) + "/" + path;
}

}  // namespace moelab
