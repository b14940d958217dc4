"""What a JSON-schema constraint costs, and whether its outputs are valid.

On corpus/sample.jsonl with the embedded model (SmolLM2-135M-Instruct, float32), the same
chat-template prompts (extract the named entities as JSON) are completed without and with
the schema ``{"entities": [{"label": enum, "text": string}]}`` (at most 4 entities of at most
40 characters), greedy and sampled, at batch 32 (all docs) and batch 1 (the first
``--batch1-docs`` docs). Two tables:

- **validity** (``--max-new-tokens``, default 256: room for the largest answer the schema
  allows): the % of outputs that parse as JSON and validate against the schema (a small
  checker), with tokens/s, docs/s and the grammar's mask time per step.
- **same output lengths** (``--equal-tokens``, default 24): every run is cut at that many
  tokens, so constrained and unconstrained rows decode the same number of steps on the same
  prompts (the "at length" column says how many rows ran to the cut) and the tokens/s ratio
  is the cost of the constraint alone, not of answers of other lengths.

Issue 22 (structured output that always completes) adds two checks:

- **budget sweep** (``--only sweep [--max-string-tokens N]``): the schema
  ``{section: enum of 5, keywords: up to 3 unbounded strings}`` on the sample docs at
  every ``--budgets`` max_new_tokens, greedy and sampled, batch 32: % of outputs that
  parse and validate, % closed (cut by the budget and closed onto the shortest
  completion), E426 failures.
- **enum accuracy** (``--only enum [--split test]``): on corpus/splits/gold_<split>.spacy
  (the test half is never tuned on), TextCat.v2's own prompt answered as JSON
  ``{category: enum of the 4 labels, keywords}``, the enum decided as whole values and
  token by token, against TextCat.v2 scoring the same labels after the same prompt.

``--only speed`` runs only the same-output-lengths table.

    python benchmarks/constrained.py [--limit N] [--batch1-docs 8] [--max-new-tokens 256]
                                     [--equal-tokens 24] [--only speed|sweep|enum]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

LABELS = ["PERSON", "ORG", "GPE", "DATE", "MONEY"]
SCHEMA: Dict[str, Any] = {
    "type": "object",
    "properties": {
        "entities": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "label": {"enum": LABELS},
                    "text": {"type": "string", "maxLength": 40},
                },
                "required": ["label", "text"],
                "additionalProperties": False,
            },
            "maxItems": 4,
        }
    },
    "required": ["entities"],
    "additionalProperties": False,
}
INSTRUCTION = (
    "Extract the named entities of the text as JSON: "
    '{{"entities": [{{"label": "...", "text": "..."}}]}}, with label one of {labels}.\n\n'
    "Text: {text}"
)


def valid(text: str) -> bool:
    """Parses as JSON and matches SCHEMA."""
    try:
        data = json.loads(text)
    except ValueError:
        return False
    if not isinstance(data, dict) or set(data) != {"entities"}:
        return False
    items = data["entities"]
    return (
        isinstance(items, list)
        and len(items) <= 4
        and all(
            isinstance(e, dict)
            and set(e) == {"label", "text"}
            and e["label"] in LABELS
            and isinstance(e["text"], str)
            and len(e["text"]) <= 40
            for e in items
        )
    )


def prompts(model: Any, limit: Optional[int]) -> List[str]:
    lines = (ROOT / "corpus" / "sample.jsonl").read_text(encoding="utf-8").splitlines()
    texts = [json.loads(line)["text"] for line in lines if line.strip()][:limit]
    user = [INSTRUCTION.format(labels=", ".join(LABELS), text=t) for t in texts]
    return [model.apply_chat_template(u, None) for u in user]


def run(
    model: Any, texts: Sequence[str], *, batch: int, temperature: float, schema: bool, max_new: int
) -> Tuple[float, int, List[str], float, int, int]:
    """Seconds, generated tokens, outputs, mask seconds, constrained steps and rows cut at
    max_new of one run."""
    from spacy_llama.generation.config import GenerationConfig
    from spacy_llama.generation.engine import Engine
    from spacy_llama.types import GenerationRequest

    cfg = GenerationConfig(
        max_new_tokens=max_new,
        temperature=temperature,
        top_p=0.95 if temperature else 1.0,
        seed=1,
        json_schema=SCHEMA if schema else None,
    )
    warm = Engine(model, cfg.model_copy(update={"max_new_tokens": 16}), batch_size=batch)
    warm.run([GenerationRequest(texts[0], add_special_tokens=False)])  # compiles the grammar
    engine = Engine(model, cfg, batch_size=batch)
    reqs = [GenerationRequest(t, add_special_tokens=False) for t in texts]
    start = time.perf_counter()
    out = engine.run(reqs)
    seconds = time.perf_counter() - start
    tokens = sum(len(r.token_ids) for r in out)
    cut = sum(r.finish_reason == "length" for r in out)
    mask_s, steps = engine.last_mask_seconds, engine.last_mask_steps
    return seconds, tokens, [r.text for r in out], mask_s, steps, cut


def table(model: Any, texts: List[str], batch1_docs: int, max_new: int) -> None:
    head = f"{'run':30} {'tok/s':>7} {'docs/s':>7} {'ratio':>6} {'mask ms/step':>12}"
    print(head + f" {'mask %':>6} {'at length':>9} {'valid %':>7}")
    for temperature in (0.0, 1.0):
        for batch, docs in ((32, texts), (1, texts[:batch1_docs])):
            base_rate = 0.0
            for schema in (False, True):
                s, n, outs, mask_s, steps, cut = run(
                    model, docs, batch=batch, temperature=temperature, schema=schema,
                    max_new=max_new,
                )  # fmt: skip
                rate = n / s
                base_rate = base_rate or rate
                mode = "greedy" if temperature == 0 else "sampled"
                name = f"{'schema' if schema else 'free'} {mode} batch {batch} ({len(docs)} docs)"
                per_step = f"{mask_s / steps * 1e3:12.2f}" if steps else f"{'-':>12}"
                ok = 100.0 * sum(valid(t) for t in outs) / len(outs)
                print(
                    f"{name:30} {rate:7.1f} {len(docs) / s:7.2f} {rate / base_rate:6.2f} "
                    f"{per_step} {100 * mask_s / s:6.1f} {f'{cut}/{len(docs)}':>9} {ok:7.1f}"
                )


# -- issue 22: outputs that always complete, enums by likelihood --------------------------
SECTIONS = ["world", "business", "sport", "science", "culture"]
PRODUCT_SCHEMA: Dict[str, Any] = {
    "type": "object",
    "properties": {
        "section": {"enum": SECTIONS},
        "keywords": {"type": "array", "items": {"type": "string"}, "maxItems": 3},
    },
    "required": ["section", "keywords"],
    "additionalProperties": False,
}
SECTION_INSTRUCTION = (
    "Give the section of the news text ({sections}) and up to three keywords, as JSON: "
    '{{"section": "...", "keywords": ["..."]}}.\n\nText: {text}'
)


def valid_product(text: str) -> bool:
    import jsonschema

    try:
        jsonschema.validate(json.loads(text), PRODUCT_SCHEMA)
    except (ValueError, jsonschema.ValidationError):
        return False
    return True


def sweep(
    model: Any, limit: Optional[int], budgets: Sequence[int], max_string_tokens: Optional[int]
) -> None:
    """Every budget, greedy and sampled, batch 32: % valid, % closed (cut by the budget and
    closed onto the shortest completion), E426 failures; ``max_string_tokens`` caps the
    keyword strings."""
    from spacy_llama.generation.config import GenerationConfig
    from spacy_llama.generation.engine import Engine
    from spacy_llama.types import GenerationRequest

    lines = (ROOT / "corpus" / "sample.jsonl").read_text(encoding="utf-8").splitlines()
    texts = [json.loads(line)["text"] for line in lines if line.strip()][:limit]
    user = [SECTION_INSTRUCTION.format(sections=", ".join(SECTIONS), text=t) for t in texts]
    reqs = [GenerationRequest(model.apply_chat_template(u, None), add_special_tokens=False)
            for u in user]  # fmt: skip
    print(f"{'max_new_tokens':>14} {'mode':>8} {'valid %':>8} {'closed %':>9} {'E426':>5} {'s':>6}")
    for n in budgets:
        for temperature in (0.0, 1.0):
            cfg = GenerationConfig(
                max_new_tokens=n,
                temperature=temperature,
                seed=1,
                json_schema=PRODUCT_SCHEMA,
                max_string_tokens=max_string_tokens,
            )
            start = time.perf_counter()
            out = Engine(model, cfg, batch_size=32).run(reqs)
            s = time.perf_counter() - start
            ok = 100.0 * sum(valid_product(r.text) for r in out) / len(out)
            closed = 100.0 * sum(r.closed for r in out) / len(out)
            errors = sum(r.error is not None for r in out)
            mode = "greedy" if temperature == 0 else "sampled"
            print(f"{n:14d} {mode:>8} {ok:8.1f} {closed:9.1f} {errors:5d} {s:6.1f}", flush=True)


CATS = ["business", "sport", "science_tech", "politics"]
VERBAL = {"science_tech": "technology"}  # configs/textcat.cfg's verbalizer


def macro_f(pairs: List[Tuple[str, str]]) -> float:
    scores = []
    for c in CATS:
        tp = sum(p == c and g == c for p, g in pairs)
        fp = sum(p == c and g != c for p, g in pairs)
        fn = sum(p != c and g == c for p, g in pairs)
        scores.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    return sum(scores) / len(scores)


def enum_accuracy(split: str, kinds: Sequence[str]) -> None:
    """The enum field of a JSON answer against TextCat.v2 scoring the same labels, with the
    same model and the same prompt (TextCat.v2's own, plain "Category:" prompt), on the gold
    split ``split`` (corpus/splits/gold_<split>.spacy; test is never tuned on). Rows:
    TextCat.v2 summed log-probability (what the enum decision computes, no PMI), TextCat.v2
    at the shipped defaults (PMI over three content-free texts), and the constrained JSON
    answer with the enum decided as a whole (this change) and token by token (before)."""
    import spacy
    from spacy.tokens import DocBin

    from spacy_llama.generation import decode_step
    from spacy_llama.generation.config import GenerationConfig
    from spacy_llama.generation.engine import Engine
    from spacy_llama.types import GenerationRequest

    nlp0 = spacy.blank("en")
    path = ROOT / "corpus" / "splits" / f"gold_{split}.spacy"
    gold = list(DocBin().from_disk(path).get_docs(nlp0.vocab))
    truth = [max(g.cats, key=lambda k: g.cats[k]) for g in gold]
    answers = {c: VERBAL.get(c, c) for c in CATS}
    print(f"{len(gold)} docs of {path.name}")

    def textcat(calibrate: bool) -> Any:
        nlp = spacy.blank("en")
        task = {
            "@llama_tasks": "spacy-llama.TextCat.v2",
            "labels": CATS,
            "exclusive": True,
            "label_score": "sum",
            "calibrate": calibrate,
            "content_free": ["N/A", "", "[MASK]"],
            "chat": False,
            "verbalizers": dict(VERBAL),
        }
        model = {"@llama_models": "spacy-llama.SmolLM2.v1", "device": "cpu", "dtype": "float32"}
        nlp.add_pipe("llama", config={"model": model, "task": task})
        return nlp

    rows = []
    for name, calibrate in (
        ("TextCat.v2 sum, raw", False),
        ("TextCat.v2 sum, PMI (shipped)", True),
    ):
        if "textcat" not in kinds:
            continue
        nlp = textcat(calibrate)
        start = time.perf_counter()
        pred = [max(d.cats, key=lambda k: d.cats[k]) for d in nlp.pipe(g.text for g in gold)]
        rows.append((name, pred, time.perf_counter() - start, 100.0, 0.0))
    pipe = textcat(False).get_pipe("llama")
    prompts = [r for r in pipe.task.requests([nlp0.make_doc(g.text) for g in gold])]
    schema = {
        "type": "object",
        "properties": {
            "category": {"enum": [answers[c] for c in CATS]},
            "keywords": {"type": "array", "items": {"type": "string"}, "maxItems": 3},
        },
        "required": ["category", "keywords"],
        "additionalProperties": False,
    }
    back = {v: k for k, v in answers.items()}
    # choices: TextCat.v2's own candidate texts (" business", ...) as the grammar's closed set
    cands = prompts[0].candidates
    by_cand = {c: CATS[k] for k, c in enumerate(cands)}
    runs = [
        ("JSON enum", GenerationConfig(max_new_tokens=48, json_schema=schema)),
        ("choices", GenerationConfig(max_new_tokens=16, choices=list(cands))),
    ]
    # calibration (Extract.v1's calibrate): TextCat.v2's own content-free prompts as probes
    # (its requests for one doc: one probe per content-free text, then the doc's own)
    probe_prompts = [r.prompt for r in textcat(True).get_pipe("llama").task.requests(
        [nlp0.make_doc(gold[0].text)])][:-1]  # fmt: skip
    original = decode_step.Stepper._decisions
    variants = [(r, w, pmi) for r in runs for w in (True, False) for pmi in (False, True)]
    for (kind, cfg), whole, pmi in variants:
        if kind not in kinds or (pmi and not whole):
            continue
        name = f"{kind}, {'whole values' if whole else 'token by token'}" + (", PMI" if pmi else "")
        if not whole:
            decode_step.Stepper._decisions = lambda self, seqs: {}  # type: ignore[method-assign]
        constraint = cfg.constraint
        if pmi:
            assert constraint is not None
            constraint = dataclasses.replace(
                constraint, probes=tuple((p, constraint.spec) for p in probe_prompts)
            )
        try:
            engine = Engine(pipe.model, cfg, batch_size=32)
            reqs = [GenerationRequest(r.prompt, add_special_tokens=r.add_special_tokens,
                                      constraint=constraint if pmi else None)
                    for r in prompts]  # fmt: skip
            start = time.perf_counter()
            out = engine.run(reqs)
            seconds = time.perf_counter() - start
        finally:
            decode_step.Stepper._decisions = original  # type: ignore[method-assign]
        if kind == "choices":
            pred = [by_cand.get(r.text, "") for r in out]
            ok = 100.0 * sum(r.text in by_cand for r in out) / len(out)
        else:
            pred = [back[json.loads(r.text)["category"]] if valid_json(r.text) else "" for r in out]
            ok = 100.0 * sum(valid_json(r.text) for r in out) / len(out)
        closed = 100.0 * sum(r.closed for r in out) / len(out)
        rows.append((name, pred, seconds, ok, closed))
    print(f"{'run':32} {'accuracy':>8} {'macro F':>8} {'valid %':>8} {'closed %':>8} {'s':>6}")
    for name, pred, seconds, ok, closed in rows:
        acc = 100.0 * sum(p == t for p, t in zip(pred, truth)) / len(truth)
        f = 100.0 * macro_f(list(zip(pred, truth)))
        print(f"{name:32} {acc:8.1f} {f:8.1f} {ok:8.1f} {closed:8.1f} {seconds:6.1f}")


def valid_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--limit", type=int, default=None, help="use only the first N docs")
    ap.add_argument("--batch1-docs", type=int, default=8, help="docs of the batch-1 runs")
    ap.add_argument("--max-new-tokens", type=int, default=256, help="the validity runs")
    ap.add_argument("--equal-tokens", type=int, default=24, help="the same-length runs")
    ap.add_argument("--only", choices=["speed", "sweep", "enum"], default=None)
    ap.add_argument("--budgets", default="16,24,32,64,128,256", help="the sweep's max_new_tokens")
    ap.add_argument("--split", default="test", help="the gold split of the enum check")
    ap.add_argument("--max-string-tokens", type=int, default=None, help="the sweep's cap")
    ap.add_argument("--runs", default="textcat,JSON enum,choices", help="the enum check's rows")
    args = ap.parse_args(argv)
    import torch

    from spacy_llama.models.default import smollm2_model_v1

    if args.only == "enum":
        enum_accuracy(args.split, args.runs.split(","))
        return 0
    model = smollm2_model_v1(dtype="float32")
    if args.only == "sweep":
        print("\n## budget sweep (schema: section enum of 5, up to 3 unbounded keyword strings)")
        sweep(model, args.limit, [int(x) for x in args.budgets.split(",")], args.max_string_tokens)
        return 0
    texts = prompts(model, args.limit)
    print(f"{len(texts)} docs, torch threads {torch.get_num_threads()}")
    if args.only is None:
        print(f"\n## validity (max_new_tokens {args.max_new_tokens})")
        table(model, texts, args.batch1_docs, args.max_new_tokens)
    print(f"\n## same output lengths (every run cut at {args.equal_tokens} tokens)")
    table(model, texts, args.batch1_docs, args.equal_tokens)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
