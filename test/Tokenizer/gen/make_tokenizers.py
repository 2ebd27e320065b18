#!/usr/bin/env python3
"""Builds the small tokenizer.json files under test/Tokenizer/Inputs/.

Each layout mirrors a real checkpoint family with a vocabulary trained here
(a plain greedy BPE on a small built-in corpus), so the files stay small.
Expected outputs come from Hugging Face tokenizers: see make_cases.js and
README.md. Not part of the build or of CI.

usage: make_tokenizers.py OUTDIR
"""
import collections
import json
import os
import sys

CORPUS = """
The quick brown fox jumps over the lazy dog. It's a test, isn't it? We're
testing tokenizers: the tokenizer splits text into tokens, and the tokens
into ids. Hello world! Hello there, hello again. Numbers like 2024 and 3.14
and 1,000,000 appear in text too. def main(): return 0  # code
Mixture of Experts models route each token to the top-2 experts.
café naïve résumé Straße — «quotes» “smart quotes” ‘single’
日本語のテキストと中文文本。한국어 텍스트. Привет мир. مرحبا بالعالم
"""


def pair_counts(words):
    counts = collections.Counter()
    for word, freq in words.items():
        for a, b in zip(word, word[1:]):
            counts[(a, b)] += freq
    return counts


def train(words, num_merges):
    """Greedy BPE on {tuple(symbols): freq}; returns the merges in order."""
    merges = []
    words = dict(words)
    for _ in range(num_merges):
        counts = pair_counts(words)
        if not counts:
            break
        (a, b), freq = max(counts.items(), key=lambda kv: (kv[1], kv[0]))
        merges.append((a, b))
        new_words = {}
        for word, f in words.items():
            out, i = [], 0
            while i < len(word):
                if i + 1 < len(word) and word[i] == a and word[i + 1] == b:
                    out.append(a + b)
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            new_words[tuple(out)] = new_words.get(tuple(out), 0) + f
        words = new_words
    return merges


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + \
        list(range(0xAE, 0x100))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def added(id_, content, special=True, normalized=False, lstrip=False,
          rstrip=False, single_word=False):
    return {"id": id_, "content": content, "single_word": single_word,
            "lstrip": lstrip, "rstrip": rstrip, "normalized": normalized,
            "special": special}


def llama_vocab(num_merges):
    """Byte-fallback vocab: <unk> <s> </s>, the 256 <0xXX>, corpus chars."""
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for b in range(256):
        vocab["<0x%02X>" % b] = len(vocab)
    text = CORPUS.replace("\n", " ")
    words = collections.Counter(
        tuple("\u2581" + w) for w in text.split(" ") if w)
    # Rare characters stay out of the vocab so byte fallback gets exercised.
    chars = collections.Counter(c for w, f in words.items() for c in w
                                for _ in range(f))
    for c, f in sorted(chars.items()):
        if f >= 2 and c not in vocab:
            vocab[c] = len(vocab)
    words = {w: f for w, f in words.items() if all(c in vocab for c in w)}
    merges = train(words, num_merges)
    for a, b in merges:
        if a + b not in vocab:
            vocab[a + b] = len(vocab)
    return vocab, merges


def bytelevel_vocab(num_merges, prefix_space):
    b2u = bytes_to_unicode()
    vocab = {b2u[b]: i for i, b in enumerate(range(256))}
    text = CORPUS.replace("\n", " ")
    words = collections.Counter()
    for i, w in enumerate(text.split(" ")):
        if not w:
            continue
        raw = ((" " if i or prefix_space else "") + w).encode()
        words[tuple(b2u[b] for b in raw)] += 1
    merges = train(words, num_merges)
    for a, b in merges:
        if a + b not in vocab:
            vocab[a + b] = len(vocab)
    return vocab, merges


LLAMA_DECODER = {"type": "Sequence", "decoders": [
    {"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "},
    {"type": "ByteFallback"}, {"type": "Fuse"},
    {"type": "Strip", "content": " ", "start": 1, "stop": 0}]}


def bos_template(bos="<s>", bos_id=1, eos=None, eos_id=None):
    single = [{"SpecialToken": {"id": bos, "type_id": 0}},
              {"Sequence": {"id": "A", "type_id": 0}}]
    special = {bos: {"id": bos, "ids": [bos_id], "tokens": [bos]}}
    if eos:
        single.append({"SpecialToken": {"id": eos, "type_id": 0}})
        special[eos] = {"id": eos, "ids": [eos_id], "tokens": [eos]}
    pair = single + [{"Sequence": {"id": "B", "type_id": 1}}]
    return {"type": "TemplateProcessing", "single": single, "pair": pair,
            "special_tokens": special}


def base(model, **parts):
    t = {"version": "1.0", "truncation": None, "padding": None,
         "added_tokens": [], "normalizer": None, "pre_tokenizer": None,
         "post_processor": None, "decoder": None, "model": model}
    t.update(parts)
    return t


def bpe_model(vocab, merges, pairs, **kw):
    m = {"type": "BPE", "dropout": None, "unk_token": None,
         "continuing_subword_prefix": None, "end_of_word_suffix": None,
         "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
         "vocab": vocab,
         "merges": [[a, b] for a, b in merges] if pairs
         else ["%s %s" % (a, b) for a, b in merges]}
    m.update(kw)
    return m


