"""A real ``CLIPTokenizer`` over the shapes world's own small vocabulary.

CLIP's tokenizer is byte-level BPE: every byte has a token (alone, and with the
end-of-word mark ``</w>``), and merges join them into longer tokens. We keep
all byte tokens, so any text still tokenizes, and add merges until every word
of the shapes world is a single token. The result is a standard
``vocab.json`` + ``merges.txt`` pair that plain ``transformers`` loads.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

from transformers import CLIPTokenizer

BOS, EOS = "<|startoftext|>", "<|endoftext|>"
MAX_LENGTH = 77  # as SD's CLIP text encoders: prompts are chunked at 75 tokens + BOS/EOS


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable character map.

    (transformers 5 no longer exports it from the CLIP module, so it lives here.)
    """
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, chars)))


def _bpe(symbols: list[str], ranks: dict[tuple[str, str], int]) -> list[str]:
    """Apply merges by rank, as CLIP's tokenizer does."""
    while len(symbols) > 1:
        pairs = [(ranks.get(p, None), i) for i, p in enumerate(zip(symbols, symbols[1:]))]
        pairs = [(r, i) for r, i in pairs if r is not None]
        if not pairs:
            break
        _, i = min(pairs)
        symbols = symbols[:i] + [symbols[i] + symbols[i + 1]] + symbols[i + 2 :]
    return symbols


def build_vocab(words: Iterable[str]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Vocabulary and merges that make each word in ``words`` one token.

    A merge added later has a higher rank than every earlier one, so it never
    changes how an earlier, already whole word is split.
    """
    byte_chars = list(bytes_to_unicode().values())
    tokens = byte_chars + [c + "</w>" for c in byte_chars]
    merges: list[tuple[str, str]] = []
    ranks: dict[tuple[str, str], int] = {}
    for word in sorted(set(words)):
        encoded = "".join(bytes_to_unicode()[b] for b in word.encode("utf-8"))
        while True:
            symbols = _bpe(list(encoded[:-1]) + [encoded[-1] + "</w>"], ranks)
            if len(symbols) == 1:
                break
            pair = (symbols[0], symbols[1])
            ranks[pair] = len(merges)
            merges.append(pair)
            tokens.append(pair[0] + pair[1])
    tokens += [BOS, EOS]
    vocab = {tok: i for i, tok in enumerate(dict.fromkeys(tokens))}
    return vocab, merges


def save_tokenizer(words: Iterable[str], directory: str | Path) -> CLIPTokenizer:
    """Write ``vocab.json``/``merges.txt`` and the tokenizer config to ``directory``; return it loaded."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    vocab, merges = build_vocab(words)
    tok = CLIPTokenizer(
        vocab=vocab,
        merges=merges,
        bos_token=BOS, eos_token=EOS, unk_token=EOS, pad_token=EOS,
        model_max_length=MAX_LENGTH,
    )
    tok.save_pretrained(directory)
    write_vocab_files(tok, directory)
    return CLIPTokenizer.from_pretrained(directory)


def write_vocab_files(tok: CLIPTokenizer, directory: str | Path) -> list[str]:
    """Write ``tok``'s ``vocab.json`` and ``merges.txt`` into ``directory``.

    ``save_pretrained`` in transformers 5 writes only ``tokenizer.json``; the pair
    is what CLIP's original tokenizer and older transformers read, so a pipeline
    directory carries both.
    """
    return tok.backend_tokenizer.model.save(str(directory))
