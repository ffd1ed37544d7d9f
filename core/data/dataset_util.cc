#include "core/data/dataset_util.h"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>

#include "absl/strings/str_cat.h"
#include "core/paths.h"

namespace moelab {

absl::Status CheckDatasetOptionsCase(const DatasetSpec& spec,
                                     DatasetSpec::OptionsCase expected,
                                     absl::string_view expected_field) {
  if (spec.options_case() == DatasetSpec::OPTIONS_NOT_SET ||
      spec.options_case() == expected) {
    return absl::OkStatus();
  }
  const auto* field =
      DatasetSpec::descriptor()->FindFieldByNumber(spec.options_case());
  return absl::InvalidArgumentError(
      absl::StrCat("dataset.", field->name(),
                   ": these options belong to another dataset; "
                   "dataset '",
                   spec.name(), "' takes dataset.", expected_field));
}

absl::Status DatasetFieldError(absl::string_view field,
                               absl::string_view problem) {
  return absl::InvalidArgumentError(absl::StrCat(field, ": ", problem));
}

absl::Status CheckDirectoryField(absl::string_view field,
                                 const std::string& dir,
                                 absl::string_view hint) {
  const std::string suffix = hint.empty() ? "" : absl::StrCat(" (", hint, ")");
  if (dir.empty())
    return DatasetFieldError(field, absl::StrCat("must be set", suffix));
  std::error_code error;
  if (!std::filesystem::is_directory(ResolveUserPath(dir), error)) {
    return absl::NotFoundError(
        absl::StrCat(field, ": directory not found: '", dir, "'", suffix));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> ReadFileToString(const std::string& path) {
  std::unique_ptr<FILE, int (*)(FILE*)> file(std::fopen(path.c_str(), "rb"),
                                             &std::fclose);
  if (file == nullptr) {
    return absl::NotFoundError(
        absl::StrCat(path, ": cannot open: ", std::strerror(errno)));
  }
  std::string contents;
  char buffer[1 << 16];
  size_t read;
  while ((read = std::fread(buffer, 1, sizeof(buffer), file.get())) > 0) {
    contents.append(buffer, read);
  }
  if (std::ferror(file.get())) {
    return absl::DataLossError(
        absl::StrCat(path, ": read error: ", std::strerror(errno)));
  }
  return contents;
}

}  // namespace moelab
