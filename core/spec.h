#ifndef MOELAB_CORE_SPEC_H_
#define MOELAB_CORE_SPEC_H_

// Loading an ExperimentSpec: parse the text format, fill documented defaults
// (core's and each plugin's), validate. Every error names the spec field or
// file and what was expected.

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "proto/experiment.pb.h"

namespace moelab {

// Parses text-format `text`; syntax errors and unknown fields are reported
// as "<source_name>:<line>:<column>: <problem>".
absl::StatusOr<ExperimentSpec> ParseSpec(absl::string_view text, absl::string_view source_name);

// Reads and parses a .pbtxt file.
absl::StatusOr<ExperimentSpec> ReadSpecFile(const std::string& path);

// Fills every documented default in place (core fields, then the model,
// router and dataset plugins' own). Fails on names that are not registered.
absl::Status ResolveSpec(ExperimentSpec* spec);

// Checks a resolved spec: core ranges, cross-field constraints (k <= E),
// and each plugin's own validation (options, data files).
absl::Status ValidateSpec(const ExperimentSpec& spec);

// ReadSpecFile + ResolveSpec + ValidateSpec, with the path in every error.
absl::StatusOr<ExperimentSpec> LoadSpec(const std::string& path);

// ParseSpec + ResolveSpec + ValidateSpec.
absl::StatusOr<ExperimentSpec> LoadSpecFromText(absl::string_view text,
                                                absl::string_view source_name);

// A stable 16-hex-digit hash of everything that determines a run's results:
// the resolved spec without output.directory and runtime.threads, which
// change where results go and how fast they come, not what they are.
// Results are cached under it.
std::string SpecHash(const ExperimentSpec& spec);

// The spec in text format, as saved to spec.pbtxt.
std::string SpecToText(const ExperimentSpec& spec);

}  // namespace moelab

#endif  // MOELAB_CORE_SPEC_H_
