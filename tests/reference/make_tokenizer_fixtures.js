// tests/reference/make_tokenizer_fixtures.js — makes the fixtures of tests/test_tokenizer.cpp
// with Hugging Face's own tokenizers library (its Rust core, v0.22, behind Node bindings).
//
// Run (Node >= 18; nothing is installed into the repository):
//   mkdir -p /tmp/hf-tok && cd /tmp/hf-tok && npm init -y && npm install @anush008/tokenizers@0.6.0
//   NODE_PATH=/tmp/hf-tok/node_modules node tests/reference/make_tokenizer_fixtures.js
// It needs the fortunes corpus (/usr/share/games/fortunes; scripts/setup.sh --data) and writes
//   tests/reference/tokenizers/<name>.json   tokenizer.json files, as HF's save() writes them
//   tests/reference/tokenizer_fixtures.json  for every tokenizer: the input bytes (hex) of each
//                                            test string, HF's ids and HF's decode(ids); HF's
//                                            decode of extra id sequences; added tokens' ids
//
// How the tokenizers are made: one BPE training run (HF's BpeTrainer through Tokenizer.train,
// NFC + ByteLevel pre-tokenizer) on the fortunes files; each variant then keeps the first k
// merges (a BPE trainer's merges are greedy, so the first k are what training to that size
// gives), gets a vocabulary (specials, then the 256 byte-alphabet characters in byte order,
// then the merge results), its options and added tokens, and is loaded back with
// Tokenizer.fromString, addAddedTokens (and setPostProcessor). Every id and decoded string in the fixtures comes
// from HF's encode/decode of that loaded tokenizer. Training tie-breaks may differ between
// runs, so regenerate the tokenizers and the fixtures together (this script does).
//
// Invalid UTF-8: HF's encode takes a string; bytes reach it only through a bytes -> string
// conversion, which in Node (Buffer.toString), Rust (String::from_utf8_lossy) and Python
// (decode(errors="replace")) replaces each maximal ill-formed subpart by U+FFFD. The fixture
// for invalid bytes is HF.encode(Buffer.from(bytes).toString("utf8")); this script also
// checks that Node's replacement equals HF's own (its decode of the byte tokens).
'use strict';
const fs = require('fs');
const path = require('path');
const tk = require('@anush008/tokenizers');

const OUT = path.join(__dirname);
const FORTUNES = '/usr/share/games/fortunes';

// GPT-2's bytes_to_unicode.
function byteAlphabet() {
  const bs = [];
  for (let b = 0x21; b <= 0x7e; b++) bs.push(b);
  for (let b = 0xa1; b <= 0xac; b++) bs.push(b);
  for (let b = 0xae; b <= 0xff; b++) bs.push(b);
  const chars = new Array(256);
  let n = 0;
  for (let b = 0; b < 256; b++) chars[b] = String.fromCodePoint(bs.includes(b) ? b : 256 + n++);
  return chars;
}
const BYTE_CHARS = byteAlphabet();
if ([...BYTE_CHARS].sort().join('') !== tk.byteLevelAlphabet().sort().join(''))
  throw new Error('byte alphabet differs from HF byteLevelAlphabet()');

// ---- training ----------------------------------------------------------------------------------
function fortuneFiles() {
  return fs.readdirSync(FORTUNES).sort()
    .map((f) => path.join(FORTUNES, f))
    .filter((f) => !f.endsWith('.dat') && !fs.lstatSync(f).isSymbolicLink() && fs.statSync(f).isFile());
}

function trainRaw() {
  const t = new tk.Tokenizer(tk.BPE.empty());
  t.setNormalizer(tk.nfcNormalizer());
  t.setPreTokenizer(tk.byteLevelPreTokenizer(false, true));
  t.train(fortuneFiles());
  const file = path.join(require('os').tmpdir(), `mg_tok_raw_${process.pid}.json`);
  t.save(file, false);
  const j = JSON.parse(fs.readFileSync(file, 'utf8'));
  fs.unlinkSync(file);
  return j;
}

// ---- variants ------------------------------------------------------------------------------------
const ADDED = {
  endoftext: () => new tk.AddedToken('<|endoftext|>', true),
  padding: () => new tk.AddedToken('<|padding|>', true),
  // GPT-NeoX: runs of 24 down to 2 spaces, plain (non-special) and normalized.
  neoxSpaces: () => Array.from({length: 23}, (_, i) => new tk.AddedToken(' '.repeat(24 - i), false, {normalized: true})),
};

