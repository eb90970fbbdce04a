// data/byte_tokenizer.h — the simplest tokenizer there is: one token per byte, V = 256.
//
// encode: each byte of the UTF-8 string becomes its value 0..255 (so any text, any language,
// and any binary data round-trips exactly). decode: ids 0..255 become those bytes; anything
// else (e.g. a padded-vocabulary id >= 256) becomes U+FFFD "�" so it stays visible. Decoded
// bytes are passed through as they are (not repaired into valid UTF-8), so decode(encode(x))
// == x for any bytes x. Implements the Tokenizer interface (data/tokenizer.h) and can also be
// used by value.
#pragma once
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "data/tokenizer.h"

namespace mg::data {

class ByteTokenizer final : public Tokenizer {
 public:
  static constexpr int32_t kVocabSize = 256;
  static constexpr const char* kReplacement = "\xEF\xBF\xBD";  // U+FFFD in UTF-8

  int32_t vocab_size() const override { return kVocabSize; }
  std::vector<int32_t> encode(const std::string& text) const override;
  std::string decode(std::span<const int32_t> ids) const override;
  std::string decode_one(int32_t id) const;  // for streaming, token by token

  std::string token_bytes(int32_t id) const override { return decode_one(id); }
  bool decode_repairs_utf8() const override { return false; }
  std::string describe() const override { return "byte tokenizer (one id per byte, V 256)"; }
};

}  // namespace mg::data
