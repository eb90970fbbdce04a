#include "data/byte_tokenizer.h"

namespace mg::data {

std::vector<int32_t> ByteTokenizer::encode(const std::string& text) const {
  std::vector<int32_t> ids;
  ids.reserve(text.size());
  for (unsigned char c : text) ids.push_back((int32_t)c);
  return ids;
}

std::string ByteTokenizer::decode_one(int32_t id) const {
  if (id >= 0 && id < kVocabSize) return std::string(1, (char)(unsigned char)id);
  return kReplacement;
}

std::string ByteTokenizer::decode(std::span<const int32_t> ids) const {
  std::string out;
  out.reserve(ids.size());
  for (int32_t id : ids) out += decode_one(id);
  return out;
}

}  // namespace mg::data
