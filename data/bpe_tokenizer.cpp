#include "data/bpe_tokenizer.h"

#include <filesystem>
#include <queue>
#include <sstream>

#include "core/error.h"
#include "core/json.h"

namespace mg::data {

namespace {

// GPT-2's bytes_to_unicode: printable Latin-1 bytes stand for themselves, the other 68 bytes
// (controls, space, DEL, NBSP, soft hyphen, ...) for code points 256, 257, ... in byte order.
struct ByteAlphabet {
  char32_t cp_of[256];
  int16_t byte_of[324];  // code point -> byte, -1 for code points outside the alphabet
  ByteAlphabet() {
    auto printable = [](int b) { return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF); };
    for (int16_t& b : byte_of) b = -1;
    int n = 0;
    for (int b = 0; b < 256; ++b) {
      cp_of[b] = printable(b) ? (char32_t)b : (char32_t)(256 + n++);
      byte_of[cp_of[b]] = (int16_t)b;
    }
  }
};
const ByteAlphabet& alphabet() {
  static const ByteAlphabet a;
  return a;
}

std::string utf8_of(char32_t cp) {  // cp < 0x800 is all the alphabet needs
  std::string s;
  if (cp < 0x80) {
    s += (char)cp;
  } else {
    s += (char)(0xC0 | (cp >> 6));
    s += (char)(0x80 | (cp & 0x3F));
  }
  return s;
}

// What HF's ByteLevel decoder makes of one token: its alphabet characters' bytes when every
// character is in the alphabet, else the token's own UTF-8 bytes.
std::string token_to_bytes(const std::string& token) {
  std::string out;
  for (size_t i = 0; i < token.size();) {
    unsigned char c = (unsigned char)token[i];
    char32_t cp;
    size_t n;
    if (c < 0x80) {
      cp = c, n = 1;
    } else if ((c & 0xE0) == 0xC0 && i + 1 < token.size()) {
      cp = ((char32_t)(c & 0x1F) << 6) | ((unsigned char)token[i + 1] & 0x3F), n = 2;
    } else {
      return token;  // 3- and 4-byte characters are never in the alphabet (all < U+0800)
    }
    if (cp >= 324 || alphabet().byte_of[cp] < 0) return token;
    out += (char)alphabet().byte_of[cp];
    i += n;
  }
  return out;
}

uint64_t pair_key(int32_t a, int32_t b) { return ((uint64_t)(uint32_t)a << 32) | (uint32_t)b; }

// Ids beyond this would be a malformed file (the largest real vocabularies are ~256k).
constexpr int64_t kMaxId = 1 << 24;

}  // namespace

