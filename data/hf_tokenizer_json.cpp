#include "data/hf_tokenizer_json.h"

#include <limits>

#include "core/error.h"

namespace mg::data {

namespace {

using json::Kind;
using json::Value;

// Errors read "<source>: <field path> <what>", e.g. "tok.json: model.dropout 0.1 is not ...".
class Reader {
 public:
  explicit Reader(std::string source) : source_(std::move(source)) {}

  [[noreturn]] void fail(const std::string& path, const std::string& what) const {
    throw Error(source_ + ": " + path + " " + what);
  }

  // Value of `key` in object v (at `path`), or nullptr when absent or null.
  const Value* get(const Value& v, const std::string& path, const std::string& key) const {
    if (!v.is_object()) fail(path, std::string("must be an object, got ") + json::kind_name(v.kind()));
    const Value* f = v.find(key);
    return f && !f->is_null() ? f : nullptr;
  }
  const Value& require(const Value& v, const std::string& path, const std::string& key) const {
    const Value* f = get(v, path, key);
    if (!f) fail(join(path, key), "is missing");
    return *f;
  }
  bool boolean(const Value& v, const std::string& path, const std::string& key, bool dflt) const {
    const Value* f = get(v, path, key);
    if (!f) return dflt;
    if (!f->is_bool()) fail(join(path, key), std::string("must be true or false, got a ") + json::kind_name(f->kind()));
    return f->as_bool();
  }
  const std::string& string(const Value& v, const std::string& path) const {
    if (!v.is_string()) fail(path, std::string("must be a string, got a ") + json::kind_name(v.kind()));
    return v.as_string();
  }
  // The "type" of a component object, for messages and dispatch.
  const std::string& type(const Value& v, const std::string& path) const {
    return string(require(v, path, "type"), join(path, "type"));
  }
  static std::string join(const std::string& path, const std::string& key) {
    return path.empty() ? key : path + "." + key;
  }
  static std::string index(const std::string& path, size_t i) { return path + "[" + std::to_string(i) + "]"; }

