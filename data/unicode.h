// data/unicode.h — the Unicode facts a tokenizer needs, taken from libraries made for them:
// PCRE2 (compiled with UTF + UCP, so \p{L}, \p{N}, \p{White_Space}, ... are Unicode's own
// property tables) for patterns and character classes, utf8proc for NFC. No character table is
// written here by hand; the only thing this file knows itself is the structure of UTF-8.
//
//   unicode::Regex words("\\p{L}+");
//   for (size_t at = 0, s, e; words.find(text, at, s, e); at = e) use(text.substr(s, e - s));
//   std::string n = unicode::nfc("cafe\u0301");      // "caf\u00e9"
//   std::string ok = unicode::to_valid_utf8("a\xff");  // "a\uFFFD"
#pragma once
#include <cstddef>
#include <string>
#include <string_view>

namespace mg::data::unicode {

// ---- UTF-8 structure (Unicode 15, Table 3-7: well-formed byte sequences) ----------------------
bool is_valid_utf8(std::string_view s);

// Replaces every ill-formed sequence by U+FFFD, one per *maximal subpart* (Unicode §3.9,
// "U+FFFD substitution of maximal subparts"): the rule of Rust's String::from_utf8_lossy (which
// Hugging Face's decode uses), the WHATWG decoder and Node's Buffer.toString. E.g. "\xE2\x82A"
// -> "\uFFFDA" (one: E2 82 is the start of a valid 3-byte sequence), "\xC0\xAF" -> two.
std::string to_valid_utf8(std::string_view s);

// The number of bytes (0..3) at the end of s that start a well-formed sequence but stop before
// its end: what a streaming decoder holds back until the next bytes arrive. Bytes that can no
// longer become valid (ill-formed already) are not counted.
size_t incomplete_utf8_tail(std::string_view s);

// ---- Normalisation (utf8proc) ------------------------------------------------------------------
// Canonical composition (NFC) of valid UTF-8; an all-ASCII string is returned as is.
std::string nfc(std::string_view s);

// ---- Patterns (PCRE2, UTF + UCP, JIT-compiled when the library supports it) --------------------
class Regex {
 public:
  explicit Regex(const std::string& pattern);  // a bad pattern is an mg::Error naming the offset
  ~Regex();
  Regex(Regex&& o) noexcept;
  Regex& operator=(Regex&& o) noexcept;
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  // The leftmost match starting at or after byte `from` of valid UTF-8 `text` (from on a
  // character boundary): true and [start, end), or false. Thread-safe (per-thread match data).
  bool find(std::string_view text, size_t from, size_t& start, size_t& end) const;
  // A match that starts exactly at `at`: its end, or npos.
  size_t match_at(std::string_view text, size_t at) const;

  static constexpr size_t npos = std::string::npos;

 private:
  bool run(std::string_view text, size_t from, bool anchored, size_t& start, size_t& end) const;
  void* code_ = nullptr;  // pcre2_code_8*
  bool jit_ = false;
};

// ---- Character classes, defined as Rust's `regex` crate defines \s and \w ----------------------
// (Hugging Face's added-token code uses them: lstrip/rstrip take \s, single_word looks at \w.)
// \s = White_Space; \w = Alphabetic | Mark | Decimal_Number | Connector_Punctuation | Join_Control.
// Each takes the character that starts at byte `at` of valid UTF-8 `text`.
bool is_white_space_at(std::string_view text, size_t at);
bool is_word_char_at(std::string_view text, size_t at);

// Byte offset of the character before byte `at` (at > 0, on a boundary).
size_t previous_char_start(std::string_view text, size_t at);
// Byte length of the character that starts with lead byte c (1 for a stray byte).
size_t utf8_char_length(unsigned char c);

}  // namespace mg::data::unicode