BpeTokenizer::BpeTokenizer(const BpeSpec& spec, const std::string& source) : source_(source) {
  nfc_ = spec.nfc;
  add_prefix_space_ = spec.add_prefix_space;
  use_regex_ = spec.use_regex;
  fuse_unk_ = spec.fuse_unk;
  byte_fallback_ = spec.byte_fallback;
  ignore_merges_ = spec.ignore_merges;
  unk_token_ = spec.unk_token;
  template_ = spec.template_processing;
  template_prefix_ = spec.template_prefix;
  template_suffix_ = spec.template_suffix;

  int64_t max_id = -1;
  vocab_.reserve(spec.vocab.size());
  for (auto& [tok, id] : spec.vocab) {
    MG_CHECK(id < kMaxId, source_, ": model.vocab[\"", tok, "\"] = ", id, " is not a plausible id (must be < ", kMaxId, ")");
    vocab_[tok] = (int32_t)id;
    max_id = std::max(max_id, id);
  }
  n_model_ = vocab_.size();

  // Merges: rank = position; a later duplicate replaces an earlier one (as HF's map does).
  merges_.reserve(spec.merges.size());
  for (size_t r = 0; r < spec.merges.size(); ++r) {
    auto& [a, b] = spec.merges[r];
    auto find = [&](const std::string& t) {
      auto it = vocab_.find(t);
      MG_CHECK(it != vocab_.end(), source_, ": model.merges[", r, "] (\"", a, "\", \"", b, "\"): \"", t,
               "\" is not in model.vocab");
      return it->second;
    };
    int32_t ia = find(a), ib = find(b), iab = find(a + b);
    merges_[pair_key(ia, ib)] = {(uint32_t)r, iab};
  }
  n_merges_ = spec.merges.size();

  for (int b = 0; b < 256; ++b) {
    byte_char_[b] = utf8_of(alphabet().cp_of[b]);
    auto it = vocab_.find(byte_char_[b]);
    byte_id_[b] = it == vocab_.end() ? -1 : it->second;
    char name[8];
    std::snprintf(name, sizeof name, "<0x%02X>", b);
    auto fb = vocab_.find(name);
    fallback_id_[b] = fb == vocab_.end() ? -1 : fb->second;
  }

  added_.emplace(spec.added_tokens, vocab_, [this](std::string_view s) { return nfc_ ? unicode::nfc(s) : std::string(s); });
  max_id = std::max<int64_t>(max_id, added_->max_id());
  for (int32_t id : template_prefix_) max_id = std::max<int64_t>(max_id, id);
  for (int32_t id : template_suffix_) max_id = std::max<int64_t>(max_id, id);
  MG_CHECK(max_id < kMaxId, source_, ": added_tokens or post_processor give an id of ", max_id, " (must be < ", kMaxId, ")");
  vocab_size_ = (int32_t)(max_id + 1);

  // Decode table: the model's tokens, then the added tokens' contents over them (HF looks an
  // id up in the added vocabulary first).
  id_bytes_.assign((size_t)vocab_size_, {});
  id_known_.assign((size_t)vocab_size_, 0);
  for (auto& [tok, id] : vocab_) id_bytes_[id] = token_to_bytes(tok), id_known_[id] = 1;
  for (auto& [id, tok] : added_->by_id()) id_bytes_[id] = token_to_bytes(tok.content), id_known_[id] = 1;

  if (use_regex_)
    pre_.emplace("'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\p{White_Space}\\p{L}\\p{N}]+"
                 "|\\p{White_Space}+(?!\\P{White_Space})|\\p{White_Space}+");

  if (auto eot = added_->id_of("<|endoftext|>"); eot && added_->is_special("<|endoftext|>")) eos_ = bos_ = eot;
}

BpeTokenizer BpeTokenizer::from_json(std::string_view text, const std::string& source) {
  return BpeTokenizer(parse_tokenizer_json(json::parse(text, source), source), source);
}

BpeTokenizer BpeTokenizer::from_file(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  MG_CHECK(fs::is_regular_file(path, ec), "tokenizer file ", path, " is not a readable file (expected a tokenizer.json)");
  BpeTokenizer tok(parse_tokenizer_json(json::parse_file(path), path), path);
  fs::path config = fs::path(path).parent_path() / "tokenizer_config.json";
  if (fs::is_regular_file(config, ec)) {
    json::Value c = json::parse_file(config.string());
    auto special = [&](const char* key, std::optional<int32_t>& slot) {
      const json::Value* v = c.is_object() ? c.find(key) : nullptr;
      if (!v) return;  // not stated: keep the <|endoftext|> rule
      const json::Value* name = v->is_object() ? v->find("content") : v;
      slot = name && name->is_string() ? tok.token_to_id(name->as_string()) : std::nullopt;
    };
    special("eos_token", tok.eos_);
    special("bos_token", tok.bos_);
  }
  return tok;
}

std::optional<int32_t> BpeTokenizer::token_to_id(const std::string& token) const {
  if (auto id = added_->id_of(token)) return id;
  auto it = vocab_.find(token);
  if (it == vocab_.end()) return std::nullopt;
  return it->second;
}

// ---- encode -----------------------------------------------------------------------------------

