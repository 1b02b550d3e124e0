"""Which of the policy's own generated tokens each PRM step covers.

The PRM reports each scored step as a character span of the completion text, and TRL's completion text is
``tokenizer.decode(completion_ids, skip_special_tokens=True)``. [`token_char_ends`] says, for every generated token,
how many characters of that text are complete once it is emitted (never by re-tokenising the text: the policy's
token ids are decoded), and [`step_token_ends`] turns step spans into the index of each step's last token.

A token that straddles a step boundary belongs to the step whose last character it completes; a token holding part
of a multi-byte character completes nothing until the token that finishes the character; special tokens TRL strips
add no characters.
"""

from __future__ import annotations

import bisect
import codecs
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

REPLACEMENT = "\ufffd"


def token_char_ends(tokenizer: Any, ids: Sequence[int], text: str | None = None) -> list[int] | None:
    """For each token of ``ids``, the length of the decoded text once that token is emitted.

    Byte-level BPE tokenizers (Qwen2, DeepSeek-R1-Distill, GPT-2) are read byte by byte in one pass; any other
    tokenizer is decoded incrementally over a short window per token, as streaming detokenisers do. Both are linear
    in the length. ``text`` is the text the PRM scored; when the decoded tokens do not spell it exactly (a chat
    parser rewrote the completion, say) the answer is ``None``, and no step can be placed on the tokens.

    Example:
    ```python
    >>> from reasonflux_rl.rewards.step_tokens import token_char_ends
    >>> from reasonflux_rl.tiny import build_tokenizer
    >>> tok = build_tokenizer()
    >>> ids = tok.encode("It is 4.\\n\\nSo 4.", add_special_tokens=False) + [tok.eos_token_id]
    >>> ends = token_char_ends(tok, ids)
    >>> len(ends) == len(ids), ends[-1] == ends[-2] == len("It is 4.\\n\\nSo 4.")
    (True, True)

    ```
    """
    ids = list(ids)
    ends = _byte_level_ends(tokenizer, ids)
    if ends is None:
        ends = _incremental_ends(tokenizer, ids)
    decoded_length = ends[-1] if ends else 0
    if text is not None and decoded_length != len(text):
        return None
    if text is not None and tokenizer.decode(ids, skip_special_tokens=True) != text:
        return None
    return ends


def step_token_ends(char_ends: Sequence[int], spans: Sequence[tuple[int, int]]) -> list[int]:
    """The index of the last token of each step: the first token whose text reaches the step's last character.

    Example:
    ```python
    >>> from reasonflux_rl.rewards.step_tokens import step_token_ends
    >>> # Tokens "It", " is", " 4.", "\\n\\n", "So", " 4." and an EOS that adds no text.
    >>> step_token_ends([2, 5, 8, 10, 12, 15, 15], [(0, 8), (10, 15)])
    [2, 5]

    ```
    """
    if not char_ends:
        return []
    last = len(char_ends) - 1
    return [min(bisect.bisect_left(char_ends, end), last) for _, end in spans]


def _byte_level_ends(tokenizer: Any, ids: list[int]) -> list[int] | None:
    """Character ends from the bytes of each token, or ``None`` when the tokenizer is not byte-level BPE."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None or type(backend.decoder).__name__ != "ByteLevel":
        return None
    byte_of = _byte_decoder()
    added = tokenizer.added_tokens_decoder
    # What decode(skip_special_tokens=True) drops: the named special tokens and every added token marked special.
    special = set(tokenizer.all_special_ids) | {i for i, token in added.items() if token.special}
    pieces: list[bytes] = []
    for token_id, token in zip(ids, tokenizer.convert_ids_to_tokens(ids)):
        if token_id in special:
            pieces.append(b"")
        elif token_id in added:
            pieces.append(added[token_id].content.encode())
        elif token is not None and all(c in byte_of for c in token):
            pieces.append(bytes(byte_of[c] for c in token))
        else:
            return None
    return _char_ends_of_bytes(pieces)


def _char_ends_of_bytes(pieces: list[bytes]) -> list[int]:
    # An incremental UTF-8 decoder returns the characters each piece completes; invalid bytes (a completion cut
    # inside a character, say) become U+FFFD as in the tokenizer's own lossy decode.
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    ends, length = [], 0
    for k, piece in enumerate(pieces):
        length += len(decoder.decode(piece, final=k == len(pieces) - 1))
        ends.append(length)
    return ends


def _incremental_ends(tokenizer: Any, ids: list[int]) -> list[int]:
    """Decode a short window per token: the text it adds is the window's text past what the window's prefix gave."""
    ends: list[int] = []
    length = 0
    prefix, read = 0, 0
    for i in range(len(ids)):
        before = tokenizer.decode(ids[prefix:read], skip_special_tokens=True)
        after = tokenizer.decode(ids[prefix : i + 1], skip_special_tokens=True)
        added = after[len(before) :]
        if len(after) > len(before) and not after.endswith(REPLACEMENT):
            length += len(added)
            prefix, read = read, i + 1
            ends.append(length)
        else:
            # A token ending inside a multi-byte character decodes to U+FFFD: the characters before it are complete,
            # the window waits for the token that completes the last one.
            ends.append(length + len(added.rstrip(REPLACEMENT)))
    return ends


@lru_cache(maxsize=1)
def _byte_decoder() -> dict[str, int]:
    """The inverse of GPT-2's byte-to-printable-character table, which every byte-level BPE vocabulary is written in."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    codes = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return {chr(code): byte for byte, code in zip(printable, codes)}
