// core/error.h — the one exception type, and the check macro every op uses.
//
// Bad input never crashes and never corrupts: it throws mg::Error whose message names
// the op (or file), what was expected and what was given.
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>

namespace mg {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& msg) : std::runtime_error(msg) {}
};

namespace detail {
// Streams any number of arguments into one string: cat("x ", 3, " y").
template <typename... Args>
std::string cat(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}
}  // namespace detail

}  // namespace mg

// MG_CHECK(cond, "op: expected ", a, " got ", b) throws mg::Error with the streamed message.
#define MG_CHECK(cond, ...)                                        \
  do {                                                             \
    if (!(cond)) throw ::mg::Error(::mg::detail::cat(__VA_ARGS__)); \
  } while (0)
