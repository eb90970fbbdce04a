// safetensors headers must be UTF-8 (the format says so; Hugging Face's reader rejects other
// bytes): a string with invalid UTF-8 is an mg::Error naming the byte offset (issue 16, item 10).
#include <doctest/doctest.h>

#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "core/safetensors.h"
#include "core/utf8.h"

using namespace mg;
namespace fs = std::filesystem;

namespace {

// The 8-byte little-endian length, the header, no data.
std::string file_with_header(const std::string& header) {
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = (char)((header.size() >> (8 * i)) & 0xFF);
  return out + header;
}

std::string load_message(const std::string& bytes, std::map<std::string, std::string>* meta = nullptr) {
  const std::string p = (fs::temp_directory_path() / ("mg_utf8_" + std::to_string(::getpid()) + ".safetensors")).string();
  { std::ofstream(p, std::ios::binary | std::ios::trunc) << bytes; }
  std::string msg;
  try {
    SafetensorsFile f = load_safetensors(p);
    if (meta) *meta = f.metadata;
  } catch (const Error& e) {
    msg = e.what();
  }
  fs::remove(p);
  return msg;
}

}  // namespace

TEST_CASE("utf8: sequence lengths follow RFC 3629 (hand-checked table)") {
  struct Case { const char* bytes; size_t len; };
  const Case cases[] = {
      {"a", 1},          {"\xc3\xa9", 2},        {"\xe2\x82\xac", 3},     {"\xf0\x9f\x98\x80", 4},
      {"\xef\xbf\xbf", 3}, {"\xf4\x8f\xbf\xbf", 4},  // U+FFFF, U+10FFFF: the last of each length
      {"\x80", 0},       {"\xbf", 0},            // continuation bytes alone
      {"\xc0\x80", 0},   {"\xc1\xbf", 0},        // overlong 2-byte forms
      {"\xe0\x9f\xbf", 0},                       // overlong 3-byte form (U+07FF)
      {"\xf0\x8f\xbf\xbf", 0},                   // overlong 4-byte form (U+FFFF)
      {"\xed\xa0\x80", 0}, {"\xed\xbf\xbf", 0},  // encoded surrogates U+D800, U+DFFF
      {"\xf4\x90\x80\x80", 0}, {"\xf5\x80\x80\x80", 0}, {"\xff", 0},  // beyond U+10FFFF
      {"\xe2\x82", 0},   {"\xc3", 0},   {"\xc3" "a", 0},  // truncated
  };
  for (const Case& c : cases) {
    CAPTURE(std::string(c.bytes));
    CHECK(utf8_sequence_length(c.bytes) == c.len);
  }
  CHECK(utf8_sequence_length("") == 0);
}

TEST_CASE("safetensors: invalid UTF-8 inside a header string is rejected at its byte offset") {
  // Header text starts at file byte 8; {"__metadata__":{"k":"ab<bad>"}} puts the bad byte
  // at header index 24, file byte 32.
  const std::string prefix = R"({"__metadata__":{"k":"ab)";
  REQUIRE(prefix.size() == 24);
  for (const char* bad : {"\xff", "\x80", "\xc0\x80", "\xed\xa0\x80", "\xf5\x80\x80\x80", "\xe2\x82"}) {
    CAPTURE(std::string(bad));
    const std::string msg = load_message(file_with_header(prefix + bad + "\"}}"));
    CHECK(msg.find("byte 32") != std::string::npos);
    CHECK(msg.find("invalid UTF-8") != std::string::npos);
    CHECK(msg.find(".safetensors") != std::string::npos);
  }
  // In a tensor name (an object key) too: {"x<bad>":...} -> header index 3, file byte 11.
  const std::string msg = load_message(file_with_header(
      "{\"x\xff\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0]}}"));
  CHECK(msg.find("byte 11") != std::string::npos);
  CHECK(msg.find("invalid UTF-8") != std::string::npos);
  // Well-formed multi-byte UTF-8 loads unchanged.
  std::map<std::string, std::string> meta;
  CHECK(load_message(file_with_header("{\"__metadata__\":{\"k\":\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\"}}"), &meta) == "");
  CHECK(meta.at("k") == "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80");
}
