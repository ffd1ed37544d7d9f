// A libFuzzer target for the spec front door: text-format parsing,
// resolution of every plugin's defaults and validation (LoadSpecFromText),
// with every router, model and dataset registered. Any input must end in an
// absl::Status: a crash, an exception escaping (c10::Error from a
// TORCH_CHECK reached by user input) or a sanitizer report is a bug.
//
// Build and run it with clang (libFuzzer, AddressSanitizer), in an output
// base of its own so the gcc build is untouched:
//   bazel --output_base=/tmp/moelab-fuzz build --config=fuzz //experiments:spec_fuzzer
//   FUZZER=/tmp/moelab-fuzz/execroot/moelab/bazel-out/k8-opt/bin/experiments/spec_fuzzer
//   $FUZZER -max_total_time=600 /tmp/corpus experiments/testdata/spec_fuzz_corpus
// The corpus is replayed in every `bazel test` by spec_fuzzer_corpus_test.

#include <cstddef>
#include <cstdint>

#include "absl/strings/string_view.h"
#include "core/spec.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view text(reinterpret_cast<const char*>(data), size);
  // The result is not needed: only that the call returns.
  (void)moelab::LoadSpecFromText(text, "fuzz.pbtxt");
  return 0;
}