def llama_prepend():
    """Llama-2/Mistral-v1: Prepend+Replace normalizer, no pre-tokenizer."""
    vocab, merges = llama_vocab(300)
    n = len(vocab)
    return base(
        bpe_model(vocab, merges, pairs=False, unk_token="<unk>",
                  fuse_unk=True, byte_fallback=True),
        added_tokens=[added(0, "<unk>"), added(1, "<s>"), added(2, "</s>"),
                      added(n, "[INST]", lstrip=True, rstrip=True),
                      added(n + 1, "[/INST]", rstrip=True)],
        normalizer={"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": "\u2581"},
            {"type": "Replace", "pattern": {"String": " "},
             "content": "\u2581"}]},
        post_processor=bos_template(),
        decoder=LLAMA_DECODER)


def llama_metaspace():
    """Llama/Mistral converted with Metaspace(prepend_scheme=first)."""
    vocab, merges = llama_vocab(250)
    n = len(vocab)
    return base(
        bpe_model(vocab, merges, pairs=True, unk_token="<unk>",
                  fuse_unk=True, byte_fallback=True),
        added_tokens=[added(0, "<unk>"), added(1, "<s>"), added(2, "</s>"),
                      added(n, "<mask>", lstrip=True),
                      added(n + 1, "tokenizer", special=False,
                            normalized=True)],
        pre_tokenizer={"type": "Metaspace", "replacement": "\u2581",
                       "prepend_scheme": "first", "split": False},
        post_processor=bos_template(eos="</s>", eos_id=2),
        decoder={"type": "Sequence", "decoders": [
            {"type": "Metaspace", "replacement": "\u2581",
             "prepend_scheme": "first", "split": False},
            {"type": "ByteFallback"}, {"type": "Fuse"}]})


def metaspace_split():
    """Metaspace(prepend_scheme=always, split=true) + its decoder."""
    vocab, merges = llama_vocab(200)
    return base(
        bpe_model(vocab, merges, pairs=False, unk_token="<unk>",
                  byte_fallback=True),
        added_tokens=[added(0, "<unk>"), added(1, "<s>"), added(2, "</s>")],
        pre_tokenizer={"type": "Metaspace", "replacement": "\u2581",
                       "prepend_scheme": "always", "split": True},
        decoder={"type": "Sequence", "decoders": [
            {"type": "ByteFallback"},
            {"type": "Metaspace", "replacement": "\u2581",
             "prepend_scheme": "always", "split": True}]})


QWEN2_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"
               r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")


def qwen2():
    """Qwen2: NFC, Split(regex) + ByteLevel(use_regex=false), [a, b] merges."""
    vocab, merges = bytelevel_vocab(400, prefix_space=False)
    n = len(vocab)
    return base(
        bpe_model(vocab, merges, pairs=True, ignore_merges=False),
        added_tokens=[added(n, "<|endoftext|>"), added(n + 1, "<|im_start|>"),
                      added(n + 2, "<|im_end|>")],
        normalizer={"type": "NFC"},
        pre_tokenizer={"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": QWEN2_REGEX},
             "behavior": "Isolated", "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False,
             "trim_offsets": False, "use_regex": False}]},
        post_processor={"type": "ByteLevel", "add_prefix_space": False,
                        "trim_offsets": False, "use_regex": False},
        decoder={"type": "ByteLevel", "add_prefix_space": False,
                 "trim_offsets": False, "use_regex": False})


def bytelevel_mixed():
    """NFKC+Lowercase+Strip, Digits + ByteLevel(prefix space), bos/eos
    template, added tokens with every flag."""
    vocab, merges = bytelevel_vocab(300, prefix_space=True)
    n = len(vocab)
    vocab["<bos>"] = n
    vocab["<eos>"] = n + 1
    return base(
        bpe_model(vocab, merges, pairs=False, ignore_merges=True),
        added_tokens=[added(n, "<bos>"), added(n + 1, "<eos>"),
                      added(n + 2, "<sep>", lstrip=True, rstrip=True),
                      added(n + 3, "hello world", special=False,
                            normalized=True),
                      added(n + 4, "ony", special=False, single_word=True),
                      added(n + 5, "[CODE]", special=False, normalized=False,
                            rstrip=True)],
        normalizer={"type": "Sequence", "normalizers": [
            {"type": "NFKC"}, {"type": "Lowercase"},
            {"type": "Strip", "strip_left": True, "strip_right": True}]},
        pre_tokenizer={"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": True},
            {"type": "ByteLevel", "add_prefix_space": True,
             "trim_offsets": True, "use_regex": True}]},
        post_processor={"type": "Sequence", "processors": [
            {"type": "ByteLevel", "add_prefix_space": True,
             "trim_offsets": False, "use_regex": True},
            bos_template("<bos>", n, "<eos>", n + 1)]},
        decoder={"type": "ByteLevel", "add_prefix_space": True,
                 "trim_offsets": True, "use_regex": True})


LAYOUTS = {
    "llama-prepend": llama_prepend,
    "llama-metaspace": llama_metaspace,
    "metaspace-split": metaspace_split,
    "qwen2": qwen2,
    "bytelevel-mixed": bytelevel_mixed,
}


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    out = sys.argv[1]
    for name, make in LAYOUTS.items():
        os.makedirs(os.path.join(out, name), exist_ok=True)
        with open(os.path.join(out, name, "tokenizer.json"), "w",
                  encoding="utf-8") as f:
            json.dump(make(), f, ensure_ascii=False, indent=1)
            f.write("\n")


if __name__ == "__main__":
    main()