 private:
  std::string source_;
};

void read_normalizer(const Reader& r, const Value& v, const std::string& path, BpeSpec& spec) {
  const std::string& t = r.type(v, path);
  if (t == "NFC") {
    spec.nfc = true;
  } else if (t == "Sequence") {
    const Value& list = r.require(v, path, "normalizers");
    if (!list.is_array()) r.fail(Reader::join(path, "normalizers"), "must be an array");
    for (size_t i = 0; i < list.size(); ++i)
      read_normalizer(r, list.as_array()[i], Reader::index(Reader::join(path, "normalizers"), i), spec);
  } else {
    r.fail(Reader::join(path, "type"), "\"" + t + "\" is not supported (supported: NFC, null, Sequence of those)");
  }
}

// The one ByteLevel component of `v` (itself, or the single element of a Sequence), checked.
const Value& byte_level(const Reader& r, const Value& v, const std::string& path, const char* list_key,
                        const char* what) {
  const std::string& t = r.type(v, path);
  if (t == "Sequence") {
    const Value& list = r.require(v, path, list_key);
    const std::string lpath = Reader::join(path, list_key);
    if (!list.is_array() || list.size() != 1)
      r.fail(lpath, std::string("must hold exactly one ByteLevel ") + what + " (a Sequence of several is not supported)");
    return byte_level(r, list.as_array()[0], Reader::index(lpath, 0), list_key, what);
  }
  if (t != "ByteLevel")
    r.fail(Reader::join(path, "type"), "\"" + t + "\" is not supported (supported: ByteLevel, or a Sequence holding one)");
  return v;
}

void read_model(const Reader& r, const Value& m, BpeSpec& spec) {
  const std::string path = "model";
  const Value* t = r.get(m, path, "type");
  if (t && r.string(*t, "model.type") != "BPE")
    r.fail("model.type", "\"" + t->as_string() + "\" is not supported (supported: BPE)");
  if (!t && !r.get(m, path, "merges")) r.fail("model.type", "is missing (supported: BPE)");

  if (const Value* d = r.get(m, path, "dropout")) {
    if (!d->is_number() || d->as_double() != 0.0)
      r.fail("model.dropout", "must be null or 0 (BPE dropout samples merges at random; encode here is deterministic)");
  }
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"})
    if (const Value* f = r.get(m, path, key)) {
      if (!r.string(*f, Reader::join(path, key)).empty())
        r.fail(Reader::join(path, key), "\"" + f->as_string() + "\" is not supported (byte-level BPE uses none: null or \"\")");
    }
  if (const Value* u = r.get(m, path, "unk_token")) spec.unk_token = r.string(*u, "model.unk_token");
  spec.fuse_unk = r.boolean(m, path, "fuse_unk", false);
  spec.byte_fallback = r.boolean(m, path, "byte_fallback", false);
  spec.ignore_merges = r.boolean(m, path, "ignore_merges", false);

  const Value& vocab = r.require(m, path, "vocab");
  if (!vocab.is_object()) r.fail("model.vocab", "must be an object {token: id}");
  spec.vocab.reserve(vocab.size());
  for (auto& [tok, id] : vocab.as_object()) {
    if (!id.is_int() || id.as_int() < 0 || id.as_int() > std::numeric_limits<int32_t>::max())
      r.fail("model.vocab[\"" + tok + "\"]", "must be an integer id in [0, 2^31), at byte " + std::to_string(id.offset()));
    spec.vocab.emplace_back(tok, id.as_int());
  }

  const Value& merges = r.require(m, path, "merges");
  if (!merges.is_array()) r.fail("model.merges", "must be an array");
  spec.merges.reserve(merges.size());
  // Two formats, as HF writes them: ["a b", ...] (up to tokenizers 0.19) or [["a", "b"], ...];
  // one array holds one of them. In the first, "#version" lines are comments.
  bool strings = merges.size() > 0 && merges.as_array()[0].is_string();
  size_t rank = 0;
  for (size_t i = 0; i < merges.size(); ++i) {
    const Value& e = merges.as_array()[i];
    const std::string p = Reader::index("model.merges", i);
    if (strings) {
      if (!e.is_string()) r.fail(p, "must be a string \"a b\" like the merges before it");
      const std::string& s = e.as_string();
      if (s.rfind("#version", 0) == 0) continue;
      size_t sp = s.find(' ');
      if (sp == std::string::npos || s.find(' ', sp + 1) != std::string::npos)
        r.fail(p, "\"" + s + "\" must be two tokens separated by one space (merge rank " + std::to_string(rank + 1) + ")");
      spec.merges.emplace_back(s.substr(0, sp), s.substr(sp + 1));
    } else {
      if (!e.is_array() || e.size() != 2 || !e.as_array()[0].is_string() || !e.as_array()[1].is_string())
        r.fail(p, "must be a pair of strings [\"a\", \"b\"] like the merges before it");
      spec.merges.emplace_back(e.as_array()[0].as_string(), e.as_array()[1].as_string());
    }
    ++rank;
  }
}

// TemplateProcessing: {"single": [{"SpecialToken": {"id": NAME, ...}} | {"Sequence": {"id":
// "A", ...}}, ...], "special_tokens": {NAME: {"ids": [...]}}} — the ids of the special pieces
// before the sequence go first, those after it last (HF's encode adds them by default).
void read_template(const Reader& r, const Value& v, const std::string& path, BpeSpec& spec) {
  if (spec.template_processing) r.fail(path, "is a second TemplateProcessing (one is supported)");
  spec.template_processing = true;
  const Value& single = r.require(v, path, "single");
  const Value* specials = r.get(v, path, "special_tokens");
  if (!single.is_array()) r.fail(path + ".single", "must be an array of pieces");
  bool seen_a = false;
  for (size_t i = 0; i < single.size(); ++i) {
    const Value& piece = single.as_array()[i];
    const std::string p = Reader::index(path + ".single", i);
    if (const Value* seq = r.get(piece, p, "Sequence")) {
      const std::string& id = r.string(r.require(*seq, p + ".Sequence", "id"), p + ".Sequence.id");
      if (id != "A" || seen_a) r.fail(p + ".Sequence.id", "\"" + id + "\" must be the one sequence \"A\" of a single-sequence template");
      seen_a = true;
    } else if (const Value* sp = r.get(piece, p, "SpecialToken")) {
      const std::string& name = r.string(r.require(*sp, p + ".SpecialToken", "id"), p + ".SpecialToken.id");
      const Value* tok = specials ? r.get(*specials, path + ".special_tokens", name) : nullptr;
      if (!tok) r.fail(path + ".special_tokens", "has no entry \"" + name + "\" (used by " + p + ")");
      const std::string ip = path + ".special_tokens[\"" + name + "\"].ids";
      const Value& ids = r.require(*tok, path + ".special_tokens[\"" + name + "\"]", "ids");
      if (!ids.is_array()) r.fail(ip, "must be an array of ids");
      for (const Value& id : ids.as_array()) {
        if (!id.is_int() || id.as_int() < 0 || id.as_int() > std::numeric_limits<int32_t>::max())
          r.fail(ip, "must hold integer ids in [0, 2^31)");
        (seen_a ? spec.template_suffix : spec.template_prefix).push_back((int32_t)id.as_int());
      }
    } else {
      r.fail(p, "must be {\"Sequence\": ...} or {\"SpecialToken\": ...}");
    }
  }
  if (!seen_a) r.fail(path + ".single", "has no sequence piece \"$A\"");
}

void read_post_processor(const Reader& r, const Value& v, const std::string& path, BpeSpec& spec) {
  const std::string& t = r.type(v, path);
  if (t == "ByteLevel") return;  // offsets only
  if (t == "TemplateProcessing") return read_template(r, v, path, spec);
  if (t == "Sequence") {
    const Value& list = r.require(v, path, "processors");
    if (!list.is_array()) r.fail(Reader::join(path, "processors"), "must be an array");
    for (size_t i = 0; i < list.size(); ++i)
      read_post_processor(r, list.as_array()[i], Reader::index(Reader::join(path, "processors"), i), spec);
    return;
  }
  r.fail(Reader::join(path, "type"),
         "\"" + t + "\" is not supported (supported: null, ByteLevel, TemplateProcessing, Sequence of those)");
}

void read_added_tokens(const Reader& r, const Value& list, BpeSpec& spec) {
  if (!list.is_array()) r.fail("added_tokens", "must be an array");
  for (size_t i = 0; i < list.size(); ++i) {
    const Value& e = list.as_array()[i];
    const std::string p = Reader::index("added_tokens", i);
    AddedToken t;
    t.content = r.string(r.require(e, p, "content"), p + ".content");
    if (const Value* id = r.get(e, p, "id")) {
      if (!id->is_int() || id->as_int() < 0 || id->as_int() > std::numeric_limits<int32_t>::max())
        r.fail(p + ".id", "must be an integer id in [0, 2^31)");
      t.file_id = (int32_t)id->as_int();
    }
    // Defaults as HF's AddedToken::default().
    t.single_word = r.boolean(e, p, "single_word", false);
    t.lstrip = r.boolean(e, p, "lstrip", false);
    t.rstrip = r.boolean(e, p, "rstrip", false);
    t.normalized = r.boolean(e, p, "normalized", true);
    t.special = r.boolean(e, p, "special", false);
    spec.added_tokens.push_back(std::move(t));
  }
}

}  // namespace

BpeSpec parse_tokenizer_json(const Value& doc, const std::string& source) {
  Reader r(source);
  if (!doc.is_object()) r.fail("the document", "must be a JSON object (a Hugging Face tokenizer.json)");
  BpeSpec spec;

  if (const Value* v = r.get(doc, "", "version")) {
    if (r.string(*v, "version") != "1.0") r.fail("version", "\"" + v->as_string() + "\" is not supported (supported: \"1.0\")");
  }
  for (const char* key : {"truncation", "padding"})
    if (r.get(doc, "", key))
      r.fail(key, "is set; not supported (it changes the ids of an encode): make it null");

  if (const Value* n = r.get(doc, "", "normalizer")) read_normalizer(r, *n, "normalizer", spec);

  const Value* pre = r.get(doc, "", "pre_tokenizer");
  if (!pre) r.fail("pre_tokenizer", "is null or missing (supported: ByteLevel, or a Sequence holding one)");
  const Value& bl = byte_level(r, *pre, "pre_tokenizer", "pretokenizers", "pre-tokenizer");
  const std::string bl_path = &bl == pre ? "pre_tokenizer" : "pre_tokenizer.pretokenizers[0]";
  if (!r.get(bl, bl_path, "add_prefix_space")) r.fail(bl_path + ".add_prefix_space", "is missing (true or false)");
  spec.add_prefix_space = r.boolean(bl, bl_path, "add_prefix_space", false);
  spec.use_regex = r.boolean(bl, bl_path, "use_regex", true);

  const Value* dec = r.get(doc, "", "decoder");
  if (!dec) r.fail("decoder", "is null or missing (supported: ByteLevel, or a Sequence holding one)");
  byte_level(r, *dec, "decoder", "decoders", "decoder");

  if (const Value* pp = r.get(doc, "", "post_processor")) read_post_processor(r, *pp, "post_processor", spec);

  read_model(r, r.require(doc, "", "model"), spec);
  if (const Value* a = r.get(doc, "", "added_tokens")) read_added_tokens(r, *a, spec);
  return spec;
}

}  // namespace mg::data
