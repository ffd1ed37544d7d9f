#ifndef MOELAB_CORE_PLUGIN_OPTIONS_H_
#define MOELAB_CORE_PLUGIN_OPTIONS_H_

// The `options` oneof of RouterSpec, ModelSpec and DatasetSpec holds one
// plugin's own options message. A plugin names that field in its
// registration (e.g. `.options = RouterSpec::kTokenChoice`), and the code
// that resolves and validates specs (core/spec.cc, CreateRouter,
// LoadDataset) checks it for every plugin, so no plugin writes the check:
//
//   router { name: "token_choice" unified { alpha: 0.5 } }
//   -> router.unified: these options belong to another router; router
//      'token_choice' takes router.token_choice

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "google/protobuf/message.h"

namespace moelab {

// True when `spec`'s options oneof holds a field other than `own_field`
// (a field number; 0 when the plugin takes no options).
bool HoldsOtherPluginsOptions(const google::protobuf::Message& spec, int own_field);

// OK when the oneof is empty or holds `own_field`; otherwise an
// InvalidArgument naming the field set and the one `plugin` takes. `kind`
// is the spec's place in an experiment ("router", "model", "dataset").
absl::Status CheckOwnOptions(const google::protobuf::Message& spec, absl::string_view kind,
                             absl::string_view plugin, int own_field);

}  // namespace moelab

#endif  // MOELAB_CORE_PLUGIN_OPTIONS_H_
