#!/usr/bin/env bash
# Every plugin registered anywhere in the source tree must be present in the
# final `run` binary: static registration only survives linking with
# alwayslink = 1, and a forgotten dependency would drop a plugin silently.
# Usage: plugins_test.sh RUN_BINARY SOURCE...
set -euo pipefail
run_binary="$1"
shift
listing=$("$run_binary" --list)
# Registered names: MOELAB_REGISTER_X("name", ...) or MOELAB_REGISTER_X(kConst, ...)
# with `kConst[] = "name"` in the same file, else in another given file (a
# task's name lives in a header of its own).
names=$(perl -e '
  my %text;
  for my $file (@ARGV) { open(my $in, "<", $file) or die "$file: $!"; local $/; $text{$file} = <$in>; }
  my $all = join("\n", values %text);
  for my $file (@ARGV) {
    $_ = $text{$file};
    while (/MOELAB_REGISTER_(?:ROUTER|MODEL|DATASET|TASK|LAYER_METRIC)\(\s*(?:"([a-z0-9_]+)"|(k\w+))/g) {
      my ($literal, $constant) = ($1, $2);
      if (defined $literal) { print "$literal\n"; next; }
      if (/\b\Q$constant\E\[\]\s*=\s*"([a-z0-9_]+)"/) { print "$1\n"; }
      elsif ($all =~ /\b\Q$constant\E\[\]\s*=\s*"([a-z0-9_]+)"/) { print "$1\n"; }
      else { print "UNRESOLVED:$constant\n"; }
    }
  }' "$@")
missing=0
checked=0
while IFS= read -r name; do
  [[ -z "$name" || "$name" == testing_* ]] && continue
  checked=$((checked + 1))
  if ! grep -qE "^  ${name} " <<<"$listing"; then
    echo "missing from run --list: '$name'"
    missing=$((missing + 1))
  fi
done <<<"$names"
echo "$checked registered plugins checked, $missing missing"
[[ $checked -ge 19 && $missing -eq 0 ]]
