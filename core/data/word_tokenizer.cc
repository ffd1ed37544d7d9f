#include "core/data/word_tokenizer.h"

#include <cstdint>

namespace moelab {
namespace {

struct CodePoint {
  uint32_t value;
  int length;  // bytes
};

constexpr uint32_t kInvalid = 0xFFFFFFFFu;

// Decodes the UTF-8 sequence at s[i]; a malformed byte decodes as kInvalid
// of length 1 (and becomes a token of its own).
CodePoint DecodeAt(absl::string_view s, size_t i) {
  const auto byte = [&](size_t k) { return static_cast<uint8_t>(s[k]); };
  const uint8_t lead = byte(i);
  if (lead < 0x80) return {lead, 1};
  int length;
  uint32_t value;
  if ((lead & 0xE0) == 0xC0) {
    length = 2;
    value = lead & 0x1F;
  } else if ((lead & 0xF0) == 0xE0) {
    length = 3;
    value = lead & 0x0F;
  } else if ((lead & 0xF8) == 0xF0) {
    length = 4;
    value = lead & 0x07;
  } else {
    return {kInvalid, 1};
  }
  if (i + length > s.size()) return {kInvalid, 1};
  for (int k = 1; k < length; ++k) {
    if ((byte(i + k) & 0xC0) != 0x80) return {kInvalid, 1};
    value = (value << 6) | (byte(i + k) & 0x3F);
  }
  return {value, length};
}

bool IsSpace(uint32_t c) {
  return c == ' ' || (c >= '\t' && c <= '\r') || c == 0xA0 || (c >= 0x2000 && c <= 0x200B) ||
         c == 0x202F || c == 0x205F || c == 0x3000 || c == 0xFEFF;
}

bool IsAsciiLetter(uint32_t c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
bool IsDigit(uint32_t c) { return c >= '0' && c <= '9'; }

bool IsWordChar(uint32_t c) {
  if (c < 0x80) return IsAsciiLetter(c) || IsDigit(c);
  return c >= 0xC0 && c <= 0x4FF && c != 0xD7 && c != 0xF7;
}

// Rewrites curly quotes and Unicode hyphens to ASCII. Returns `line` itself
// when there is nothing to rewrite.
absl::string_view NormalizePunctuation(absl::string_view line, std::string* storage) {
  bool rewrite = false;
  for (char c : line) rewrite |= static_cast<uint8_t>(c) >= 0x80;
  if (!rewrite) return line;
  storage->clear();
  storage->reserve(line.size());
  for (size_t i = 0; i < line.size();) {
    const CodePoint cp = DecodeAt(line, i);
    switch (cp.value) {
      case 0x2018:
      case 0x2019:
      case 0x02BC:
        storage->push_back('\'');
        break;
      case 0x201C:
      case 0x201D:
        storage->push_back('"');
        break;
      case 0x2010:
      case 0x2011:
        storage->push_back('-');
        break;
      default:
        storage->append(line.data() + i, cp.length);
    }
    i += cp.length;
  }
  return *storage;
}

class ProseScanner {
 public:
  ProseScanner(absl::string_view s, TokenSink emit) : s_(s), emit_(emit) {}

  void Run() {
    size_t i = 0;
    while (i < s_.size()) {
      const CodePoint cp = DecodeAt(s_, i);
      if (IsSpace(cp.value)) {
        i += cp.length;
      } else if (!IsWordChar(cp.value)) {
        emit_(s_.substr(i, cp.length));
        i += cp.length;
      } else if (const size_t initialism = InitialismLength(i)) {
        emit_(s_.substr(i, initialism));
        i += initialism;
      } else {
        i = ScanWord(i);
      }
    }
  }

 private:
  bool WordCharAt(size_t i) const { return i < s_.size() && IsWordChar(DecodeAt(s_, i).value); }
  char At(size_t i) const { return i < s_.size() ? s_[i] : '\0'; }
  static bool Is(char c, char lower) { return c == lower || c == lower - 32; }

  size_t EndOfRun(size_t i) const {
    while (i < s_.size()) {
      const CodePoint cp = DecodeAt(s_, i);
      if (!IsWordChar(cp.value)) break;
      i += cp.length;
    }
    return i;
  }

  // Length of "X.Y." (two or more letter-period pairs) at i, else 0.
  size_t InitialismLength(size_t i) const {
    size_t p = i;
    int pairs = 0;
    while (IsAsciiLetter(static_cast<uint8_t>(At(p))) && At(p + 1) == '.') {
      p += 2;
      ++pairs;
    }
    return pairs >= 2 ? p - i : 0;
  }

  // Length of a contraction suffix ('s 'm 'd 'll 're 've) starting at the
  // apostrophe at j and ending at a word boundary, else 0.
  size_t SuffixLength(size_t j) const {
    const char a = At(j + 1), b = At(j + 2);
    if ((Is(a, 's') || Is(a, 'm') || Is(a, 'd')) && !WordCharAt(j + 2)) {
      return 2;
    }
    if (((Is(a, 'l') && Is(b, 'l')) || (Is(a, 'r') && Is(b, 'e')) || (Is(a, 'v') && Is(b, 'e'))) &&
        !WordCharAt(j + 3)) {
      return 3;
    }
    return 0;
  }

  // Emits the word starting at i with its contractions and connectors;
  // returns where scanning resumes.
  size_t ScanWord(size_t i) {
    size_t start = i;
    size_t j = EndOfRun(i);
    while (true) {
      if (At(j) == '\'') {
        if (const size_t suffix = SuffixLength(j)) {
          emit_(s_.substr(start, j - start));
          emit_(s_.substr(j, suffix));
          return j + suffix;
        }
        if (j > start && Is(At(j - 1), 'n') && Is(At(j + 1), 't') && !WordCharAt(j + 2)) {
          if (j - 1 > start) emit_(s_.substr(start, j - 1 - start));
          emit_(s_.substr(j - 1, 3));
          return j + 2;
        }
        if (WordCharAt(j + 1)) {  // O'Brien, o'clock
          j = EndOfRun(j + 1);
          continue;
        }
      }
      emit_(s_.substr(start, j - start));
      if (!WordCharAt(j + 1)) return j;
      const char c = At(j);
      const bool between_digits =
          IsDigit(static_cast<uint8_t>(At(j - 1))) && IsDigit(static_cast<uint8_t>(At(j + 1)));
      if (c == '-') {
        emit_("@-@");
      } else if (c == ',' && between_digits) {
        emit_("@,@");
      } else if (c == '.' && between_digits) {
        emit_("@.@");
      } else {
        return j;
      }
      start = j + 1;
      j = EndOfRun(start);
    }
  }

  absl::string_view s_;
  TokenSink emit_;
};

}  // namespace

void TokenizeProse(absl::string_view line, TokenSink emit) {
  std::string storage;
  ProseScanner(NormalizePunctuation(line, &storage), emit).Run();
}

std::vector<std::string> TokenizeProseToStrings(absl::string_view line) {
  std::vector<std::string> tokens;
  TokenizeProse(line, [&](absl::string_view token) { tokens.emplace_back(token); });
  return tokens;
}

}  // namespace moelab
