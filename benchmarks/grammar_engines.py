"""Which grammar engine for constrained decoding: compile time and per-step mask cost.

With the embedded model's tokenizer (SmolLM2, 49152 tokens) and the entity-list schema
``{"entities": [{"label": enum, "text": string}]}``, for each installed engine (xgrammar,
llguidance, outlines-core):
  tokenizer   building the engine's view of the vocabulary (once per tokenizer)
  compile     compiling the schema against it (once per schema: the engine caches it)
  mask b=1    filling one row's token mask, per decode step (mean over a valid answer)
  mask b=32   filling 32 rows' masks (32 independent matchers), per decode step
  accept      advancing one matcher by one token
Every engine walks the same valid answer, token by token, so the masks are taken in the
same grammar states. llguidance runs through ``spacy_llama.generation.grammar`` (the
engine's own vocabulary view and batched fill); the others through their own Python APIs.
Engines that are not installed are reported as such.

Measured before choosing (all three installed; 2 shared cores, AVX-512; medians of noisy
runs): tokenizer / compile ms, mask us at b=1 / b=32, accept us
  xgrammar       150-530 /  6-17, 3-54 /  70-265, 1.4-3.3   (pulls in triton: 1 GB)
  llguidance     450-1180 / 2-13, 23-65 / 300-380, 3.2-7.1  (3 MB, no dependencies)
  outlines-core  430-950 / 66-400, 35-45 / 560-610, 185

    python benchmarks/grammar_engines.py [--rows 32] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SCHEMA = {
    "type": "object",
    "properties": {
        "entities": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "label": {"enum": ["PERSON", "ORG", "GPE", "DATE", "MONEY"]},
                    "text": {"type": "string"},
                },
                "required": ["label", "text"],
                "additionalProperties": False,
            },
        }
    },
    "required": ["entities"],
    "additionalProperties": False,
}
ANSWER = (
    '{"entities": [{"label": "ORG", "text": "Hollis & Grant"}, {"label": "GPE", "text": '
    '"British"}, {"label": "ORG", "text": "Veldhoven Systems"}, {"label": "MONEY", "text": '
    '"€640 million"}, {"label": "PERSON", "text": "Claire Hollis"}]}'
)


def smollm2_tokenizer() -> Any:
    from spacy_llama.models.default import smollm2_model_v1

    return smollm2_model_v1().tokenizer


class Runner:
    """One engine: ``new()`` makes a matcher for the compiled schema; ``fill(ms, mask)`` fills
    the masks of matchers ``ms``; ``accept(m, tok)`` advances one."""

    new: Callable[[], Any]
    fill: Callable[[List[Any], torch.Tensor], None]
    accept: Callable[[Any, int], None]
    mask: Callable[[int], torch.Tensor]
    tokenizer_s: float = 0.0
    compile_s: float = 0.0


def xgrammar_runner(tok: Any, vocab: int, schema: str) -> Runner:
    import xgrammar as xgr

    r = Runner()
    t = time.perf_counter()
    info = xgr.TokenizerInfo.from_huggingface(tok, vocab_size=vocab)
    r.tokenizer_s = time.perf_counter() - t
    t = time.perf_counter()
    compiled = xgr.GrammarCompiler(info, cache_enabled=False).compile_json_schema(
        schema, any_whitespace=False
    )
    r.compile_s = time.perf_counter() - t
    r.new = lambda: xgr.GrammarMatcher(compiled)
    r.mask = lambda n: xgr.allocate_token_bitmask(n, vocab)

    def fill(ms: List[Any], mask: torch.Tensor) -> None:
        for i, m in enumerate(ms):
            m.fill_next_token_bitmask(mask, i)

    r.fill = fill
    r.accept = lambda m, t: m.accept_token(t)
    return r


def llguidance_runner(tok: Any, vocab: int, schema: str) -> Runner:
    """Through spacy_llama's grammar module (the engine's own code path: its tokenizer
    view, masks on llguidance's threads for several rows)."""
    from spacy_llama.generation import grammar as G
    from spacy_llama.types import Constraint

    r = Runner()
    t = time.perf_counter()
    compiler = G.GrammarCompiler(tok, vocab, [tok.eos_token_id])
    r.tokenizer_s = time.perf_counter() - t
    t = time.perf_counter()
    compiled = compiler.compile(Constraint("json_schema", schema))
    r.compile_s = time.perf_counter() - t
    r.new = compiled.start
    r.mask = lambda n: G.bitmask(n, vocab)
    r.fill = lambda ms, mask: G.fill_rows(ms, mask)
    r.accept = lambda m, t: m.accept(t)
    return r


