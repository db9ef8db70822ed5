"""Splice ``<|fim_suffix|>`` into a document's tokens at the cursor.

Why: a session caches ``header + document`` in reading order; a FIM prompt is
``header + prefix + <|fim_suffix|> + suffix + <|fim_middle|>``, where prefix and
suffix are tokenized *separately* (a token never spans the cursor). That is a
token-level edit of the document around the cursor, so the cache patch
machinery (``cache.pie``) turns the document cache into the prompt cache by
encoding a handful of tokens.

Worked example: "x = foo(bar)" with the cursor after "foo(": old tokens
[... " foo", "(bar", ")"] become [... " foo", "(", FS, "bar", ")"]: one kept
prefix, a NewRun ["(", FS, "bar"], then ")" kept and moved by +2.
"""

from __future__ import annotations

from cache.tokens import KeptRun, NewRun, TokenizedText, TokenPatch, _canonical, _trim_against_old, tokenize


def fim_split_patch(document: TokenizedText, cursor: int, fim_suffix_id: int) -> TokenPatch:
    """The patch turning ``document.ids`` into ``tok(prefix) + [FS] + tok(suffix)``.

    The window around the cursor ends at stable points (see ``cache.tokens``),
    so tokens outside it are the same in the split text as in the document.
    """
    text, ids = document.text, document.ids
    assert 0 <= cursor <= len(text), (cursor, len(text))
    lo, a, hi, b = document.window(cursor, cursor)
    window = tokenize(document.tokenizer, text[lo:cursor])[0] + [fim_suffix_id] + tokenize(document.tokenizer, text[cursor:hi])[0]
    runs = _canonical([KeptRun(0, a), NewRun(window), KeptRun(b, len(ids))])
    return TokenPatch(len(ids), _trim_against_old(runs, ids))
