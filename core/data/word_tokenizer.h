#ifndef MOELAB_CORE_DATA_WORD_TOKENIZER_H_
#define MOELAB_CORE_DATA_WORD_TOKENIZER_H_

// Word-level tokenisation of raw English prose into the style of WikiText's
// released files, so models and numbers on raw corpora (SOTU) compare with
// WikiText setups. Case is kept, as in WikiText.
//
//  * Curly quotes and apostrophes become ASCII (' and "), U+2010/U+2011
//    hyphens become '-'; nothing else is rewritten.
//  * Words are maximal runs of word characters: ASCII letters and digits and
//    the Latin, Greek and Cyrillic letters U+00C0..U+04FF (except × and ÷).
//  * Every other character that is not whitespace is a token by itself
//    (. , ; : ! ? ( ) $ % — – ° ...).
//  * Inside words, as in WikiText: a hyphen between word characters becomes
//    the token "@-@" ("Fellow-Citizens" -> Fellow @-@ Citizens), and a comma
//    or period between digits "@,@" / "@.@" ("3,000,000" -> 3 @,@ 000 @,@
//    000).
//  * Contractions split as in the Penn Treebank and WikiText: "don't" ->
//    do n't, "can't" -> ca n't, "it's" -> it 's, and likewise 'm 'd 'll 're
//    've (any case). Another apostrophe between word characters stays inside
//    the word (O'Brien, o'clock); elsewhere it is a token of its own.
//  * Initialisms of two or more single letters, each followed by a period,
//    are one token ("U.S.", "D.C.", "e.g."); other abbreviations split
//    ("Mr." -> Mr .).
//
// One pass over the line: time is linear in its length.

#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "core/data/corpus.h"

namespace moelab {

void TokenizeProse(absl::string_view line, TokenSink emit);

// TokenizeProse collected into strings (for tests and tools).
std::vector<std::string> TokenizeProseToStrings(absl::string_view line);

}  // namespace moelab

#endif  // MOELAB_CORE_DATA_WORD_TOKENIZER_H_
