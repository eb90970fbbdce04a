#include "data/unicode.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <utf8proc.h>

#include <cstdlib>
#include <memory>

#include "core/error.h"

namespace mg::data::unicode {

namespace {

// Second-byte range of a well-formed sequence starting with lead byte c, and its length n
// (Table 3-7). n = 0: c cannot start a sequence (a continuation byte, C0, C1, F5..FF).
struct Lead {
  int n;
  unsigned char lo, hi;
};
Lead lead_of(unsigned char c) {
  if (c < 0x80) return {1, 0, 0};
  if (c >= 0xC2 && c <= 0xDF) return {2, 0x80, 0xBF};
  if (c == 0xE0) return {3, 0xA0, 0xBF};
  if (c == 0xED) return {3, 0x80, 0x9F};  // no surrogates
  if (c >= 0xE1 && c <= 0xEF) return {3, 0x80, 0xBF};
  if (c == 0xF0) return {4, 0x90, 0xBF};  // no overlong 4-byte forms
  if (c >= 0xF1 && c <= 0xF3) return {4, 0x80, 0xBF};
  if (c == 0xF4) return {4, 0x80, 0x8F};  // nothing above U+10FFFF
  return {0, 0, 0};
}

// How many bytes from s[i] form the longest prefix of a well-formed sequence (>= 1 when s[i]
// is a lead byte); `complete` says whether that prefix is the whole sequence.
size_t well_formed_prefix(std::string_view s, size_t i, bool& complete) {
  Lead l = lead_of((unsigned char)s[i]);
  if (l.n == 0) {
    complete = false;
    return 0;
  }
  size_t k = 1;
  for (; k < (size_t)l.n && i + k < s.size(); ++k) {
    unsigned char c = (unsigned char)s[i + k];
    unsigned char lo = k == 1 ? l.lo : 0x80, hi = k == 1 ? l.hi : 0xBF;
    if (c < lo || c > hi) break;
  }
  complete = k == (size_t)l.n;
  return k;
}

constexpr const char* kReplacement = "\xEF\xBF\xBD";  // U+FFFD

}  // namespace

bool is_valid_utf8(std::string_view s) {
  for (size_t i = 0; i < s.size();) {
    if ((unsigned char)s[i] < 0x80) {
      ++i;
      continue;
    }
    bool complete;
    size_t k = well_formed_prefix(s, i, complete);
    if (!complete) return false;
    i += k;
  }
  return true;
}

std::string to_valid_utf8(std::string_view s) {
  if (is_valid_utf8(s)) return std::string(s);
  std::string out;
  out.reserve(s.size() + 8);
  for (size_t i = 0; i < s.size();) {
    bool complete;
    size_t k = well_formed_prefix(s, i, complete);
    if (complete) {
      out.append(s.substr(i, k));
      i += k;
    } else {
      out += kReplacement;   // one U+FFFD for the maximal subpart s[i, i + k)
      i += k == 0 ? 1 : k;   // (a byte that starts nothing is a subpart of its own)
    }
  }
  return out;
}

size_t incomplete_utf8_tail(std::string_view s) {
  for (size_t k = 1; k <= 3 && k <= s.size(); ++k) {
    size_t i = s.size() - k;
    Lead l = lead_of((unsigned char)s[i]);
    if (l.n == 0) continue;  // a continuation byte (or junk): look further back
    if (l.n == 1) return 0;  // ASCII: nothing pending
    bool complete;
    size_t len = well_formed_prefix(s, i, complete);
    // A lead byte always starts a fresh sequence, so s[i, end) is pending exactly when all of
    // it is a proper prefix of a well-formed sequence.
    return (!complete && len == k) ? k : 0;
  }
  return 0;
}

std::string nfc(std::string_view s) {
  bool ascii = true;
  for (unsigned char c : s) ascii &= c < 0x80;
  if (ascii) return std::string(s);
  utf8proc_uint8_t* out = nullptr;
  utf8proc_ssize_t n = utf8proc_map((const utf8proc_uint8_t*)s.data(), (utf8proc_ssize_t)s.size(), &out,
                                    (utf8proc_option_t)(UTF8PROC_STABLE | UTF8PROC_COMPOSE));
  MG_CHECK(n >= 0, "unicode::nfc: utf8proc failed: ", utf8proc_errmsg(n));
  std::unique_ptr<utf8proc_uint8_t, decltype(&std::free)> hold(out, &std::free);
  return std::string((const char*)out, (size_t)n);
}

// ---- Regex ------------------------------------------------------------------------------------

namespace {
// One match-data block per thread, shared by every pattern: we read only the whole match
// (ovector pair 0), and PCRE2 fills what fits.
pcre2_match_data* thread_match_data() {
  struct Holder {
    pcre2_match_data* md = pcre2_match_data_create(4, nullptr);
    ~Holder() { pcre2_match_data_free(md); }
  };
  thread_local Holder h;
  MG_CHECK(h.md, "unicode::Regex: out of memory for PCRE2 match data");
  return h.md;
}
}  // namespace

Regex::Regex(const std::string& pattern) {
  int err = 0;
  PCRE2_SIZE off = 0;
  pcre2_code* code = pcre2_compile((PCRE2_SPTR)pattern.data(), pattern.size(),
                                   PCRE2_UTF | PCRE2_UCP | PCRE2_NO_UTF_CHECK, &err, &off, nullptr);
  if (!code) {
    PCRE2_UCHAR msg[256];
    pcre2_get_error_message(err, msg, sizeof msg);
    throw Error(detail::cat("unicode::Regex: pattern \"", pattern, "\" at byte ", off, ": ", (const char*)msg));
  }
  code_ = code;
  jit_ = pcre2_jit_compile(code, PCRE2_JIT_COMPLETE) == 0;
}

Regex::~Regex() {
  if (code_) pcre2_code_free((pcre2_code*)code_);
}
Regex::Regex(Regex&& o) noexcept : code_(o.code_), jit_(o.jit_) { o.code_ = nullptr; }
Regex& Regex::operator=(Regex&& o) noexcept {
  std::swap(code_, o.code_);
  std::swap(jit_, o.jit_);
  return *this;
}

bool Regex::run(std::string_view text, size_t from, bool anchored, size_t& start, size_t& end) const {
  pcre2_match_data* md = thread_match_data();
  // The text was checked (or made) valid UTF-8 by the caller: skip PCRE2's own check, which
  // would otherwise rescan the whole subject on every call.
  uint32_t opts = PCRE2_NO_UTF_CHECK | (anchored ? PCRE2_ANCHORED : 0);
  int rc = jit_ && !anchored ? pcre2_jit_match((pcre2_code*)code_, (PCRE2_SPTR)text.data(), text.size(), from, opts, md, nullptr)
                             : pcre2_match((pcre2_code*)code_, (PCRE2_SPTR)text.data(), text.size(), from, opts, md, nullptr);
  if (rc == PCRE2_ERROR_NOMATCH) return false;
  if (rc < 0) {  // (rc == 0: the ovector was too small for groups we do not read)
    PCRE2_UCHAR msg[256];
    pcre2_get_error_message(rc, msg, sizeof msg);
    throw Error(detail::cat("unicode::Regex: matching failed: ", (const char*)msg));
  }
  PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
  start = ov[0];
  end = ov[1];
  return true;
}

bool Regex::find(std::string_view text, size_t from, size_t& start, size_t& end) const {
  return run(text, from, false, start, end);
}

size_t Regex::match_at(std::string_view text, size_t at) const {
  size_t s, e;
  return run(text, at, true, s, e) ? e : npos;
}

// ---- Character classes ------------------------------------------------------------------------

namespace {
// A class tested one character at a time; ASCII answers are computed once from the same
// pattern (the hot path: most text is ASCII).
class CharClass {
 public:
  explicit CharClass(const std::string& pattern) : re_(pattern) {
    for (int c = 0; c < 128; ++c) {
      char s = (char)c;
      ascii_[c] = re_.match_at(std::string_view(&s, 1), 0) != Regex::npos;
    }
  }
  bool at(std::string_view text, size_t i) const {
    unsigned char c = (unsigned char)text[i];
    return c < 0x80 ? ascii_[c] : re_.match_at(text, i) != Regex::npos;
  }

 private:
  Regex re_;
  bool ascii_[128];
};
}  // namespace

bool is_white_space_at(std::string_view text, size_t at) {
  static const CharClass cls("\\p{White_Space}");
  return cls.at(text, at);
}

bool is_word_char_at(std::string_view text, size_t at) {
  static const CharClass cls("[\\p{Alphabetic}\\p{M}\\p{Nd}\\p{Pc}\\p{Join_Control}]");
  return cls.at(text, at);
}

size_t previous_char_start(std::string_view text, size_t at) {
  size_t i = at - 1;
  while (i > 0 && ((unsigned char)text[i] & 0xC0) == 0x80) --i;
  return i;
}

size_t utf8_char_length(unsigned char c) {
  int n = lead_of(c).n;
  return n == 0 ? 1 : (size_t)n;
}

}  // namespace mg::data::unicode
