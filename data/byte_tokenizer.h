// data/byte_tokenizer.h — the simplest tokenizer there is: one token per byte, V = 256.
//
// encode: each byte of the UTF-8 string becomes its value 0..255 (so any text, any language,
// and any binary data round-trips exactly). decode: ids 0..255 become those bytes; anything
// else (e.g. a padded-vocabulary id >= 256) becomes U+FFFD "�" so it stays visible.
#pragma once
#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace mg::data {

class ByteTokenizer {
 public:
  static constexpr int32_t kVocabSize = 256;
  static constexpr const char* kReplacement = "\xEF\xBF\xBD";  // U+FFFD in UTF-8

  int32_t vocab_size() const { return kVocabSize; }
  std::vector<int32_t> encode(const std::string& text) const;
  std::string decode(std::span<const int32_t> ids) const;
  std::string decode_one(int32_t id) const;  // for streaming, token by token
};

}  // namespace mg::data