const VARIANTS = [
  {name: 'neox_like', vocab: 2000, specialsInVocab: ['<|endoftext|>', '<|padding|>'], nfc: true, addPrefixSpace: false,
   added: () => [ADDED.endoftext(), ADDED.padding(), ...ADDED.neoxSpaces()]},
  {name: 'gpt2_like', vocab: 600, specialsAtEnd: ['<|endoftext|>'], nfc: false, addPrefixSpace: true, legacyMerges: true,
   added: () => [ADDED.endoftext()]},
  {name: 'added_flags', vocab: 800, nfc: true, addPrefixSpace: false,
   added: () => [
     new tk.AddedToken('[MASK]', true, {leftStrip: true, rightStrip: true}),
     new tk.AddedToken('<sep>', true, {singleWord: true}),
     new tk.AddedToken('<|endoftext|>', true, {normalized: true}),
     new tk.AddedToken('ab', false, {singleWord: true}),
     new tk.AddedToken('tok', false, {singleWord: true}),
     new tk.AddedToken('über', false, {singleWord: true, leftStrip: true}),
     new tk.AddedToken('@@', false, {leftStrip: true, rightStrip: true}),
     new tk.AddedToken('café', false, {normalized: true}),
     new tk.AddedToken('e\u0301t\u00e9', false, {normalized: false}),
     new tk.AddedToken('\u2126', false, {normalized: true}),
     new tk.AddedToken('\t\t', false, {normalized: false, rightStrip: true}),
     new tk.AddedToken('  ', false, {normalized: true}),
   ]},
  {name: 'ignore_merges', vocab: 400, nfc: true, addPrefixSpace: true, ignoreMerges: true,
   extraVocab: ['Ġhello', 'Ġworld', 'ĠMamba', 'Ġ123', 'ing.'], added: () => []},
  {name: 'no_regex', vocab: 300, nfc: false, addPrefixSpace: true, useRegex: false, added: () => [ADDED.endoftext()]},
  {name: 'unk_fused', vocab: 300, nfc: true, addPrefixSpace: false, partialAlphabet: true,
   specialsInVocab: ['<unk>'], unk: '<unk>', fuseUnk: true, added: () => []},
  // A post-processor that adds ids: TemplateProcessing (BOS before, EOS after) in a Sequence
  // after ByteLevel, as HF's encode applies it by default.
  {name: 'template', vocab: 500, nfc: true, addPrefixSpace: false,
   added: () => [ADDED.endoftext(), ADDED.padding()],
   postProcessor: (t) => tk.sequenceProcessing([tk.byteLevelProcessing(true), tk.templateProcessing(
     '<|endoftext|> $A <|padding|>', '$A $B', [['<|endoftext|>', t.tokenToId('<|endoftext|>')], ['<|padding|>', t.tokenToId('<|padding|>')]])])},
  {name: 'byte_fallback', vocab: 480, nfc: true, addPrefixSpace: false, partialAlphabet: true,
   specialsInVocab: ['<unk>'], unk: '<unk>', fuseUnk: false, byteFallback: true, added: () => []},
];

function makeVariant(raw, v) {
  const j = JSON.parse(JSON.stringify(raw));
  const vocab = {};
  let next = 0;
  const add = (t) => { if (!(t in vocab)) vocab[t] = next++; };
  (v.specialsInVocab || []).forEach(add);
  if (v.partialAlphabet) {
    // Only the single characters training saw (fortunes is mostly ASCII): other bytes are
    // outside the vocabulary, which exercises unk / byte_fallback.
    Object.keys(raw.model.vocab).filter((t) => [...t].length === 1).sort().forEach(add);
  } else {
    BYTE_CHARS.forEach(add);
  }
  if (v.byteFallback)  // every <0xXX> but <0xC5>: some fallbacks fail and go to unk
    for (let b = 0; b < 256; b++) if (b !== 0xc5) add(`<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`);
  const merges = [];
  for (const [a, b] of raw.model.merges) {
    if (next >= v.vocab - (v.specialsAtEnd || []).length - (v.extraVocab || []).length) break;
    if (!(a in vocab) || !(b in vocab)) continue;  // (partial alphabet)
    merges.push([a, b]);
    add(a + b);
  }
  (v.extraVocab || []).forEach(add);
  (v.specialsAtEnd || []).forEach(add);
  j.model.vocab = vocab;
  j.model.merges = v.legacyMerges ? merges.map(([a, b]) => `${a} ${b}`) : merges;
  j.model.unk_token = v.unk || null;
  j.model.fuse_unk = !!v.fuseUnk;
  j.model.byte_fallback = !!v.byteFallback;
  j.model.ignore_merges = !!v.ignoreMerges;
  j.normalizer = v.nfc ? {type: 'NFC'} : null;
  const bl = {type: 'ByteLevel', add_prefix_space: v.addPrefixSpace, trim_offsets: true, use_regex: v.useRegex !== false};
  j.pre_tokenizer = bl;
  j.post_processor = bl;
  j.decoder = bl;
  j.added_tokens = [];
  const t = tk.Tokenizer.fromString(JSON.stringify(j));
  const added = v.added();
  if (added.length) t.addAddedTokens(added);
  if (v.postProcessor) t.setPostProcessor(v.postProcessor(t));
  const file = path.join(OUT, 'tokenizers', `${v.name}.json`);
  fs.mkdirSync(path.dirname(file), {recursive: true});
  t.save(file, false);
  // What we test is HF's reading of the file we commit.
  return {tok: tk.Tokenizer.fromFile(file), file: `tokenizers/${v.name}.json`, added};
}

