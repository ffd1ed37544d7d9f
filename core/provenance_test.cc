#include "core/provenance.h"

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace moelab {
namespace {

namespace fs = std::filesystem;

TEST(RevisionLabelTest, CommitPrefixAndModification) {
  SourceRevision source;
  EXPECT_EQ(RevisionLabel(source), "unknown");
  source.set_commit("0123456789abcdef0123456789abcdef01234567");
  EXPECT_EQ(RevisionLabel(source), "0123456789ab");
  source.set_modified(true);
  source.set_modification_hash("fedcba987654");
  EXPECT_EQ(RevisionLabel(source), "0123456789ab+fedcba987654");
}

class CurrentSourceRevisionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::path(std::getenv("TEST_TMPDIR") ? std::getenv("TEST_TMPDIR") : "/tmp") /
           "provenance_repo";
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    unsetenv("BUILD_WORKSPACE_DIRECTORY");
    // Even when the test's temporary folder lies inside some checkout, git
    // must not find that one above dir_.
    setenv("GIT_CEILING_DIRECTORIES", dir_.parent_path().c_str(), 1);
    setenv("MOELAB_SOURCE_DIR", dir_.c_str(), 1);
  }
  void TearDown() override {
    unsetenv("MOELAB_SOURCE_DIR");
    unsetenv("GIT_CEILING_DIRECTORIES");
  }

  void Write(const std::string& name, const std::string& text) {
    std::ofstream(dir_ / name) << text;
  }
  int Git(const std::string& args) {
    return std::system(absl::StrCat("git -C '", dir_.string(),
                                    "' -c user.name=t -c user.email=t@t ", args, " >/dev/null 2>&1")
                           .c_str());
  }

  fs::path dir_;
};

TEST_F(CurrentSourceRevisionTest, NotACheckoutIsUnknown) {
  const SourceRevision source = ReadSourceRevision();
  EXPECT_EQ(source.commit(), "");
  EXPECT_EQ(source.revision(), "unknown");
}

TEST_F(CurrentSourceRevisionTest, CleanModifiedAndUntrackedTrees) {
  if (Git("init -q") != 0) GTEST_SKIP() << "git is not available";
  Write("a.cc", "int a;\n");
  ASSERT_EQ(Git("add a.cc"), 0);
  ASSERT_EQ(Git("commit -q -m first"), 0);

  const SourceRevision clean = ReadSourceRevision();
  ASSERT_EQ(clean.commit().size(), 40u);
  EXPECT_FALSE(clean.modified());
  EXPECT_EQ(clean.revision(), clean.commit().substr(0, 12));

  Write("a.cc", "int a = 1;\n");
  const SourceRevision modified = ReadSourceRevision();
  EXPECT_EQ(modified.commit(), clean.commit());
  EXPECT_TRUE(modified.modified());
  EXPECT_EQ(modified.modification_hash().size(), 12u);
  EXPECT_EQ(modified.revision(),
            absl::StrCat(clean.commit().substr(0, 12), "+", modified.modification_hash()));
  // The same tree gives the same label; another modification another one.
  EXPECT_EQ(ReadSourceRevision().revision(), modified.revision());
  Write("a.cc", "int a = 2;\n");
  EXPECT_NE(ReadSourceRevision().revision(), modified.revision());

  // Reports under results/ are outputs, not code: writing one leaves the
  // revision as it was.
  Write("a.cc", "int a;\n");
  std::filesystem::create_directories(dir_ / "results");
  Write("results/table.md", "a table\n");
  EXPECT_EQ(ReadSourceRevision().revision(), clean.revision());

  // An untracked file's content counts too.
  Write("a.cc", "int a;\n");
  Write("b.cc", "int b;\n");
  const SourceRevision untracked = ReadSourceRevision();
  EXPECT_TRUE(untracked.modified());
  Write("b.cc", "int b = 3;\n");
  EXPECT_NE(ReadSourceRevision().revision(), untracked.revision());
}

}  // namespace
}  // namespace moelab
