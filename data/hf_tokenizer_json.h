// data/hf_tokenizer_json.h — reads a Hugging Face tokenizer.json into the plain description a
// BpeTokenizer is built from, and rejects, naming the field, everything that would make our
// ids differ from HF's.
//
// Supported (the byte-level BPE of GPT-2 / GPT-NeoX / the Mamba checkpoints):
//   version          "1.0"
//   normalizer       null, {"type": "NFC"}, {"type": "Sequence", "normalizers": [those]}
//   pre_tokenizer    {"type": "ByteLevel", "add_prefix_space": bool, "use_regex": bool (default
//                    true), "trim_offsets": (offsets only)}, or a Sequence holding one ByteLevel
//   model            {"type": "BPE", "vocab": {token: id}, "merges": ["a b", ...] or
//                    [["a", "b"], ...], "unk_token", "fuse_unk", "byte_fallback",
//                    "ignore_merges", "dropout": null or 0, "continuing_subword_prefix" and
//                    "end_of_word_suffix": null or ""}
//   added_tokens     [{"id", "content", "single_word", "lstrip", "rstrip", "normalized",
//                    "special"}, ...]
//   decoder          {"type": "ByteLevel"} (or a Sequence holding one)
//   post_processor   null, {"type": "ByteLevel"} (it changes offsets, never ids),
//                    {"type": "TemplateProcessing"} (its "single" template: special tokens
//                    before and after the sequence, e.g. a BOS; transformers writes "$A:0",
//                    which adds nothing, into GPT-NeoX tokenizer.json files), or a Sequence
//                    of those
//   truncation, padding   null
// Anything else is an mg::Error such as
//   tokenizer.json: normalizer.type "BertNormalizer" is not supported (supported: NFC, null,
//   Sequence of those)
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "core/json.h"

namespace mg::data {

struct AddedToken {
  std::string content;
  int32_t file_id = -1;  // the id the file states (HF recomputes it; see AddedVocabulary)
  bool single_word = false, lstrip = false, rstrip = false, normalized = true, special = false;
  bool operator==(const AddedToken&) const = default;
};

struct BpeSpec {
  // normalizer: the NFC steps of a (possibly nested) Sequence; NFC is idempotent, so one is
  // as good as many.
  bool nfc = false;
  // ByteLevel pre-tokenizer
  bool add_prefix_space = false;
  bool use_regex = true;
  // BPE model; vocab tokens are in the byte-level alphabet (GPT-2's bytes_to_unicode)
  std::vector<std::pair<std::string, int64_t>> vocab;
  std::vector<std::pair<std::string, std::string>> merges;  // rank order
  std::optional<std::string> unk_token;
  bool fuse_unk = false, byte_fallback = false, ignore_merges = false;
  std::vector<AddedToken> added_tokens;  // file order
  // TemplateProcessing's single-sequence template: ids before and after the encoded text.
  bool template_processing = false;
  std::vector<int32_t> template_prefix, template_suffix;
};

// `source` names the document in errors (the file path).
BpeSpec parse_tokenizer_json(const json::Value& doc, const std::string& source);

}  // namespace mg::data
