#include "core/json.h"

#include <charconv>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <unordered_set>

#include "core/error.h"
#include "core/utf8.h"

namespace mg::json {

const char* kind_name(Kind k) {
  switch (k) {
    case Kind::null: return "null";
    case Kind::boolean: return "boolean";
    case Kind::number: return "number";
    case Kind::string: return "string";
    case Kind::array: return "array";
    case Kind::object: return "object";
  }
  return "?";
}

// ---- Value ------------------------------------------------------------------------------------
Value::Value(double v) : kind_(Kind::number), num_(v) {
  MG_CHECK(std::isfinite(v), "json: numbers must be finite, got ", v);
}

// "a number", "an object", "null": for messages.
static std::string with_article(Kind k) {
  if (k == Kind::null) return "null";
  return std::string(k == Kind::array || k == Kind::object ? "an " : "a ") + kind_name(k);
}

void Value::expect(Kind k) const {
  MG_CHECK(kind_ == k, "json: expected ", with_article(k), ", got ", with_article(kind_));
}

bool Value::as_bool() const { expect(Kind::boolean); return bool_; }
double Value::as_double() const { expect(Kind::number); return num_; }
const std::string& Value::as_string() const { expect(Kind::string); return str_; }
const std::vector<Value>& Value::as_array() const { expect(Kind::array); return arr_; }
const std::vector<std::pair<std::string, Value>>& Value::as_object() const {
  expect(Kind::object);
  return obj_;
}

int64_t Value::as_int() const {
  expect(Kind::number);
  if (is_int_) return int_;
  // 2^63 is exactly representable; every double below it in magnitude converts exactly.
  MG_CHECK(num_ == std::floor(num_) && std::fabs(num_) < 9223372036854775808.0,
           "json: expected an integer, got ", num_);
  return (int64_t)num_;
}

const Value* Value::find(const std::string& key) const {
  expect(Kind::object);
  for (auto& [k, v] : obj_)
    if (k == key) return &v;
  return nullptr;
}

const Value& Value::at(const std::string& key) const {
  const Value* v = find(key);
  MG_CHECK(v != nullptr, "json: object has no key '", key, "'");
  return *v;
}

Value& Value::set(const std::string& key, Value v) {
  expect(Kind::object);
  for (auto& [k, old] : obj_)
    if (k == key) return old = std::move(v);
  obj_.emplace_back(key, std::move(v));
  return obj_.back().second;
}

Value& Value::push_back(Value v) {
  expect(Kind::array);
  arr_.push_back(std::move(v));
  return arr_.back();
}

size_t Value::size() const {
  if (kind_ == Kind::array) return arr_.size();
  expect(Kind::object);
  return obj_.size();
}

bool Value::operator==(const Value& o) const {
  if (kind_ != o.kind_) return false;
  switch (kind_) {
    case Kind::null: return true;
    case Kind::boolean: return bool_ == o.bool_;
    case Kind::number:
      return (is_int_ && o.is_int_) ? int_ == o.int_ : num_ == o.num_;
    case Kind::string: return str_ == o.str_;
    case Kind::array: return arr_ == o.arr_;
    case Kind::object: return obj_ == o.obj_;
  }
  return false;
}

// ---- Parser: recursive descent over the grammar of RFC 8259 -------------------------------------
class Parser {
 public:
  Parser(std::string_view text, const std::string& source, size_t base)
      : s_(text), source_(source), base_(base) {}

  // One value surrounded by whitespace; with `end`, whatever follows is the caller's to judge.
  Value document(size_t* end) {
    skip_ws();
    Value v = value(0);
    skip_ws();
    if (end) {
      *end = base_ + pos_;
      return v;
    }
    if (pos_ < s_.size()) fail("unexpected '", printable(s_[pos_]), "' after the JSON value");
    return v;
  }

 private:
  static constexpr int kMaxDepth = 256;

  template <typename... Args>
  [[noreturn]] void fail_at(size_t at, const Args&... what) const {
    throw Error(detail::cat(source_, ": byte ", base_ + at, ": ", what...));
  }
  template <typename... Args>
  [[noreturn]] void fail(const Args&... what) const { fail_at(pos_, what...); }

  static std::string printable(char c) {
    if ((unsigned char)c >= 0x20 && (unsigned char)c < 0x7f) return std::string(1, c);
    char buf[8];
    std::snprintf(buf, sizeof buf, "\\x%02x", (unsigned char)c);
    return buf;
  }

  bool at_end() const { return pos_ >= s_.size(); }
  char peek() const { return at_end() ? '\0' : s_[pos_]; }

