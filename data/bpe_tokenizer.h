// data/bpe_tokenizer.h — Hugging Face tokenizer.json byte-level BPE (GPT-2, GPT-NeoX, the
// state-spaces Mamba checkpoints), with exactly HF tokenizers' ids (v0.22; checked against the
// library itself by tests/test_tokenizer.cpp, see docs/tokenizers.md).
//
// encode(text), HF's pipeline step by step:
//   0. invalid UTF-8 in the input is replaced by U+FFFD, one per maximal subpart (the only way
//      bytes reach HF: its encode takes a string, and every bytes -> string path in Rust, Node
//      and Python's "replace" use this rule; see docs/tokenizers.md)
//   1. added tokens with normalized == false are cut out of the raw text (data/added_vocabulary.h)
//   2. every other piece is normalized (NFC via utf8proc, when the normalizer says so), then the
//      added tokens with normalized == true are cut out of it
//   3. ByteLevel pre-tokenizer, on every remaining piece: a space is prepended when
//      add_prefix_space and the piece does not start with one; the piece is split by GPT-2's
//      pattern 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
//      (PCRE2; \s spelled \p{White_Space}, which is what HF's Oniguruma means by \s — PCRE2's
//      own \s also takes U+180E), and each byte becomes a character of GPT-2's byte alphabet
//   4. BPE on each word: its characters become vocabulary ids (a missing one: byte_fallback's
//      <0xXX> tokens, else unk_token (fused when fuse_unk), else dropped, all as HF), then the
//      adjacent pair of lowest merge rank is merged, leftmost first, until none is left.
//      ignore_merges: a word that is itself a vocabulary token is that token.
//   5. a TemplateProcessing post-processor adds its special ids before/after (HF's encode adds
//      special tokens by default); the ByteLevel one adds nothing.
//   Words are cached for the length of one encode.
// decode(ids): each id's token (an added token's content first, else the vocabulary's); a
// token all of whose characters are in the byte alphabet stands for those bytes, any other
// token for its own UTF-8 bytes; the bytes are concatenated and invalid UTF-8 becomes U+FFFD
// (Rust's from_utf8_lossy). Ids that are no token are skipped, as HF does.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "data/added_vocabulary.h"
#include "data/hf_tokenizer_json.h"
#include "data/tokenizer.h"
#include "data/unicode.h"

namespace mg::data {

class BpeTokenizer final : public Tokenizer {
 public:
  // A tokenizer.json file. EOS/BOS as load_tokenizer describes (tokenizer_config.json beside
  // the file, else "<|endoftext|>").
  static BpeTokenizer from_file(const std::string& path);
  // tokenizer.json text; `source` names it in errors. EOS/BOS: "<|endoftext|>" if present.
  static BpeTokenizer from_json(std::string_view text, const std::string& source = "tokenizer.json");
  BpeTokenizer(const BpeSpec& spec, const std::string& source);

  int32_t vocab_size() const override { return vocab_size_; }
  std::vector<int32_t> encode(const std::string& text) const override;
  std::string decode(std::span<const int32_t> ids) const override;
  std::string token_bytes(int32_t id) const override;
  bool decode_repairs_utf8() const override { return true; }
  std::optional<int32_t> eos_id() const override { return eos_; }
  std::optional<int32_t> bos_id() const override { return bos_; }
  std::string describe() const override;

  // HF's token_to_id: an added token's content first, then the model vocabulary (whose tokens
  // are spelled in the byte alphabet: " the" is "Ġthe").
  std::optional<int32_t> token_to_id(const std::string& token) const;
  void set_eos_id(std::optional<int32_t> id) { eos_ = id; }
  void set_bos_id(std::optional<int32_t> id) { bos_ = id; }

 private:
  using WordCache = std::unordered_map<std::string, std::vector<int32_t>>;
  void encode_piece(std::string_view piece, WordCache& cache, std::vector<int32_t>& out) const;
  void encode_word(std::string_view word, WordCache& cache, std::vector<int32_t>& out) const;
  void bpe(std::string_view word, std::vector<int32_t>& out) const;  // steps 4 for one word
  void initial_symbols(std::string_view word, std::vector<int32_t>& ids) const;

  std::string source_;
  bool nfc_ = false, add_prefix_space_ = false, use_regex_ = true;
  bool fuse_unk_ = false, byte_fallback_ = false, ignore_merges_ = false;
  std::optional<std::string> unk_token_;
  bool template_ = false;
  std::vector<int32_t> template_prefix_, template_suffix_;
  std::unordered_map<std::string, int32_t> vocab_;  // byte-alphabet spelling -> id
  std::unordered_map<uint64_t, std::pair<uint32_t, int32_t>> merges_;  // (a, b) -> (rank, id of ab)
  int32_t byte_id_[256];        // the vocabulary id of each byte's alphabet character, or -1
  int32_t fallback_id_[256];    // the id of "<0xXX>" (byte_fallback), or -1
  std::string byte_char_[256];  // the alphabet character of each byte, UTF-8
  std::vector<std::string> id_bytes_;  // what each id decodes to
  std::vector<uint8_t> id_known_;      // whether an id is a token at all
  size_t n_merges_ = 0, n_model_ = 0;
  int32_t vocab_size_ = 0;
  std::optional<AddedVocabulary> added_;
  std::optional<unicode::Regex> pre_;  // GPT-2's pattern (use_regex)
  std::optional<int32_t> eos_, bos_;
};

}  // namespace mg::data