// ---- the test strings ------------------------------------------------------------------------
function fortuneSample() {
  const text = fs.readFileSync(path.join(FORTUNES, 'fortunes'), 'utf8');
  return text.split('\n%\n').slice(0, 6).join('\n%\n');
}

const U = (s) => Buffer.from(s, 'utf8');
const B = (arr) => Buffer.from(arr);
const STRINGS = [
  ['empty', U('')],
  ['english', U('The quick brown fox jumps over the lazy dog.')],
  ['hello', U('Hello, world! hello world Mamba 123')],
  ['contractions', U("I'm sure you'll see it's what they've done; we'd said DON'T. She's 'quoted' o'clock")],
  ['contraction_edges', U("'s's'S'll 'LL ''re x'd'")],
  ['numbers', U('3.14159 2024-06-01 1,000,000 +42 -7 0x1F 1e-9 ½ ²³ ٣٤ 一二三 Ⅻ 12345678901234567890')],
  ['code', U('def f(x):\n    return x**2  # square\n\tif (a != b) { c[i] = d->e; }\n')],
  ['leading_spaces', U('   leading spaces')],
  ['trailing_spaces', U('trailing spaces   ')],
  ['tabs', U('a\tb\t\tc\t\t\td \t \t')],
  ['newlines', U('line1\nline2\n\nline4\r\n\r\nend\n')],
  ['only_whitespace', U('   \n\n   \t ')],
  ['one_newline', U('\n')],
  ['one_space', U(' ')],
  ['space_runs', U('a  b   c    d         e' + ' '.repeat(30) + 'f' + ' '.repeat(25))],
  ['unicode_spaces', U('nbsp\u00a0x ideo\u3000x ls\u2028x nel\u0085x mvs\u180ex \u180e\u180ey \u180e \u0085z zwsp\u200bx en\u2002x\u2002\u2002y')],
  ['accents_composed', U('café naïve résumé Zürich Ångström')],
  ['accents_decomposed', U('cafe\u0301 nai\u0308ve re\u0301sume\u0301 Zu\u0308rich A\u030angstro\u0308m')],
  ['nfc_singletons', U('\u212b \u2126 \u1100\u1161\u11a8 \u0041\u030a \ufb01 \u01c5')],
  ['combining_only', U('\u0301\u0308 x\u0323\u0307')],
  ['cjk', U('日本語のテキスト、中文文本。한국어 텍스트')],
  ['emoji', U('😀 👍🏽 👨‍👩‍👧‍👦 🏳️‍🌈 ❤️ 🇩🇪')],
  ['rtl', U('مرحبا بالعالم שלום עולם')],
  ['controls', U('\u0000\u0001\u001b[31m\u007fbell\u0007')],
  ['long_word', U('a'.repeat(300) + ' ' + '🙂'.repeat(40))],
  ['endoftext_alone', U('<|endoftext|>')],
  ['endoftext_edges', U('<|endoftext|>Hello world<|endoftext|>')],
  ['endoftext_inside', U('in<|endoftext|>side and <|endoftext|><|endoftext|> twice')],
  ['endoftext_partial', U('<|endoftext| <|endoftext <|padding|> <|padding|><|padding|>')],
  ['endoftext_spaces', U('  <|endoftext|>  x')],
  ['mask', U('x [MASK] y x[MASK]y  [MASK]  [MASK]\n')],
  ['sep', U('a <sep> b a<sep>b <sep>x _<sep> é<sep> <sep>')],
  ['single_word', U('ab abc cab ab_ ab. tok tok_ tok- toké tok\u200d tok\u24b6 1tok tok1 xüber über ü über\u0308')],
  ['strip', U('x @@ y x@@y @@   z \t@@\t')],
  ['added_normalized', U('café cafe\u0301 e\u0301té été \u2126 \u03a9 <|endoftext|>')],
  ['tab_pairs', U('\t\t  x\t\t\ty')],
  // U+00AD's second byte (AD) has no token in the byte_fallback tokenizer, U+3001's bytes do.
  ['unk_then_fallback', U('soft\u00ad\u3001hyphen x\u00ad\u00ad\u00ady \u0160\u0161')],
  ['fortunes', U(fortuneSample())],
  // invalid UTF-8 (see the top of this file)
  ['invalid_ff', B([0x61, 0xff, 0x62])],
  ['invalid_truncated', B([0x61, 0xe2, 0x82, 0x41])],
  ['invalid_surrogate', B([0xed, 0xa0, 0x80, 0x20, 0x78])],
  ['invalid_overlong', B([0xc0, 0xaf, 0xe0, 0x80, 0x80])],
  ['invalid_above_max', B([0xf4, 0x90, 0x80, 0x80, 0x21])],
  ['invalid_continuations', B([0x80, 0x80, 0xbf, 0x20, 0x61])],
  ['invalid_truncated_emoji_end', B([0x68, 0x69, 0xf0, 0x9f, 0x98])],
  ['invalid_mixed', Buffer.concat([U('ok '), B([0xc3]), U(' é '), B([0xf0, 0x9f]), U('😀')])],
];