std::vector<int32_t> BpeTokenizer::encode(const std::string& input) const {
  std::string repaired;
  std::string_view text = input;
  if (!unicode::is_valid_utf8(text)) text = repaired = unicode::to_valid_utf8(input);

  std::vector<int32_t> out(template_prefix_);
  out.reserve(text.size() / 3 + 8);
  WordCache cache;
  for (const auto& raw : added_->split(text, false)) {
    if (raw.id >= 0) {
      out.push_back(raw.id);
      continue;
    }
    std::string_view piece = text.substr(raw.begin, raw.end - raw.begin);
    std::string normalized = nfc_ ? unicode::nfc(piece) : std::string(piece);
    for (const auto& s : added_->split(normalized, true)) {
      if (s.id >= 0)
        out.push_back(s.id);
      else
        encode_piece(std::string_view(normalized).substr(s.begin, s.end - s.begin), cache, out);
    }
  }
  out.insert(out.end(), template_suffix_.begin(), template_suffix_.end());
  return out;
}

void BpeTokenizer::encode_piece(std::string_view piece, WordCache& cache, std::vector<int32_t>& out) const {
  std::string prefixed;
  if (add_prefix_space_ && piece[0] != ' ') {
    prefixed = " ";
    prefixed += piece;
    piece = prefixed;
  }
  if (!use_regex_) return encode_word(piece, cache, out);
  // HF splits with SplitDelimiterBehavior::Isolated: every match is a word, and so is any
  // unmatched gap (GPT-2's pattern leaves none, but the rule is kept).
  size_t pos = 0, s, e;
  while (pos < piece.size() && pre_->find(piece, pos, s, e)) {
    if (s > pos) encode_word(piece.substr(pos, s - pos), cache, out);
    if (e == s) {  // cannot happen with this pattern; never loop on an empty match
      e = s + unicode::utf8_char_length((unsigned char)piece[s]);
      encode_word(piece.substr(s, e - s), cache, out);
    } else {
      encode_word(piece.substr(s, e - s), cache, out);
    }
    pos = e;
  }
  if (pos < piece.size()) encode_word(piece.substr(pos), cache, out);
}

void BpeTokenizer::encode_word(std::string_view word, WordCache& cache, std::vector<int32_t>& out) const {
  std::string key(word);
  auto it = cache.find(key);
  if (it == cache.end()) {
    std::vector<int32_t> ids;
    bpe(word, ids);
    it = cache.emplace(std::move(key), std::move(ids)).first;
  }
  out.insert(out.end(), it->second.begin(), it->second.end());
}

void BpeTokenizer::initial_symbols(std::string_view word, std::vector<int32_t>& ids) const {
  // HF's BPE::merge_word, for a word of alphabet characters (one per byte) with no subword
  // prefix/suffix. A pending unk is only written out when a known character (or the end)
  // follows — byte-fallback ids found meanwhile go before it, as in HF.
  std::optional<int32_t> unk_id;
  bool unk_pending = false;
  for (unsigned char b : word) {
    if (byte_id_[b] >= 0) {
      if (unk_pending) ids.push_back(*unk_id), unk_pending = false;
      ids.push_back(byte_id_[b]);
      continue;
    }
    if (byte_fallback_) {
      // HF looks up <0xXX> for the bytes of the *alphabet character* (e.g. "Ġ" = C4 A0).
      const std::string& ch = byte_char_[b];
      bool all = true;
      for (unsigned char x : ch) all &= fallback_id_[x] >= 0;
      if (all) {
        for (unsigned char x : ch) ids.push_back(fallback_id_[x]);
        continue;
      }
    }
    if (unk_token_) {
      if (!unk_id) {
        auto u = vocab_.find(*unk_token_);
        MG_CHECK(u != vocab_.end(), source_, ": model.unk_token \"", *unk_token_,
                 "\" is needed for a character outside the vocabulary but is not in model.vocab");
        unk_id = u->second;
      }
      if (unk_pending && !fuse_unk_) ids.push_back(*unk_id);
      unk_pending = true;
    }
    // no unk_token: the character is dropped (HF does the same, silently)
  }
  if (unk_pending) ids.push_back(*unk_id);
}

