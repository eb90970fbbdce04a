#include "data/added_vocabulary.h"

#include <algorithm>

#include "data/unicode.h"

namespace mg::data {

namespace {
// HF compares added tokens by content and flags (its AddedToken has no id).
bool same_token(const AddedToken& a, const AddedToken& b) {
  return a.content == b.content && a.single_word == b.single_word && a.lstrip == b.lstrip && a.rstrip == b.rstrip &&
         a.normalized == b.normalized && a.special == b.special;
}
}  // namespace

AddedVocabulary::AddedVocabulary(const std::vector<AddedToken>& tokens,
                                 const std::unordered_map<std::string, int32_t>& model_vocab,
                                 const std::function<std::string(std::string_view)>& normalize) {
  // HF keeps special tokens and the others in two lists and matches "special ++ others".
  std::vector<AddedToken> specials, others;
  for (const AddedToken& t : tokens)
    if (t.special && !t.content.empty() && special_.insert(t.content).second) specials.push_back(t);

  const int64_t model_size = (int64_t)model_vocab.size();
  for (const AddedToken& t : tokens) {
    if (t.content.empty()) continue;
    bool present = false;
    for (auto& [id, old] : by_id_) present |= same_token(old, t);
    if (present) continue;
    int64_t id;
    if (auto a = id_of_.find(t.content); a != id_of_.end()) {
      id = a->second;
    } else if (auto v = model_vocab.find(t.content); v != model_vocab.end()) {
      id = v->second;
    } else if (id_of_.empty()) {
      id = model_size;
    } else {
      int64_t max = max_id();
      id = (max >= model_size || model_size == 0) ? max + 1 : model_size;
    }
    id_of_[t.content] = (int32_t)id;
    by_id_[(int32_t)id] = t;
    if (!special_.count(t.content)) others.push_back(t);
  }

  std::vector<const AddedToken*> all;
  for (auto& t : specials) all.push_back(&t);
  for (auto& t : others) all.push_back(&t);
  for (const AddedToken* t : all) {
    PatternSet& set = t->normalized ? normalized_ : raw_;
    set.patterns.push_back(t->normalized && normalize ? normalize(t->content) : t->content);
    set.ids.push_back(id_of_.at(t->content));
  }
  build(raw_);
  build(normalized_);
}

void AddedVocabulary::build(PatternSet& set) const {
  set.by_first_byte.assign(256, {});
  for (uint32_t i = 0; i < set.patterns.size(); ++i)
    if (!set.patterns[i].empty()) set.by_first_byte[(unsigned char)set.patterns[i][0]].push_back(i);
  for (auto& bucket : set.by_first_byte)
    std::stable_sort(bucket.begin(), bucket.end(),
                     [&](uint32_t a, uint32_t b) { return set.patterns[a].size() > set.patterns[b].size(); });
}

int AddedVocabulary::find(const PatternSet& set, std::string_view text, size_t from, size_t& start) const {
  if (set.patterns.empty()) return -1;
  for (size_t i = from; i < text.size(); ++i) {
    for (uint32_t p : set.by_first_byte[(unsigned char)text[i]]) {
      const std::string& pat = set.patterns[p];
      if (text.compare(i, pat.size(), pat) == 0) {  // longest first: the first hit is the longest
        start = i;
        return (int)p;
      }
    }
  }
  return -1;
}

std::vector<AddedVocabulary::Split> AddedVocabulary::split(std::string_view text, bool normalized_set) const {
  std::vector<Split> out;
  if (text.empty()) return out;
  const PatternSet& set = normalized_set ? normalized_ : raw_;
  size_t start_offset = 0, search = 0, mstart = 0;
  for (int p; search < text.size() && (p = find(set, text, search, mstart)) >= 0;) {
    const size_t mend = mstart + set.patterns[p].size();
    search = mend;  // Aho-Corasick's non-overlapping iteration resumes at the match's end
    const int32_t id = set.ids[p];
    const AddedToken& tok = by_id_.at(id);
    size_t start = mstart, stop = mend;
    if (tok.single_word) {
      bool start_space = start == 0 || !unicode::is_word_char_at(text, unicode::previous_char_start(text, start));
      bool stop_space = stop == text.size() || !unicode::is_word_char_at(text, stop);
      if (!start_space || !stop_space) continue;
    }
    if (tok.lstrip) {
      size_t s = start;
      while (s > 0) {
        size_t prev = unicode::previous_char_start(text, s);
        if (!unicode::is_white_space_at(text, prev)) break;
        s = prev;
      }
      start = std::max(s, start_offset);
    }
    if (tok.rstrip) {
      while (stop < text.size() && unicode::is_white_space_at(text, stop))
        stop += unicode::utf8_char_length((unsigned char)text[stop]);
    }
    if (start_offset < start) out.push_back({start_offset, start, -1});
    out.push_back({start, stop, id});
    start_offset = stop;
  }
  if (start_offset < text.size()) out.push_back({start_offset, text.size(), -1});
  return out;
}

std::optional<int32_t> AddedVocabulary::id_of(const std::string& content) const {
  auto it = id_of_.find(content);
  if (it == id_of_.end()) return std::nullopt;
  return it->second;
}

int32_t AddedVocabulary::max_id() const {
  int32_t m = -1;
  for (auto& [content, id] : id_of_) m = std::max(m, id);
  return m;
}

}  // namespace mg::data
