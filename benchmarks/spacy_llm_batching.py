"""spacy-llm's NER.v3 on spacy-llama.SpacyLLM.v1: ``nlp.pipe`` against one doc at a time.

    python benchmarks/spacy_llm_batching.py [--limit 32] [--max-new-tokens 64]
                                            [--model-path PATH] [--batch-size 32]
                                            [--json OUT]

The same spacy-llm pipeline (``llm`` with ``spacy.NER.v3``, labels PERSON/ORG/GPE/DATE/MONEY,
model spacy-llama.SpacyLLM.v1 on the embedded SmolLM2, greedy) runs over the docs of
corpus/sample.jsonl twice in one process, after a warm-up doc:
  A  ``nlp(text)`` for each doc: the model is called once per doc, as spacy-llm's own models
     are (they run one prompt per call);
  B  ``nlp.pipe(texts, batch_size=N)``: the backend answers all prompts of the batch in one
     engine call (continuous batching, the shared instruction prefix computed once).
Prints seconds, docs/s, the ratio B/A, and how many docs got the same answer both ways
(greedy; batched float32 arithmetic may differ in the last bits, which can flip a token).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

ROOT = Path(__file__).resolve().parent.parent
LABELS = ["PERSON", "ORG", "GPE", "DATE", "MONEY"]


def build(model_path: Optional[Path], max_new_tokens: int, batch_size: int) -> Any:
    import spacy

    model: Dict[str, Any] = {"@llama_models": "spacy-llama.SmolLM2.v1", "device": "cpu"}
    if model_path is not None:
        model = {"@llama_models": "spacy-llama.HF.v1", "path": str(model_path), "device": "cpu"}
    nlp = spacy.blank("en")
    nlp.add_pipe(
        "llm",
        config={
            "task": {"@llm_tasks": "spacy.NER.v3", "labels": LABELS},
            "model": {
                "@llm_models": "spacy-llama.SpacyLLM.v1",
                "model": model,
                "generation": {"max_new_tokens": max_new_tokens},
                "batch_size": batch_size,
            },
            "save_io": True,
        },
    )
    return nlp


def answers(docs: List[Any]) -> List[str]:
    return [json.dumps(d.user_data["llm_io"]["llm"]["response"]) for d in docs]


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--model-path", type=Path)
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args(argv)
    lines = (ROOT / "corpus" / "sample.jsonl").read_text(encoding="utf-8").splitlines()
    texts = [json.loads(line)["text"] for line in lines][: args.limit]
    nlp = build(args.model_path, args.max_new_tokens, args.batch_size)
    backend = nlp.get_pipe("llm")._model
    nlp("Warm-up: Ada Lovelace lived in London.")  # loads the model and the fused decoder

    runs: List[int] = []
    inner = backend.engine.run

    def counted(requests: Any) -> Any:
        runs.append(len(requests))
        return inner(requests)

    backend.engine.run = counted
    start, cpu = time.perf_counter(), time.process_time()
    one_by_one = [nlp(t) for t in texts]
    seconds_a, cpu_a = time.perf_counter() - start, time.process_time() - cpu
    runs_a, runs[:] = list(runs), []

    start, cpu = time.perf_counter(), time.process_time()
    batched = list(nlp.pipe(texts, batch_size=args.batch_size))
    seconds_b, cpu_b = time.perf_counter() - start, time.process_time() - cpu

    same = sum(a == b for a, b in zip(answers(one_by_one), answers(batched)))
    n = len(texts)
    print(f"docs: {n}, max_new_tokens: {args.max_new_tokens}, model: {backend.model.source}")
    print(f"{'A  nlp(text) per doc:':<28}{seconds_a:7.1f} s  {n / seconds_a:6.2f} docs/s")
    label = f"B  nlp.pipe (batch {args.batch_size}):"
    print(f"{label:<28}{seconds_b:7.1f} s  {n / seconds_b:6.2f} docs/s")
    print(f"engine calls: A {len(runs_a)}, B {len(runs)} (prompts per call: {runs})")
    print(f"B / A speed-up: {seconds_a / seconds_b:.1f}x")
    # CPU seconds of this process (all its threads): on a machine shared with other work the
    # wall-clock ratio moves with their load; the CPU ratio much less.
    print(f"CPU seconds: A {cpu_a:.1f}, B {cpu_b:.1f}; B / A by CPU time: {cpu_a / cpu_b:.1f}x")
    print(f"same answer both ways: {same}/{n}")
    if args.json is not None:
        report = {
            "docs": n, "seconds_a": seconds_a, "seconds_b": seconds_b, "cpu_a": cpu_a,
            "cpu_b": cpu_b, "speedup": seconds_a / seconds_b, "speedup_cpu": cpu_a / cpu_b,
            "engine_calls_a": len(runs_a), "engine_calls_b": len(runs), "same": same,
        }
        args.json.write_text(json.dumps(report, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
