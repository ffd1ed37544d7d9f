#include "core/registry.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "core/dataset.h"
#include "core/model.h"
#include "core/router.h"

namespace moelab {
namespace {

using ::testing::Contains;
using ::testing::HasSubstr;

// The fake plugins live in a separate alwayslink library that this file never
// names; finding them proves static registration survives linking.
TEST(RegistryTest, FindsPluginsFromAnUnnamedAlwayslinkLibrary) {
  EXPECT_THAT(RouterRegistry().Names(), Contains("testing_first_expert"));
  EXPECT_THAT(ModelRegistry().Names(), Contains("testing_lm"));
  EXPECT_THAT(DatasetRegistry().Names(), Contains("testing_text_dir"));
}

TEST(RegistryTest, UnknownNameListsEveryRegisteredName) {
  auto entry = RouterRegistry().Find("token_chioce");
  ASSERT_FALSE(entry.ok());
  EXPECT_EQ(entry.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(entry.status().message(), HasSubstr("unknown router 'token_chioce'"));
  EXPECT_THAT(entry.status().message(), HasSubstr("testing_first_expert"));
}

struct Entry {
  std::string description;
  int value = 0;
};

TEST(RegistryTest, RegistersAndFindsLocalEntries) {
  Registry<Entry> registry("widget");
  EXPECT_TRUE(registry.Register("b", {"second", 2}));
  EXPECT_TRUE(registry.Register("a", {"first", 1}));
  EXPECT_EQ(registry.Names(), (std::vector<std::string>{"a", "b"}));
  auto found = registry.Find("b");
  ASSERT_TRUE(found.ok());
  EXPECT_EQ((*found)->value, 2);
  EXPECT_THAT(registry.Find("c").status().message(), HasSubstr("registered widgets: a, b"));
}

TEST(RegistryDeathTest, DuplicateNameAborts) {
  Registry<Entry> registry("widget");
  registry.Register("a", {"first", 1});
  EXPECT_DEATH(registry.Register("a", {"again", 2}), "registered twice");
}

TEST(RegistryTest, CreateRouterChecksOptionsCase) {
  RouterSpec spec;
  spec.set_name("testing_first_expert");
  spec.mutable_unified();
  auto router = CreateRouter(spec, RouterDims{8, 4, 2, true});
  ASSERT_FALSE(router.ok());
  EXPECT_THAT(router.status().message(), HasSubstr("router.unified"));
  EXPECT_THAT(router.status().message(), HasSubstr("router.hash"));

  spec.mutable_hash();
  router = CreateRouter(spec, RouterDims{8, 4, 2, true});
  ASSERT_TRUE(router.ok()) << router.status();
  EXPECT_TRUE((*router)->IsCausal(true));
}

}  // namespace
}  // namespace moelab
