#include "core/provenance.h"

#include <cstdio>
#include <cstdlib>
#include <string>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"

namespace moelab {
namespace {

// The standard output of `command` run by /bin/sh, whitespace-trimmed;
// false when it could not run or exited non-zero.
bool CommandOutput(const std::string& command, std::string* output) {
  std::FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) return false;
  std::string text;
  char buffer[4096];
  size_t n;
  while ((n = std::fread(buffer, 1, sizeof(buffer), pipe)) > 0) text.append(buffer, n);
  const int status = pclose(pipe);
  if (status != 0) return false;
  *output = std::string(absl::StripAsciiWhitespace(text));
  return true;
}

std::string ShellQuoted(const std::string& s) {
  return absl::StrCat("'", absl::StrReplaceAll(s, {{"'", "'\\''"}}), "'");
}

std::string SourceDirectory() {
  for (const char* name : {"BUILD_WORKSPACE_DIRECTORY", "MOELAB_SOURCE_DIR"}) {
    const char* value = std::getenv(name);
    if (value != nullptr && *value != '\0') return value;
  }
  return ".";
}

// Tables write their reports into results/ while their runs are cached:
// those files are outputs, not the code that produced the numbers.
constexpr char kCodePaths[] = " -- . ':(exclude)results'";

}  // namespace

std::string RevisionLabel(const SourceRevision& source) {
  if (source.commit().empty()) return "unknown";
  std::string label = source.commit().substr(0, 12);
  if (source.modified()) absl::StrAppend(&label, "+", source.modification_hash());
  return label;
}

SourceRevision CurrentSourceRevision() {
  // Taken once per process: a long `reproduce` must record the code its
  // binary was built from for every run, not whatever the tree holds when
  // each run starts.
  static const SourceRevision* const kRevision = new SourceRevision(ReadSourceRevision());
  return *kRevision;
}

SourceRevision ReadSourceRevision() {
  SourceRevision source;
  const std::string git = absl::StrCat("git -C ", ShellQuoted(SourceDirectory()), " ");
  std::string commit;
  if (!CommandOutput(git + "rev-parse --verify HEAD 2>/dev/null", &commit) || commit.empty()) {
    source.set_revision(RevisionLabel(source));
    return source;
  }
  source.set_commit(commit);
  std::string changes;
  if (CommandOutput(absl::StrCat(git, "status --porcelain", kCodePaths, " 2>/dev/null"),
                    &changes) &&
      !changes.empty()) {
    source.set_modified(true);
    // Tracked changes, plus each untracked file's name and content hash: the
    // same modified tree always gets the same hash.
    std::string hash;
    const std::string untracked = absl::StrCat(git, "ls-files --others --exclude-standard");
    const std::string command = absl::StrCat(
        "{ ", git, "diff HEAD --binary", kCodePaths, "; ", untracked, kCodePaths, "; ", untracked,
        " -z", kCodePaths, " | (cd ", ShellQuoted(SourceDirectory()),
        " && xargs -0 -r git hash-object --); } 2>/dev/null | git hash-object --stdin");
    if (CommandOutput(command, &hash) && hash.size() >= 12) {
      source.set_modification_hash(hash.substr(0, 12));
    } else {
      source.set_modification_hash("unhashed");
    }
  }
  source.set_revision(RevisionLabel(source));
  return source;
}

}  // namespace moelab