  void skip_ws() {
    while (!at_end() && (s_[pos_] == ' ' || s_[pos_] == '\t' || s_[pos_] == '\n' || s_[pos_] == '\r'))
      ++pos_;
  }

  void expect_char(char c, const char* context) {
    if (at_end()) fail("unexpected end of input, expected '", c, "' ", context);
    if (s_[pos_] != c) fail("expected '", c, "' ", context, ", got '", printable(s_[pos_]), "'");
    ++pos_;
  }

  Value value(int depth) {
    if (depth > kMaxDepth) fail("nesting deeper than ", kMaxDepth, " levels");
    if (at_end()) fail("unexpected end of input, expected a value");
    const size_t start = pos_;
    Value v = value_here(depth);
    v.offset_ = base_ + start;
    return v;
  }
  Value value_here(int depth) {
    switch (s_[pos_]) {
      case '{': return object(depth);
      case '[': return array(depth);
      case '"': return Value(string());
      case 't': literal("true"); return Value(true);
      case 'f': literal("false"); return Value(false);
      case 'n': literal("null"); return Value();
      default:
        if (s_[pos_] == '-' || (s_[pos_] >= '0' && s_[pos_] <= '9')) return number();
        fail("unexpected '", printable(s_[pos_]), "', expected a value");
    }
  }

  void literal(std::string_view word) {
    if (s_.substr(pos_, word.size()) != word) fail("invalid literal, expected '", word, "'");
    pos_ += word.size();
  }

  static constexpr size_t kLinearKeyScan = 32;

  Value object(int depth) {
    const size_t start = pos_;
    ++pos_;  // '{'
    Value obj = Value::object();
    std::unordered_set<std::string> seen;  // keys, once there are kLinearKeyScan of them
    skip_ws();
    if (peek() == '}') { ++pos_; return obj; }
    while (true) {
      skip_ws();
      if (peek() != '"') {
        if (at_end()) fail("unexpected end of input in the object starting at byte ", base_ + start);
        fail("expected a string key, got '", printable(s_[pos_]), "'");
      }
      const size_t key_pos = pos_;
      std::string key = string();
      // Duplicate keys: a linear scan for small objects, a hash set once an object is large
      // (a tokenizer.json vocabulary has ~50k keys; scanning would be quadratic).
      bool dup = false;
      if (obj.obj_.size() < kLinearKeyScan) {
        for (auto& [k, v] : obj.obj_) dup |= k == key;
      } else {
        if (seen.empty())
          for (auto& [k, v] : obj.obj_) seen.insert(k);
        dup = !seen.insert(key).second;
      }
      if (dup) fail_at(key_pos, "duplicate key '", key, "'");
      skip_ws();
      expect_char(':', "after an object key");
      skip_ws();
      Value v = value(depth + 1);
      obj.obj_.emplace_back(std::move(key), std::move(v));
      skip_ws();
      if (at_end()) fail("unexpected end of input in the object starting at byte ", base_ + start);
      if (s_[pos_] == '}') { ++pos_; return obj; }
      if (s_[pos_] != ',') fail("expected ',' or '}' in an object, got '", printable(s_[pos_]), "'");
      ++pos_;
    }
  }

  Value array(int depth) {
    const size_t start = pos_;
    ++pos_;  // '['
    Value arr = Value::array();
    skip_ws();
    if (peek() == ']') { ++pos_; return arr; }
    while (true) {
      skip_ws();
      arr.arr_.push_back(value(depth + 1));
      skip_ws();
      if (at_end()) fail("unexpected end of input in the array starting at byte ", base_ + start);
      if (s_[pos_] == ']') { ++pos_; return arr; }
      if (s_[pos_] != ',') fail("expected ',' or ']' in an array, got '", printable(s_[pos_]), "'");
      ++pos_;
    }
  }

  // number = [-] int [frac] [exp];  int = 0 | [1-9][0-9]*
  Value number() {
    const size_t start = pos_;
    auto digits = [&] {
      size_t n = 0;
      while (!at_end() && s_[pos_] >= '0' && s_[pos_] <= '9') ++pos_, ++n;
      return n;
    };
    if (peek() == '-') ++pos_;
    if (peek() == '0') {
      ++pos_;
      if (peek() >= '0' && peek() <= '9') fail_at(start, "numbers may not have leading zeros");
    } else if (digits() == 0) {
      fail("expected a digit in a number");
    }
    bool integral = true;
    if (peek() == '.') {
      ++pos_;
      integral = false;
      if (digits() == 0) fail("expected a digit after the decimal point");
    }
    if (peek() == 'e' || peek() == 'E') {
      ++pos_;
      integral = false;
      if (peek() == '+' || peek() == '-') ++pos_;
      if (digits() == 0) fail("expected a digit in the exponent");
    }
    const char* b = s_.data() + start;
    const char* e = s_.data() + pos_;
    if (integral) {
      int64_t i = 0;
      auto r = std::from_chars(b, e, i);
      if (r.ec == std::errc() && r.ptr == e) return Value(i);
      // Too large for int64: keep it as a double, like most JSON readers.
    }
    double d = 0;
    auto r = std::from_chars(b, e, d);
    if (r.ec == std::errc::result_out_of_range || !std::isfinite(d))
      fail_at(start, "number '", std::string(b, e), "' is out of the range of a double");
    if (r.ec != std::errc() || r.ptr != e) fail_at(start, "invalid number '", std::string(b, e), "'");
    return Value(d);
  }

