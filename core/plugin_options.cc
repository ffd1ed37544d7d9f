#include "core/plugin_options.h"

#include "absl/strings/str_cat.h"
#include "google/protobuf/descriptor.h"

namespace moelab {
namespace {

// The field set in the message's `options` oneof; nullptr when none is (or
// the message has no such oneof).
const google::protobuf::FieldDescriptor* SetOptionsField(const google::protobuf::Message& spec) {
  const google::protobuf::OneofDescriptor* oneof = spec.GetDescriptor()->FindOneofByName("options");
  if (oneof == nullptr) return nullptr;
  return spec.GetReflection()->GetOneofFieldDescriptor(spec, oneof);
}

}  // namespace

bool HoldsOtherPluginsOptions(const google::protobuf::Message& spec, int own_field) {
  const google::protobuf::FieldDescriptor* set = SetOptionsField(spec);
  return set != nullptr && set->number() != own_field;
}

absl::Status CheckOwnOptions(const google::protobuf::Message& spec, absl::string_view kind,
                             absl::string_view plugin, int own_field) {
  if (!HoldsOtherPluginsOptions(spec, own_field)) return absl::OkStatus();
  const google::protobuf::FieldDescriptor* own = spec.GetDescriptor()->FindFieldByNumber(own_field);
  const std::string takes =
      own != nullptr ? absl::StrCat("takes ", kind, ".", own->name()) : "takes no options";
  return absl::InvalidArgumentError(absl::StrCat(kind, ".", SetOptionsField(spec)->name(),
                                                 ": these options belong to another ", kind, "; ",
                                                 kind, " '", plugin, "' ", takes));
}

}  // namespace moelab
