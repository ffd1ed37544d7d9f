#include "core/plugin_options.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "proto/experiment.pb.h"

namespace moelab {
namespace {

using ::testing::Eq;

TEST(PluginOptionsTest, EmptyOrOwnOptionsAreAccepted) {
  RouterSpec spec;
  spec.set_name("token_choice");
  EXPECT_FALSE(HoldsOtherPluginsOptions(spec, RouterSpec::kTokenChoice));
  EXPECT_TRUE(CheckOwnOptions(spec, "router", "token_choice", RouterSpec::kTokenChoice).ok());
  spec.mutable_token_choice();
  EXPECT_FALSE(HoldsOtherPluginsOptions(spec, RouterSpec::kTokenChoice));
  EXPECT_TRUE(CheckOwnOptions(spec, "router", "token_choice", RouterSpec::kTokenChoice).ok());
}

TEST(PluginOptionsTest, AnotherPluginsOptionsAreRefusedNamingBothFields) {
  RouterSpec spec;
  spec.set_name("token_choice");
  spec.mutable_unified()->set_alpha(0.5);
  EXPECT_TRUE(HoldsOtherPluginsOptions(spec, RouterSpec::kTokenChoice));
  const absl::Status status =
      CheckOwnOptions(spec, "router", "token_choice", RouterSpec::kTokenChoice);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), Eq("router.unified: these options belong to another router; router "
                                   "'token_choice' takes router.token_choice"));
}

TEST(PluginOptionsTest, APluginWithoutOptionsRefusesAny) {
  DatasetSpec spec;
  spec.mutable_sotu();
  EXPECT_TRUE(HoldsOtherPluginsOptions(spec, 0));
  EXPECT_THAT(CheckOwnOptions(spec, "dataset", "bare", 0).message(),
              Eq("dataset.sotu: these options belong to another dataset; dataset 'bare' takes "
                 "no options"));
  EXPECT_TRUE(CheckOwnOptions(DatasetSpec(), "dataset", "bare", 0).ok());
}

TEST(PluginOptionsTest, ModelOptions) {
  ModelSpec spec;
  spec.mutable_vit();
  EXPECT_THAT(
      CheckOwnOptions(spec, "model", "moe_transformer_lm", ModelSpec::kTransformerLm).message(),
      Eq("model.vit: these options belong to another model; model 'moe_transformer_lm' "
         "takes model.transformer_lm"));
}

}  // namespace
}  // namespace moelab