  unsigned hex4() {
    unsigned v = 0;
    for (int i = 0; i < 4; ++i) {
      char c = peek();
      unsigned digit;
      if (c >= '0' && c <= '9') digit = c - '0';
      else if (c >= 'a' && c <= 'f') digit = c - 'a' + 10;
      else if (c >= 'A' && c <= 'F') digit = c - 'A' + 10;
      else fail("expected 4 hex digits after \\u");
      v = v * 16 + digit;
      ++pos_;
    }
    return v;
  }

  static void append_utf8(std::string& out, uint32_t cp) {
    if (cp < 0x80) {
      out += (char)cp;
    } else if (cp < 0x800) {
      out += (char)(0xC0 | (cp >> 6));
      out += (char)(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
      out += (char)(0xE0 | (cp >> 12));
      out += (char)(0x80 | ((cp >> 6) & 0x3F));
      out += (char)(0x80 | (cp & 0x3F));
    } else {
      out += (char)(0xF0 | (cp >> 18));
      out += (char)(0x80 | ((cp >> 12) & 0x3F));
      out += (char)(0x80 | ((cp >> 6) & 0x3F));
      out += (char)(0x80 | (cp & 0x3F));
    }
  }

  std::string string() {
    const size_t start = pos_;
    ++pos_;  // '"'
    std::string out;
    while (true) {
      if (at_end()) fail_at(start, "unterminated string");
      const char c = s_[pos_];
      if (c == '"') { ++pos_; return out; }
      if ((unsigned char)c < 0x20) fail("raw control character ", printable(c), " in a string (escape it)");
      if ((unsigned char)c >= 0x80) {  // a multi-byte UTF-8 sequence, copied whole once valid
        const size_t n = utf8_sequence_length(s_.substr(pos_));
        if (n == 0)
          fail("invalid UTF-8 in a string (byte ", printable(c), " does not start a valid "
               "sequence here: truncated, overlong, a surrogate or beyond U+10FFFF)");
        out.append(s_.substr(pos_, n));
        pos_ += n;
        continue;
      }
      if (c != '\\') { out += c; ++pos_; continue; }
      const size_t esc = pos_++;
      if (at_end()) fail_at(start, "unterminated string");
      switch (s_[pos_++]) {
        case '"': out += '"'; break;
        case '\\': out += '\\'; break;
        case '/': out += '/'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'u': {
          uint32_t cp = hex4();
          if (cp >= 0xDC00 && cp <= 0xDFFF) fail_at(esc, "unpaired low surrogate \\u", std::hex, cp);
          if (cp >= 0xD800 && cp <= 0xDBFF) {  // a high surrogate needs its low half next
            if (s_.substr(pos_, 2) != "\\u") fail_at(esc, "unpaired high surrogate \\u", std::hex, cp);
            pos_ += 2;
            const uint32_t lo = hex4();
            if (lo < 0xDC00 || lo > 0xDFFF)
              fail_at(esc, "high surrogate \\u", std::hex, cp, " not followed by a low surrogate");
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
          }
          append_utf8(out, cp);
          break;
        }
        default: fail_at(esc, "invalid escape '\\", printable(s_[pos_ - 1]), "'");
      }
    }
  }

  std::string_view s_;
  const std::string& source_;
  size_t base_ = 0;  // byte offset of s_[0] in messages and Value::offset()
  size_t pos_ = 0;
};

Value parse(std::string_view text, const std::string& source) {
  return Parser(text, source, 0).document(nullptr);
}

Value parse(std::string_view text, const std::string& source, const ParseOptions& options) {
  return Parser(text, source, options.base_offset).document(options.end);
}

Value parse_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  MG_CHECK(f.good(), "json: cannot open '", path, "'");
  std::ostringstream ss;
  ss << f.rdbuf();
  MG_CHECK(!f.bad(), "json: error reading '", path, "'");
  return parse(ss.str(), path);
}

}  // namespace mg::json
