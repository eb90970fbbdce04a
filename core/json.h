// core/json.h — a small, strict JSON reader and writer (RFC 8259), for the files that travel
// with checkpoints: Hugging Face config.json, model.safetensors.index.json and the header of
// a safetensors file (core/safetensors.cpp).
//
//   json::Value cfg = json::parse_file("model/config.json");
//   int64_t D = cfg.at("hidden_size").as_int();          // throws naming the key if absent
//   if (const json::Value* t = cfg.find("tie_word_embeddings")) tied = t->as_bool();
//
//   json::Value index = json::Value::object();
//   index.set("weight_map", json::Value::object());
//   std::string text = json::dump(index, 2);
//
// Strict means: exactly one value, surrounded only by whitespace; no comments, no trailing
// commas, no single quotes, no NaN/Infinity, no leading zeros ("01"), no raw control
// characters inside strings, strings of well-formed UTF-8 only (no overlong forms, encoded
// surrogates or code points above U+10FFFF: the byte that breaks it is named), \uXXXX escapes
// with properly paired surrogates (decoded to UTF-8), no duplicate keys in an object, nesting at most 256 deep. Every failure throws
// mg::Error "<source>: byte <offset>: <what was wrong>" (offset counted from 0 in the text,
// or from ParseOptions::base_offset).
//
// Numbers: a literal without fraction or exponent that fits int64 is stored exactly as an
// integer (as_int); every number also has a double value (as_double). as_int on a number
// with a fraction or exponent is accepted only when its value is integral (1.0, 1e3) — HF
// configs sometimes write integers that way.
//
// Objects keep their keys in document order (dump writes them back in that order).
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace mg::json {

enum class Kind { null, boolean, number, string, array, object };
const char* kind_name(Kind k);  // "null", "boolean", ...

class Value {
 public:
  Value() = default;  // null
  Value(std::nullptr_t) {}
  Value(bool b) : kind_(Kind::boolean), bool_(b) {}
  Value(int v) : Value((int64_t)v) {}
  Value(int64_t v) : kind_(Kind::number), is_int_(true), int_(v), num_((double)v) {}
  Value(double v);  // must be finite (JSON has no NaN/Infinity)
  Value(const char* s) : kind_(Kind::string), str_(s) {}
  Value(std::string s) : kind_(Kind::string), str_(std::move(s)) {}
  static Value array() { Value v; v.kind_ = Kind::array; return v; }
  static Value object() { Value v; v.kind_ = Kind::object; return v; }

  Kind kind() const { return kind_; }
  bool is_null() const { return kind_ == Kind::null; }
  bool is_bool() const { return kind_ == Kind::boolean; }
  bool is_number() const { return kind_ == Kind::number; }
  bool is_int() const { return kind_ == Kind::number && is_int_; }  // written as an integer
  bool is_string() const { return kind_ == Kind::string; }
  bool is_array() const { return kind_ == Kind::array; }
  bool is_object() const { return kind_ == Kind::object; }

  // Typed access; a wrong kind throws mg::Error "json: expected a string, got a number".
  bool as_bool() const;
  double as_double() const;
  int64_t as_int() const;  // also integral doubles within int64 range
  const std::string& as_string() const;
  const std::vector<Value>& as_array() const;
  const std::vector<std::pair<std::string, Value>>& as_object() const;

  // Objects: lookup (nullptr / mg::Error naming the key when absent) and insertion
  // (replaces the value of an existing key).
  const Value* find(const std::string& key) const;
  const Value& at(const std::string& key) const;
  bool contains(const std::string& key) const { return find(key) != nullptr; }
  Value& set(const std::string& key, Value v);
  // Arrays.
  Value& push_back(Value v);
  size_t size() const;  // elements of an array or members of an object

  bool operator==(const Value& o) const;  // compares content, not offset()

  // Where parse() found this value: the byte offset of its first character, counted as in
  // parse errors (ParseOptions::base_offset included); 0 for values built in code. Lets a
  // format built on JSON (a safetensors header) name the byte of a value it rejects.
  size_t offset() const { return offset_; }

 private:
  friend class Parser;
  void expect(Kind k) const;
  Kind kind_ = Kind::null;
  bool bool_ = false;
  bool is_int_ = false;
  int64_t int_ = 0;
  double num_ = 0;
  std::string str_;
  std::vector<Value> arr_;
  std::vector<std::pair<std::string, Value>> obj_;
  size_t offset_ = 0;
};

// Parses one JSON document. `source` names it in error messages (a file name).
Value parse(std::string_view text, const std::string& source = "json");

// For a JSON document embedded in a larger file (the header of a safetensors file).
struct ParseOptions {
  size_t base_offset = 0;  // text[0] is this byte of the file, in errors and Value::offset()
  size_t* end = nullptr;   // when set, bytes may follow the value (the caller judges them):
                           // *end = the offset just past the value and its trailing whitespace
};
Value parse(std::string_view text, const std::string& source, const ParseOptions& options);
// Reads and parses a file; a missing or unreadable file is an mg::Error naming it.
Value parse_file(const std::string& path);

// Serialises a value. indent < 0: compact, one line; otherwise pretty with `indent` spaces.
// Strings are escaped (", \, control characters); other bytes are written as they are.
// Doubles use the shortest text that reads back to the same value.
std::string dump(const Value& v, int indent = -1);

}  // namespace mg::json
