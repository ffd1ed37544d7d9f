#include "core/task.h"

#include "absl/strings/str_cat.h"

namespace moelab {

Registry<TaskRegistration>& TaskRegistry() {
  static auto* registry = new Registry<TaskRegistration>("task");
  return *registry;
}

absl::StatusOr<const TaskRegistration*> FindTask(absl::string_view name) {
  absl::StatusOr<const TaskRegistration*> entry = TaskRegistry().Find(name);
  if (!entry.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("the dataset's task: ", entry.status().message()));
  }
  return entry;
}

absl::StatusOr<std::unique_ptr<Task>> CreateTask(const DatasetInfo& info) {
  absl::StatusOr<const TaskRegistration*> entry = FindTask(info.task);
  if (!entry.ok()) return entry.status();
  return (*entry)->create(info);
}

}  // namespace moelab
