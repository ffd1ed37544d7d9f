#ifndef MOELAB_CORE_DATA_DATASET_UTIL_H_
#define MOELAB_CORE_DATA_DATASET_UTIL_H_

// Spec and file checks shared by the dataset plugins, so that their errors
// read alike: "dataset.<options>.<field>: <problem>" for spec fields and
// "<path>: <problem>" for files.

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "proto/experiment.pb.h"

namespace moelab {

// InvalidArgument "<field>: <problem>".
absl::Status DatasetFieldError(absl::string_view field, absl::string_view problem);

// Ok when `dir` (resolved with ResolveUserPath) is a directory; otherwise a
// NotFound error naming `field` (e.g. "dataset.wikitext.data_dir"), the path
// and `hint`.
absl::Status CheckDirectoryField(absl::string_view field, const std::string& dir,
                                 absl::string_view hint = "");

// The whole file; errors name the path.
absl::StatusOr<std::string> ReadFileToString(const std::string& path);

// Ok when `text` is well-formed UTF-8 (the Unicode standard's definition: no
// overlong forms, surrogates or code points above U+10FFFF) without NUL
// bytes; otherwise a DataLoss error "<path>: ..." naming the first bad byte's
// offset (from 0) and line (from 1), e.g. "corpus.txt: byte 1234 (0xff, line
// 7) is not valid UTF-8; expected UTF-8 text".
absl::Status CheckUtf8Text(const std::string& path, absl::string_view text);

// ReadFileToString followed by CheckUtf8Text: what the text corpora (SOTU,
// WikiText) read, so that a binary or wrongly encoded file is refused rather
// than tokenised into garbage.
absl::StatusOr<std::string> ReadUtf8TextFile(const std::string& path);

}  // namespace moelab

#endif  // MOELAB_CORE_DATA_DATASET_UTIL_H_
