"""Entity F and textcat macro-F on the gold test half: spacy-llm's tasks on this project's
model, against the same config translated to this project's tasks.

    python benchmarks/spacy_llm_quality.py [--limit N] [--model-path PATH] [--split test|dev]
                                           [--only ner|textcat] [--setups spacy-llm,translated]
                                           [--no-label-words] [--json OUT]

Both setups start from configs/spacy_llm/gold.cfg (spacy-llm's NER.v3 and TextCat.v3 on the
gold labels, with the label definitions of configs/entity_review.cfg and configs/textcat.cfg,
model spacy-llama.SpacyLLM.v1 on the embedded SmolLM2, greedy):
  spacy-llm   the config as it is: spacy-llm's prompts and parsers, our engine;
  translated  ``from-spacy-llm``'s output: NER.v2 (constrained JSON) and TextCat.v3 (scored).
Docs: corpus/splits/gold_test.spacy, the half never tuned on (corpus/README.md); ``--split dev``
is the half translator rules are chosen on (``--no-label-words`` drops any verbalizers the
translated config has, to compare with and without them there). Entity F is
exact-match over PERSON/ORG/GPE/DATE/MONEY (doc.ents); textcat macro-F over the four
exclusive categories, each doc's label being its top-scoring category (spacy-llm gives 1.0
to the one it names and 0.0 to the others; a doc whose answer names none counts as wrong).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

ROOT = Path(__file__).resolve().parent.parent
ENTS = ["PERSON", "ORG", "GPE", "DATE", "MONEY"]
CATS = ["business", "sport", "science_tech", "politics"]
SOURCE = ROOT / "configs" / "spacy_llm" / "gold.cfg"


def load(
    config: Path, model_path: Optional[Path], only: Optional[str] = None, words: bool = True
) -> Any:
    from spacy.util import load_config, load_model_from_config

    cfg = load_config(config)
    if only is not None:  # one component: the other's scores are 0 and not printed
        keep = [n for n in cfg["nlp"]["pipeline"] if only in n]
        cfg["nlp"]["pipeline"] = keep
        cfg["components"] = {n: c for n, c in cfg["components"].items() if n in keep}
    if not words:
        for comp in cfg["components"].values():
            comp.get("task", {}).pop("verbalizers", None)
    for comp in cfg["components"].values():
        if "@llm_models" in comp["model"]:  # the backend's own llama model block
            comp["model"].setdefault("model", {"@llama_models": "spacy-llama.SmolLM2.v1"})
            target = comp["model"]["model"]
        else:
            target = comp["model"]
        if model_path is not None:
            target.clear()
            target.update({"@llama_models": "spacy-llama.HF.v1", "path": str(model_path)})
        target["device"] = "cpu"
    return load_model_from_config(cfg, auto_fill=True)


def score(nlp: Any, gold: List[Any]) -> Dict[str, float]:
    from spacy.scorer import Scorer
    from spacy.training import Example

    start = time.perf_counter()
    preds = list(nlp.pipe([g.text for g in gold], batch_size=64))
    seconds = time.perf_counter() - start
    examples = [Example(p, g) for p, g in zip(preds, gold)]
    ents = Scorer.score_spans(
        examples, "ents", getter=lambda d, a: [e for e in d.ents if e.label_ in ENTS]
    )
    for p in preds:  # the top category only (ties and no answer: no category, wrong)
        top = max(CATS, key=lambda c: p.cats.get(c, 0.0))
        best = p.cats.get(top, 0.0)
        named = best > 0 and sum(p.cats.get(c, 0.0) == best for c in CATS) == 1
        p.cats = {c: float(named and c == top) for c in CATS}
    cats = Scorer.score_cats(examples, "cats", labels=CATS, multi_label=False, positive_label=None)
    return {
        "ents_f": ents["ents_f"] or 0.0,
        "ents_p": ents["ents_p"] or 0.0,
        "ents_r": ents["ents_r"] or 0.0,
        "cats_macro_f": cats["cats_macro_f"],
        "seconds": seconds,
    }


def main(argv: Optional[List[str]] = None) -> int:
    import spacy
    from spacy.tokens import DocBin

    from spacy_llama.cli import main as cli

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=int)
    parser.add_argument("--model-path", type=Path)
    parser.add_argument("--split", choices=["test", "dev"], default="test")
    parser.add_argument("--only", choices=["ner", "textcat"])
    parser.add_argument("--setups", default="spacy-llm,translated")
    parser.add_argument("--no-label-words", action="store_true")
    parser.add_argument("--json", type=Path, help="also write the scores here")
    args = parser.parse_args(argv)
    vocab = spacy.blank("en").vocab
    bin_path = ROOT / "corpus" / "splits" / f"gold_{args.split}.spacy"
    gold = list(DocBin().from_disk(bin_path).get_docs(vocab))[: args.limit]
    rows: Dict[str, Dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        translated = Path(tmp) / "translated.cfg"
        assert cli(["from-spacy-llm", str(SOURCE), str(translated)]) == 0
        for name, config in (("spacy-llm", SOURCE), ("translated", translated)):
            if name in args.setups.split(","):
                nlp = load(config, args.model_path, args.only, not args.no_label_words)
                rows[name] = score(nlp, gold)
    if args.json is not None:
        report = {"split": args.split, "docs": len(gold), "only": args.only, "rows": rows}
        args.json.write_text(json.dumps(report, indent=2), encoding="utf-8")
    print(f"\ngold {args.split} half: {len(gold)} docs ({bin_path.relative_to(ROOT)})")
    print(f"{'setup':<12}{'ents P':>8}{'ents R':>8}{'ents F':>8}{'cats macro-F':>14}{'seconds':>9}")
    for name, r in rows.items():
        print(
            f"{name:<12}{100 * r['ents_p']:8.1f}{100 * r['ents_r']:8.1f}{100 * r['ents_f']:8.1f}"
            f"{100 * r['cats_macro_f']:14.1f}{r['seconds']:9.1f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