void BpeTokenizer::bpe(std::string_view word, std::vector<int32_t>& out) const {
  if (ignore_merges_) {
    std::string spelled;
    for (unsigned char b : word) spelled += byte_char_[b];
    if (auto it = vocab_.find(spelled); it != vocab_.end()) return out.push_back(it->second);
  }
  std::vector<int32_t> sym;
  initial_symbols(word, sym);
  const int n = (int)sym.size();
  if (n < 2) return out.insert(out.end(), sym.begin(), sym.end()), void();

  // HF's Word::merge_all: a heap of candidate merges ordered by (rank, position); a popped
  // entry is stale when its left symbol is gone or the pair there now merges into another id.
  std::vector<int> prev(n), next(n);
  std::vector<uint8_t> alive(n, 1);
  for (int i = 0; i < n; ++i) prev[i] = i - 1, next[i] = i + 1 < n ? i + 1 : -1;
  struct Cand {
    uint32_t rank;
    int pos;
    int32_t id;
    bool operator>(const Cand& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
  };
  std::priority_queue<Cand, std::vector<Cand>, std::greater<Cand>> heap;
  auto push = [&](int pos) {
    if (pos < 0 || next[pos] < 0) return;
    auto it = merges_.find(pair_key(sym[pos], sym[next[pos]]));
    if (it != merges_.end()) heap.push({it->second.first, pos, it->second.second});
  };
  for (int i = 0; i + 1 < n; ++i) push(i);
  while (!heap.empty()) {
    Cand top = heap.top();
    heap.pop();
    if (!alive[top.pos] || next[top.pos] < 0) continue;
    int right = next[top.pos];
    auto it = merges_.find(pair_key(sym[top.pos], sym[right]));
    if (it == merges_.end() || it->second.second != top.id) continue;
    sym[top.pos] = top.id;
    alive[right] = 0;
    next[top.pos] = next[right];
    if (next[right] >= 0) prev[next[right]] = top.pos;
    push(prev[top.pos]);
    push(top.pos);
  }
  for (int i = 0; i < n; ++i)
    if (alive[i]) out.push_back(sym[i]);
}

// ---- decode -----------------------------------------------------------------------------------

std::string BpeTokenizer::token_bytes(int32_t id) const {
  if (id < 0 || id >= vocab_size_ || !id_known_[id]) return {};
  return id_bytes_[id];
}

std::string BpeTokenizer::decode(std::span<const int32_t> ids) const {
  std::string bytes;
  for (int32_t id : ids)
    if (id >= 0 && id < vocab_size_ && id_known_[id]) bytes += id_bytes_[id];
  return unicode::to_valid_utf8(bytes);
}

std::string BpeTokenizer::describe() const {
  std::ostringstream os;
  os << "byte-level BPE (" << source_ << "): vocab " << vocab_size_ << " (" << n_model_ << " model tokens, "
     << added_->size() << " added), " << n_merges_ << " merges, normalizer " << (nfc_ ? "NFC" : "none")
     << ", add_prefix_space " << (add_prefix_space_ ? "true" : "false");
  if (!use_regex_) os << ", use_regex false";
  if (ignore_merges_) os << ", ignore_merges";
  if (byte_fallback_) os << ", byte_fallback";
  if (unk_token_) os << ", unk_token \"" << *unk_token_ << "\"";
  if (template_) os << ", template adds " << template_prefix_.size() << " + " << template_suffix_.size() << " ids";
  os << ", eos " << (eos_ ? std::to_string(*eos_) : "none") << ", bos " << (bos_ ? std::to_string(*bos_) : "none");
  return os.str();
}

}  // namespace mg::data
