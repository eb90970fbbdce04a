// data/added_vocabulary.h — Hugging Face's added tokens: special tokens (<|endoftext|>) and
// plain ones (GPT-NeoX's runs of spaces), cut out of the text *before* pre-tokenization, the
// way tokenizers' AddedVocabulary (v0.22) does it:
//
// Ids. Tokens are taken in file order; an empty or already-present identical token is skipped.
// A token whose content is already an added token or a model-vocabulary token gets that id;
// otherwise the next free id: the model vocabulary's size (its number of entries) for the
// first, then one past the largest added id. (The "id" written in the file is only compared,
// as HF does; HF logs a warning when they differ.)
//
// Matching. Two pattern sets: tokens with normalized == false are matched on the raw text;
// tokens with normalized == true are matched, with their content normalized (NFC), on each
// normalized piece of text between the first ones. Within a set: leftmost-longest,
// non-overlapping, left to right (Aho-Corasick's LeftmostLongest). For each match:
//   single_word  the match is dropped unless the characters around it are not word
//                characters (\w as Rust's regex defines it) or are the text's ends;
//   lstrip       whitespace (\s) right before the match joins the token, unless an earlier
//                token already took it;
//   rstrip       whitespace right after the match joins the token.
// The search resumes where the match itself ended (not after the stripped whitespace) — so,
// exactly as in HF, whitespace that an rstrip token took can also be matched by a whitespace
// token right after it, and both ids appear.
#pragma once
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "data/hf_tokenizer_json.h"

namespace mg::data {

class AddedVocabulary {
 public:
  // model_vocab: the BPE vocabulary (token -> id); normalize: the tokenizer's normalizer (for
  // the patterns of normalized tokens).
  AddedVocabulary(const std::vector<AddedToken>& tokens, const std::unordered_map<std::string, int32_t>& model_vocab,
                  const std::function<std::string(std::string_view)>& normalize);

  // A piece of the text: [begin, end) and the added token's id, or -1 for text that the
  // pre-tokenizer and BPE handle.
  struct Split {
    size_t begin, end;
    int32_t id;
  };
  // Splits `text` (valid UTF-8) on the tokens of one set (see above). Covers the whole text,
  // in order; no piece is empty. An empty text gives no pieces.
  std::vector<Split> split(std::string_view text, bool normalized_set) const;

  bool empty() const { return by_id_.empty(); }
  size_t size() const { return by_id_.size(); }
  const std::unordered_map<int32_t, AddedToken>& by_id() const { return by_id_; }
  std::optional<int32_t> id_of(const std::string& content) const;
  bool is_special(const std::string& content) const { return special_.count(content) != 0; }
  int32_t max_id() const;  // -1 when empty

 private:
  struct PatternSet {
    std::vector<std::string> patterns;
    std::vector<int32_t> ids;
    std::vector<std::vector<uint32_t>> by_first_byte;  // [256] pattern indices, longest first
  };
  void build(PatternSet& set) const;
  // Leftmost-longest match at or after `from`: pattern index, or -1.
  int find(const PatternSet& set, std::string_view text, size_t from, size_t& start) const;

  std::unordered_map<std::string, int32_t> id_of_;
  std::unordered_map<int32_t, AddedToken> by_id_;
  std::unordered_set<std::string> special_;
  PatternSet raw_, normalized_;
};

}  // namespace mg::data
