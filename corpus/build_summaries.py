"""A TINY hand-written summary set, only to run configs/train_summary.cfg end to end (it is
not a benchmark: 8 train / 4 dev docs). corpus/summaries_tiny.jsonl holds, per gold doc id,
a one-sentence summary written by hand for this project and the split it goes to (the doc's
own gold split: train or dev, never test). Writes corpus/splits/summary_{train,dev}.spacy:
the gold docs with ``doc._.llama_summary`` set (DocBin with store_user_data=True).

    python corpus/build_summaries.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Dict, List

import spacy
from spacy.tokens import Doc, DocBin

HERE = Path(__file__).resolve().parent
ATTR = "llama_summary"


def build(out_dir: Path = HERE / "splits") -> Dict[str, int]:
    if not Doc.has_extension(ATTR):
        Doc.set_extension(ATTR, default=None)
    nlp = spacy.blank("en")
    rows = [json.loads(line) for line in (HERE / "summaries_tiny.jsonl").read_text().splitlines()]
    counts = {}
    for split in ("train", "dev"):
        gold = {
            d.user_data["spacy_llama_id"]: d
            for d in DocBin().from_disk(HERE / "splits" / f"gold_{split}.spacy").get_docs(nlp.vocab)
        }
        docs: List[Doc] = []
        for row in rows:
            if row["split"] != split:
                continue
            doc = gold[row["id"]]  # KeyError: the id is not in that gold split
            doc._.set(ATTR, row["summary"])
            docs.append(doc)
        DocBin(docs=docs, store_user_data=True).to_disk(out_dir / f"summary_{split}.spacy")
        counts[split] = len(docs)
    return counts


if __name__ == "__main__":
    print(build())
    sys.exit(0)
