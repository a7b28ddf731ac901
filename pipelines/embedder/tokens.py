"""Token counts for the chunker: the Rust tokenizer without padding, truncation or specials."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def token_counter(tokenizer: Any) -> Callable[[str], int]:
    """Counts tokens without [CLS]/[SEP] and without truncation.

    `tokenizer` is a `tokenizers.Tokenizer` or a Hugging Face tokenizer. A fast one is
    counted by a copy of its Rust tokenizer: the chunker calls this a lot, and the Python
    tokenizer wrapper costs more than the tokenization itself.
    """
    from tokenizers import Tokenizer

    if isinstance(tokenizer, Tokenizer):
        rust = tokenizer
    elif getattr(tokenizer, "is_fast", False):
        rust = tokenizer.backend_tokenizer
    else:
        slow = tokenizer
        return lambda text: len(slow(text, add_special_tokens=False)["input_ids"])
    counter = Tokenizer.from_str(rust.to_str())
    counter.no_padding()
    counter.no_truncation()
    return lambda text: len(counter.encode(text, add_special_tokens=False))
