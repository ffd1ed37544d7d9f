#include "experiments/table_rows.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>

#include "absl/strings/str_cat.h"
#include "google/protobuf/text_format.h"

namespace moelab {
namespace {

using ::testing::HasSubstr;

TableSpec Parse(const std::string& text) {
  TableSpec table;
  EXPECT_TRUE(google::protobuf::TextFormat::ParseFromString(absl::StrCat(R"pb(
                                                                           name: "sweep"
                                                                           rows { label: "smoe" }
                                                                         )pb",
                                                                         text),
                                                            &table))
      << text;
  return table;
}

TEST(ValidateSelectionTest, ACompleteRuleWithCandidatesPasses) {
  EXPECT_TRUE(ValidateSelection(Parse(R"pb(
                rows { label: "sim 0.1" group: "similarity" }
                rows { label: "sim 1" group: "similarity" }
                selection { column: VALID_PERPLEXITY expect: A_LOWER }
              )pb"))
                  .ok());
  // Neither groups nor a rule: an ordinary table.
  EXPECT_TRUE(ValidateSelection(Parse("")).ok());
}

TEST(ValidateSelectionTest, GroupsWithoutARuleAreRefused) {
  const absl::Status status =
      ValidateSelection(Parse(R"pb(rows { label: "sim 0.1" group: "similarity" })pb"));
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("row 'sim 0.1' has a group but the table has no "
                                          "selection"));
}

TEST(ValidateSelectionTest, AnIncompleteRuleIsRefused) {
  EXPECT_THAT(ValidateSelection(Parse(R"pb(
                rows { label: "sim" group: "similarity" }
                selection { expect: A_LOWER }
              )pb"))
                  .message(),
              HasSubstr("selection.column: unset"));
  EXPECT_THAT(ValidateSelection(Parse(R"pb(
                rows { label: "sim" group: "similarity" }
                selection { column: VALID_PERPLEXITY }
              )pb"))
                  .message(),
              HasSubstr("selection.expect: unset"));
  EXPECT_THAT(
      ValidateSelection(Parse("selection { column: VALID_PERPLEXITY expect: A_LOWER }")).message(),
      HasSubstr("no row has a group"));
}

}  // namespace
}  // namespace moelab
