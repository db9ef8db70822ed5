"""Repository context: index a repository, retrieve cross-file chunks, fit them into the prompt.

One file per concept::

    languages.py / languages.toml / queries/*.scm   language knowledge, as data
    walk.py       which files count (.gitignore, vendored, binary, huge)
    symbols.py    definitions and imports from a tree-sitter parse
    chunks.py     syntax-aware chunks
    bm25.py       BM25 with an incrementally updated inverted index
    index.py      RepoIndex: chunks, symbol/module tables, BM25; build_index, update_file
    resolve.py    imports -> files and definitions, per language
    retrieve.py   retrieve(): definitions near the cursor + lexical neighbours, fused
    assemble.py   assemble_repo_prompt(): repo-level FIM segments within a token budget
    store.py      disk (atomic, checksummed) and Redis persistence; load_or_build

This package never imports ``engine`` or ``cache``: token budgets take a
``count_tokens`` function, so the engine's tokenizer stays the engine's.
"""
