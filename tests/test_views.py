"""spacy_llama.render: displaCy views of doc.cats, reviewed entities, relations, span groups."""

from __future__ import annotations

import spacy
from spacy.tokens import Doc, Span

import spacy_llama
from spacy_llama.tasks.extensions import install_extensions


def annotated() -> Doc:
    install_extensions(span=["llama_label", "llama_scores"], doc=["llama_relations"])
    nlp = spacy.blank("en")
    doc = nlp("Marie Curie worked in Paris for the Sorbonne.")
    doc.ents = [
        Span(doc, 0, 2, label="PERSON"),
        Span(doc, 4, 5, label="GPE"),
        Span(doc, 7, 8, label="ORG"),
    ]
    doc.ents[0]._.llama_label = "PERSON"
    doc.ents[0]._.llama_scores = {"PERSON": 0.91, "ORG": 0.09}
    doc.ents[2]._.llama_label = "GPE"
    doc.ents[2]._.llama_scores = {"GPE": 0.55, "ORG": 0.45}
    doc.cats = {"science_tech": 0.7, "politics": 0.2, "business": 0.1}
    doc._.llama_relations = [{"head": 0, "tail": 2, "relation": "works_for"}]
    doc.spans["llama_extract"] = [Span(doc, 0, 2, label="people")]
    return doc


def test_render_draws_every_view():
    out = spacy_llama.render(annotated())
    # cats: one bar per label, highest first
    assert out.index("science_tech") < out.index("politics") < out.index("business")
    assert "0.700" in out and "width:70.0%" in out
    # entities: reviewer's label and probability; a relabel shows the change
    assert "PERSON 0.91" in out and "ORG → GPE 0.55" in out
    assert "<th>scores</th>" in out and "ORG 0.45" in out
    # relations: an arc labelled with the relation, entities as words
    assert "works_for" in out and "<svg" in out and "Marie Curie" in out
    # span groups
    assert "doc.spans[&#x27;llama_extract&#x27;]" in out and "people" in out


def test_render_of_a_plain_doc_and_a_page():
    doc = spacy.blank("en")("Nothing here.")
    assert "nothing to show" in spacy_llama.render(doc)
    page = spacy_llama.render(annotated(), page=True)
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")


def test_relations_pointing_nowhere_are_skipped():
    doc = annotated()
    doc._.llama_relations = [{"head": 0, "tail": 9, "relation": "lost"}]
    assert "lost" not in spacy_llama.render(doc)


def test_annotate_html_draws_the_first_docs(tiny_hf, tmp_path):
    from spacy_llama.cli import main

    from .batch.test_evaluate import TEXTCAT, write_config

    cfg = write_config(tmp_path / "textcat.cfg", tiny_hf, TEXTCAT)
    inp = tmp_path / "in.txt"
    inp.write_text("\n".join(f"Document number {i} about sport." for i in range(23)) + "\n")
    page = tmp_path / "views.html"
    out = tmp_path / "out.jsonl"
    assert main(["annotate", str(cfg), str(inp), str(out), "--html", str(page), "--quiet"]) == 0
    html = page.read_text(encoding="utf8")
    assert html.startswith("<!DOCTYPE html>")
    assert html.count('<section class="spacy-llama-doc">') == 20  # a sample, not the run
    assert html.count("<h4>doc.cats</h4>") == 20 and "business" in html
    with_ray = [str(cfg), str(inp), str(tmp_path / "o2.jsonl"), "--html", str(page), "--ray"]
    assert main(["annotate", *with_ray]) == 2  # E834: drawn by the local runner only
