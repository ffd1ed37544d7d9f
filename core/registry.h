#ifndef MOELAB_CORE_REGISTRY_H_
#define MOELAB_CORE_REGISTRY_H_

// A name -> plugin table shared by routers, models and datasets.
//
// Plugins register from a static initialiser in their own .cc file (see the
// MOELAB_REGISTER_* macros in router.h, model.h and dataset.h). The linker
// drops such an object file unless its library is built with
// `alwayslink = 1`; core/registry_test.cc proves that it is kept.

#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"

namespace moelab {

// `Entry` is the plugin kind's registration record; it must have a
// `std::string description` member.
template <typename Entry>
class Registry {
 public:
  // `kind` names the plugin kind in error messages ("router", "model" ...).
  explicit Registry(std::string kind) : kind_(std::move(kind)) {}

  Registry(const Registry&) = delete;
  Registry& operator=(const Registry&) = delete;

  // Returns true so that registration can initialise a namespace-scope bool.
  // A second registration of a name is a programmer error and aborts with a
  // message, since it would otherwise pick one plugin silently.
  bool Register(const std::string& name, Entry entry) {
    auto [it, inserted] = entries_.emplace(name, std::move(entry));
    if (!inserted) {
      fprintf(stderr, "moelab: %s '%s' registered twice\n", kind_.c_str(), name.c_str());
      abort();
    }
    return true;
  }

  // Looks `name` up; an unknown name is an error that lists every
  // registered one, so a typo in a spec explains itself.
  absl::StatusOr<const Entry*> Find(absl::string_view name) const {
    auto it = entries_.find(std::string(name));
    if (it != entries_.end()) return &it->second;
    return absl::InvalidArgumentError(absl::StrCat("unknown ", kind_, " '", name, "'; registered ",
                                                   kind_, "s: ", absl::StrJoin(Names(), ", ")));
  }

  // Registered names, sorted.
  std::vector<std::string> Names() const {
    std::vector<std::string> names;
    names.reserve(entries_.size());
    for (const auto& [name, entry] : entries_) names.push_back(name);
    return names;
  }

  const std::map<std::string, Entry>& entries() const { return entries_; }
  const std::string& kind() const { return kind_; }

 private:
  std::string kind_;
  std::map<std::string, Entry> entries_;
};

}  // namespace moelab

#define MOELAB_REGISTRY_CONCAT_INNER(a, b) a##b
#define MOELAB_REGISTRY_CONCAT(a, b) MOELAB_REGISTRY_CONCAT_INNER(a, b)

#endif  // MOELAB_CORE_REGISTRY_H_
