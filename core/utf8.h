// core/utf8.h — well-formed UTF-8 (RFC 3629; Table 3-7 of the Unicode standard), for the JSON
// reader (strings must be UTF-8) and the text loader (a file that is mostly not UTF-8 is not
// text).
#pragma once
#include <cstddef>
#include <string_view>

namespace mg {

// The length (1..4) of the well-formed UTF-8 sequence at the start of `b`, or 0 when there is
// none: a stray continuation byte, an overlong form (C0, C1, E0 80..9F, F0 80..8F), an encoded
// surrogate (ED A0..BF), a code point above U+10FFFF (F4 90.., F5..FF), or a truncated
// sequence. An empty `b` gives 0.
inline size_t utf8_sequence_length(std::string_view b) {
  auto at = [&](size_t i) { return i < b.size() ? (unsigned char)b[i] : 0u; };
  auto cont = [&](size_t i, unsigned lo = 0x80, unsigned hi = 0xBF) {
    return at(i) >= lo && at(i) <= hi;
  };
  if (b.empty()) return 0;
  const unsigned c = at(0);
  if (c < 0x80) return 1;
  if (c >= 0xC2 && c <= 0xDF) return cont(1) ? 2 : 0;
  if (c == 0xE0) return cont(1, 0xA0) && cont(2) ? 3 : 0;
  if (c == 0xED) return cont(1, 0x80, 0x9F) && cont(2) ? 3 : 0;
  if (c >= 0xE1 && c <= 0xEF) return cont(1) && cont(2) ? 3 : 0;
  if (c == 0xF0) return cont(1, 0x90) && cont(2) && cont(3) ? 4 : 0;
  if (c >= 0xF1 && c <= 0xF3) return cont(1) && cont(2) && cont(3) ? 4 : 0;
  if (c == 0xF4) return cont(1, 0x80, 0x8F) && cont(2) && cont(3) ? 4 : 0;
  return 0;
}

}  // namespace mg