def outlines_runner(tok: Any, vocab: int, schema: str) -> Runner:
    import outlines_core
    from outlines_core.json_schema import build_regex_from_schema

    r = Runner()
    t = time.perf_counter()
    eos = tok.eos_token_id
    from transformers.models.gpt2.tokenization_gpt2 import bytes_to_unicode

    to_byte = {c: b for b, c in bytes_to_unicode().items()}
    tokens: Dict[Any, List[int]] = {}
    for text, tid in tok.get_vocab().items():
        if tid != eos and tid not in tok.all_special_ids:  # byte-level pieces as raw bytes
            tokens.setdefault(bytes(to_byte[c] for c in text), []).append(tid)
    voc = outlines_core.Vocabulary(eos, tokens)
    r.tokenizer_s = time.perf_counter() - t
    t = time.perf_counter()
    index = outlines_core.Index(build_regex_from_schema(schema, r"( )?"), voc)
    r.compile_s = time.perf_counter() - t
    words = (vocab + 31) // 32
    r.new = lambda: outlines_core.Guide(index)
    r.mask = lambda n: torch.zeros((n, words), dtype=torch.int32)

    def fill(ms: List[Any], mask: torch.Tensor) -> None:
        for i, m in enumerate(ms):
            row = mask[i]
            m.write_mask_into(row.data_ptr(), row.numel(), row.element_size())

    r.fill = fill
    r.accept = lambda m, t: m.advance(t)
    return r


ENGINES = {
    "xgrammar": ("xgrammar", xgrammar_runner),
    "llguidance": ("llguidance", llguidance_runner),
    "outlines-core": ("outlines_core", outlines_runner),
}


def walk(runner: Runner, answer: Sequence[int], rows: int) -> Dict[str, float]:
    """Walk ``answer`` with ``rows`` matchers; mean seconds per step of each operation."""
    one, many = runner.new(), [runner.new() for _ in range(rows)]
    m1, mn = runner.mask(1), runner.mask(rows)
    fill1 = filln = acc = 0.0
    for tid in answer:
        t = time.perf_counter()
        runner.fill([one], m1)
        fill1 += time.perf_counter() - t
        if not bool((m1[0, tid // 32] >> (tid % 32)) & 1):
            raise RuntimeError(f"the grammar forbids token {tid} of the answer")
        t = time.perf_counter()
        runner.fill(many, mn)
        filln += time.perf_counter() - t
        t = time.perf_counter()
        runner.accept(one, tid)
        acc += time.perf_counter() - t
        for m in many:
            runner.accept(m, tid)
    n = len(answer)
    return {"fill1": fill1 / n, "filln": filln / n, "accept": acc / n}


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=32, help="rows of the batched mask")
    ap.add_argument("--repeat", type=int, default=3, help="walks per engine (best is kept)")
    args = ap.parse_args(argv)
    import importlib.util

    tok = smollm2_tokenizer()
    vocab = len(tok)
    answer = tok(ANSWER, add_special_tokens=False)["input_ids"]
    schema = json.dumps(SCHEMA)
    print(f"vocabulary {vocab} tokens; answer {len(answer)} tokens; torch threads "
          f"{torch.get_num_threads()}")  # fmt: skip
    head = f"{'engine':14} {'tokenizer ms':>12} {'compile ms':>10} {'mask b=1 us':>11} "
    print(head + f"{f'mask b={args.rows} us':>13} {'accept us':>9}")
    for name, (module, build) in ENGINES.items():
        if importlib.util.find_spec(module) is None:
            print(f"{name:14} not installed")
            continue
        runner = build(tok, vocab, schema)
        best = min(
            (walk(runner, answer, args.rows) for _ in range(args.repeat)),
            key=lambda r: r["filln"],
        )
        print(
            f"{name:14} {runner.tokenizer_s * 1e3:12.0f} {runner.compile_s * 1e3:10.1f} "
            f"{best['fill1'] * 1e6:11.0f} {best['filln'] * 1e6:13.0f} {best['accept'] * 1e6:9.1f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
