// core/json_write.cpp — json::dump: the writer half of core/json.h (the parser is core/json.cpp).
// to_chars gives the shortest text that reads back as the same double, so parse(dump(v)) == v;
// integers stay integers; objects keep their keys in document order.
#include <charconv>
#include <cmath>
#include <cstdio>

#include "core/error.h"
#include "core/json.h"

namespace mg::json {

namespace {
void write_string(std::string& out, const std::string& s) {
  out += '"';
  for (char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      default:
        if ((unsigned char)c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", (unsigned char)c);
          out += buf;
        } else {
          out += c;
        }
    }
  }
  out += '"';
}

void write(std::string& out, const Value& v, int indent, int level) {
  auto newline = [&](int lvl) {
    if (indent < 0) return;
    out += '\n';
    out.append((size_t)(indent * lvl), ' ');
  };
  switch (v.kind()) {
    case Kind::null: out += "null"; break;
    case Kind::boolean: out += v.as_bool() ? "true" : "false"; break;
    case Kind::number: {
      char buf[64];
      auto r = v.is_int() ? std::to_chars(buf, buf + sizeof buf, v.as_int())
                          : std::to_chars(buf, buf + sizeof buf, v.as_double());
      std::string text(buf, r.ptr);
      // Keep a double a double when read back ("1" would come back as an integer).
      if (!v.is_int() && text.find_first_of(".eEn") == std::string::npos) text += ".0";
      out += text;
      break;
    }
    case Kind::string: write_string(out, v.as_string()); break;
    case Kind::array: {
      out += '[';
      const auto& a = v.as_array();
      for (size_t i = 0; i < a.size(); ++i) {
        if (i) out += indent < 0 ? ", " : ",";
        newline(level + 1);
        write(out, a[i], indent, level + 1);
      }
      if (!a.empty()) newline(level);
      out += ']';
      break;
    }
    case Kind::object: {
      out += '{';
      const auto& o = v.as_object();
      for (size_t i = 0; i < o.size(); ++i) {
        if (i) out += indent < 0 ? ", " : ",";
        newline(level + 1);
        write_string(out, o[i].first);
        out += ": ";
        write(out, o[i].second, indent, level + 1);
      }
      if (!o.empty()) newline(level);
      out += '}';
      break;
    }
  }
}
}  // namespace

std::string dump(const Value& v, int indent) {
  std::string out;
  write(out, v, indent, 0);
  return out;
}

}  // namespace mg::json