// Id sequences for decode (beyond decode(encode(s))): every id in order, ids past the end,
// byte tokens forming invalid UTF-8, and pseudo-random sequences (fixed seed).
function decodeCases(tok, vocabSize) {
  const byteId = (b) => tok.tokenToId(BYTE_CHARS[b]);
  const cases = [];
  cases.push(Array.from({length: vocabSize + 3}, (_, i) => i));
  const bytes = [[0xe2, 0x82], [0xe2, 0x82, 0xac], [0xf0, 0x9f, 0x98, 0x80], [0xf0, 0x9f], [0xc3], [0xff, 0x41], [0xed, 0xa0, 0x80]];
  for (const bs of bytes) {
    const ids = bs.map(byteId);
    if (ids.every((x) => x !== null && x !== undefined)) cases.push(ids);
  }
  let s = 12345;
  const rnd = () => (s = (s * 1103515245 + 12345) % 2147483648) / 2147483648;
  for (let k = 0; k < 20; k++)
    cases.push(Array.from({length: 1 + Math.floor(rnd() * 12)}, () => Math.floor(rnd() * (vocabSize + 4))));
  return cases;
}

async function main() {
  const raw = trainRaw();
  const out = {
    generator: 'tests/reference/make_tokenizer_fixtures.js with @anush008/tokenizers 0.6.0 (HF tokenizers 0.22.2)',
    strings: STRINGS.map(([name, bytes]) => ({name, hex: bytes.toString('hex')})),
    tokenizers: [],
  };
  for (const v of VARIANTS) {
    const {tok, file, added} = makeVariant(raw, v);
    const vocabSize = tok.getVocabSize(true);
    const entry = {name: v.name, file, hf_vocab_size: vocabSize, added: [], encode: [], decode: []};
    for (const a of added) entry.added.push({content: a.getContent(), id: tok.tokenToId(a.getContent())});
    for (const [name, bytes] of STRINGS) {
      const text = bytes.toString('utf8');  // invalid UTF-8 -> U+FFFD, see the top
      const ids = (await tok.encode(text)).getIds();
      entry.encode.push({name, ids, decoded: await tok.decode(ids, false)});
    }
    for (const ids of decodeCases(tok, vocabSize)) entry.decode.push({ids, decoded: await tok.decode(ids, false)});
    out.tokenizers.push(entry);
    console.log(`${v.name}: vocab ${vocabSize}, ${file}`);
  }

  // Node's bytes -> string replacement == HF's own (from_utf8_lossy in its ByteLevel decoder).
  const neox = tk.Tokenizer.fromFile(path.join(OUT, 'tokenizers/neox_like.json'));
  for (const [name, bytes] of STRINGS) {
    const viaHF = await neox.decode([...bytes].map((b) => neox.tokenToId(BYTE_CHARS[b])), false);
    if (viaHF !== bytes.toString('utf8')) throw new Error(`${name}: Node and HF replace invalid UTF-8 differently`);
  }
  fs.writeFileSync(path.join(OUT, 'tokenizer_fixtures.json'), JSON.stringify(out) + '\n');
  console.log('wrote tokenizer_fixtures.json');
}

main().catch((e) => { console.error(e); process.exit(1); });
