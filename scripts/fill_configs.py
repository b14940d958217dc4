"""Fill the shipped configs as ``spacy init fill-config`` does, keeping their comments.

``spacy debug config`` and ``spacy debug data`` validate a config without filling it, so the
configs in ``configs/`` are shipped full: every setting of spaCy's [nlp], [training],
[initialize] and [corpora] blocks and every default of each registered function is written
out. ``spacy init fill-config`` drops comments; this script fills each file the same way
(``spacy.cli.init_config.fill_config``) and puts each comment back in front of the section
or setting it stood before. Running it on a filled config changes nothing, so after editing
a config (or merging an edit) run it again:

    python scripts/fill_configs.py               # every configs/*.cfg
    python scripts/fill_configs.py configs/x.cfg  # some
    python scripts/fill_configs.py --check        # exit 1 when a config is not filled

Comments stay attached to the next line that is a section header or a ``key = value``
setting; comments after the last setting stay at the end. A config with no [corpora] block
gets spaCy's train/dev corpora on ``${paths.train}``/``${paths.dev}``, so that
``spacy debug data CONFIG --paths.train T --paths.dev D`` runs on it.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Optional, Tuple

ROOT = Path(__file__).resolve().parents[1]
SECTION = re.compile(r"^\[([^\]]+)\]\s*$")
SETTING = re.compile(r"^([^\s#=][^=]*?)\s*=")
# [paths] of a server config (configs/server.cfg)
SERVER_LINE = re.compile(r"^server = .*$", re.MULTILINE)
TOKENIZER_LINE = re.compile(r"^tokenizer = .*$", re.MULTILINE)
Anchor = Tuple[str, ...]

CORPORA = """
[corpora.train]
@readers = "spacy.Corpus.v1"
path = ${paths.train}

[corpora.dev]
@readers = "spacy.Corpus.v1"
path = ${paths.dev}
"""


def comments_by_anchor(text: str) -> Tuple[Dict[Anchor, List[str]], List[str]]:
    """Each run of comment lines, keyed by the line it precedes: ("header",) for the
    file's opening comments, ("section", name) or ("setting", section, key); and the
    comments after the last setting."""
    found: Dict[Anchor, List[str]] = {}
    pending: List[str] = []
    section: Optional[str] = None
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            pending.append(stripped)
            continue
        if not stripped:
            if section is None and pending:  # the header ends at the first blank line
                found.setdefault(("header",), []).extend(pending)
                pending = []
            elif pending and pending[-1]:  # two comment runs stay apart
                pending.append("")
            continue
        match = SECTION.match(stripped)
        if match:
            section = match.group(1)
            anchor: Anchor = ("section", section)
        else:
            key = SETTING.match(line)
            if key is None or section is None:  # a continued value
                continue
            anchor = ("setting", section, key.group(1).strip())
        while pending and not pending[-1]:
            pending.pop()
        if pending:
            found.setdefault(anchor, []).extend(pending)
            pending = []
    return found, pending if any(pending) else []


def with_comments(filled: str, original: str) -> str:
    found, trailing = comments_by_anchor(original)
    out: List[str] = []
    header = found.pop(("header",), [])
    if header:
        out += header + [""]
    section: Optional[str] = None
    for line in filled.splitlines():
        match = SECTION.match(line.strip())
        if match:
            section = match.group(1)
            out += found.pop(("section", section), [])
        else:
            key = SETTING.match(line)
            if key is not None and section is not None:
                out += found.pop(("setting", section, key.group(1).strip()), [])
        out.append(line)
    leftover = [c for block in found.values() for c in block]  # a setting that was dropped
    tail = leftover + trailing
    if tail:
        out += [""] + tail
    return "\n".join(out).rstrip("\n") + "\n"


def fill(path: Path) -> str:
    """The filled text of ``path`` (its comments kept)."""
    from spacy.util import load_config

    original = path.read_text(encoding="utf8")
    text = original
    if not load_config(path, interpolate=False).get("corpora"):
        text += "\n[corpora]\n" + CORPORA
    server = SERVER_LINE.search(text)
    tokenizer = TOKENIZER_LINE.search(text)
    if server is None or tokenizer is None:
        return with_comments(fill_text(path, text), original)
    # A server config builds its model by asking the server (and renders the chat template
    # with a local tokenizer): fill it against stand-ins (the tests' scripted server, the
    # default model's GGUF) and put the configured values back.
    sys.path.insert(0, str(ROOT))
    from spacy_llama.models.default import smollm2_gguf_path
    from tests.fixtures.fake_server import FakeServer

    with FakeServer() as fake:
        stand_ins = {
            server.group(0): f"server = {json.dumps(fake.url)}",
            tokenizer.group(0): f"tokenizer = {json.dumps(str(smollm2_gguf_path()))}",
        }
        for line, stand_in in stand_ins.items():
            text = text.replace(line, stand_in, 1)
        filled = fill_text(path, text)
    for line, stand_in in stand_ins.items():
        filled = filled.replace(stand_in, line, 1)
    return with_comments(filled, original)


def fill_text(path: Path, text: str) -> str:
    """What ``spacy init fill-config`` writes for a config of this text."""
    from spacy.cli.init_config import fill_config

    with tempfile.TemporaryDirectory() as tmp:  # relative paths in a config are the cwd's
        source, written = Path(tmp) / path.name, Path(tmp) / f"filled-{path.name}"
        source.write_text(text, encoding="utf8")
        fill_config(written, source, silent=True)
        return written.read_text(encoding="utf8")


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("configs", nargs="*", type=Path)
    parser.add_argument("--check", action="store_true", help="only report configs not filled")
    args = parser.parse_args(argv)
    paths = args.configs or sorted((ROOT / "configs").glob("*.cfg"))
    stale = []
    for path in paths:
        text = fill(path)
        if text != path.read_text(encoding="utf8"):
            stale.append(path)
            if not args.check:
                path.write_text(text, encoding="utf8")
        print(f"{'stale' if args.check and path in stale else 'ok'}: {path}", file=sys.stderr)
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
