"""CLIP's byte-level BPE tokenizer without torch: what OpenCLIP's `SimpleTokenizer` does for the
models that use it (OpenAI's CLIP and the LAION ViTs), token for token.

The algorithm is OpenAI CLIP's (MIT licence, Copyright (c) 2021 OpenAI), as OpenCLIP ships it; the
merges file is copied next to the exported text tower, so the API needs neither torch nor
OpenCLIP installed. The export checks this tokenizer against OpenCLIP's on a set of texts (long,
blank, non-ASCII) before the text tower is used (`onnx_export.TOKENIZER_PROBES`).
"""

from __future__ import annotations

import functools
import gzip
import html
import itertools
from pathlib import Path

import ftfy
import numpy as np
import regex

MERGES = 49152 - 256 - 2  # the merges OpenAI's vocabulary uses, after the header line
SPECIAL_TOKENS = ("<start_of_text>", "<end_of_text>")


@functools.cache
def _bytes_to_unicode() -> dict[int, str]:
    """Every byte as a printable character: the BPE runs on strings without whitespace or
    control characters."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    codes = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(code) for code in codes), strict=True))


def _clean_lower(text: str) -> str:
    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    return " ".join(text.split()).strip().lower()


class ClipTokenizer:
    """Texts to (N, context_length) int64 token ids: start token, BPE tokens, end token, zeros;
    a text too long is cut and ends with the end token."""

    def __init__(self, merges_path: Path, context_length: int = 77) -> None:
        with gzip.open(merges_path) as handle:
            lines = handle.read().decode("utf-8").split("\n")
        merges = [tuple(line.split()) for line in lines[1 : MERGES + 1]]
        vocab = list(_bytes_to_unicode().values())
        vocab = vocab + [v + "</w>" for v in vocab]
        vocab += ["".join(merge) for merge in merges]
        vocab += SPECIAL_TOKENS
        self.encoder = {token: i for i, token in enumerate(vocab)}
        self.ranks = {merge: i for i, merge in enumerate(merges)}
        self.cache: dict[str, str] = {token: token for token in SPECIAL_TOKENS}
        self.pattern = regex.compile(
            "|".join(SPECIAL_TOKENS)
            + r"""|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
            regex.IGNORECASE,
        )
        self.start, self.end = (self.encoder[token] for token in SPECIAL_TOKENS)
        self.context_length = context_length
        self.vocab_size = len(self.encoder)

    def _bpe(self, token: str) -> str:
        if token in self.cache:
            return self.cache[token]
        word = (*token[:-1], token[-1] + "</w>")
        while len(word) > 1:
            pairs = set(itertools.pairwise(word))
            best = min(pairs, key=lambda pair: self.ranks.get(pair, float("inf")))
            if best not in self.ranks:
                break
            merged: list[str] = []
            i = 0
            while i < len(word):
                if i < len(word) - 1 and (word[i], word[i + 1]) == best:
                    merged.append(word[i] + word[i + 1])
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = tuple(merged)
        joined = " ".join(word)
        self.cache[token] = joined
        return joined

    def encode(self, text: str) -> list[int]:
        byte_encoder = _bytes_to_unicode()
        ids: list[int] = []
        for piece in self.pattern.findall(_clean_lower(text)):
            as_unicode = "".join(byte_encoder[b] for b in piece.encode("utf-8"))
            ids.extend(self.encoder[part] for part in self._bpe(as_unicode).split(" "))
        return ids

    def __call__(self, texts: list[str]) -> np.ndarray:
        result = np.zeros((len(texts), self.context_length), dtype=np.int64)
        for row, text in enumerate(texts):
            ids = [self.start, *self.encode(text), self.end]
            if len(ids) > self.context_length:
                ids = ids[: self.context_length]
                ids[-1] = self.end
            result[row, : len(ids)] = ids
        return result
