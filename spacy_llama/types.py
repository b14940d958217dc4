"""Plain data passed between tasks and the engine (no torch here: tasks import it)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Literal, Optional, Tuple, Union

FinishReason = Literal["stop", "length", "eos", "empty", "error"]
# doc.user_data key of a doc that failed: a batch run lists it in OUTPUT.failed.jsonl with
# this reason. Tasks set it for a doc whose answer they cannot use (e.g. a constrained
# answer cut off by max_new_tokens) instead of raising for the whole batch.
DOC_ERROR_KEY = "spacy_llama_error"


ConstraintKind = Literal["json_schema", "regex", "choices"]


@dataclass(frozen=True)
class Constraint:
    """What a completion must match, checked token by token while decoding (structured
    output). ``spec`` is text so that requests stay plain, hashable data: the JSON schema as
    JSON text, the regular expression, or the choices as a JSON list of strings."""

    kind: ConstraintKind
    spec: str
    # JSON schemas: the most tokens one free string value may hold (0: no cap); the engine
    # closes a string that reaches it (``grammar.RowGrammar.cap_string``)
    max_string_tokens: int = 0
    # Calibration of closed-set decisions (enum, choices; ``alternatives.py``): content-free
    # probes as (prompt, spec) pairs, decoded once; each value's log-probability there,
    # times ``prior_weight``, is subtracted from its score (PMI, as TextCat.v2 calibrates)
    probes: Tuple[Tuple[str, str], ...] = ()
    prior_weight: float = 1.0


class Prompt(str):
    """A rendered prompt that knows which of its characters are user text (``text_spans``:
    half-open character ranges), e.g. a document inside a chat template. User text is
    always encoded as text: a control string in it (``<|im_end|>``, the EOS string) stays
    text instead of becoming the control token, so a document cannot forge a turn or end
    its prompt (``models/base.py``'s ``encode``). It is a ``str`` everywhere else; slicing
    or concatenating it gives a plain ``str``, which is encoded as before."""

    text_spans: Tuple[Tuple[int, int], ...]

    def __new__(cls, text: str, text_spans: Tuple[Tuple[int, int], ...] = ()) -> Prompt:
        obj = super().__new__(cls, text)
        obj.text_spans = tuple((int(a), int(b)) for a, b in text_spans)
        return obj

    def __reduce__(self) -> Tuple[type, Tuple[str, Tuple[Tuple[int, int], ...]]]:
        return (Prompt, (str(self), self.text_spans))


@dataclass
class GenerationRequest:
    """One prompt to complete. ``prompt`` is fully formatted (chat template applied).
    ``constraint`` (per document, e.g. a schema naming the doc's own substrings) takes the
    place of the generation config's constraint for this request."""

    prompt: str
    add_special_tokens: bool = True
    label: str = ""  # names the document in warnings and errors
    constraint: Optional[Constraint] = None
    # What it asks (tasks/base.py's ``Asked``): which doc of the batch given to
    # ``Task.requests`` (its index; None: a calibration probe, about no doc) and which of
    # that doc's questions (a label, an entity; 0 when a doc has one). Tasks set them;
    # results come back in request order, and the task's layout matches them to docs.
    doc_index: Optional[int] = None
    question: int = 0


@dataclass
class GenerationResult:
    text: str
    token_ids: List[int] = field(default_factory=list)
    logprobs: List[float] = field(default_factory=list)
    finish_reason: FinishReason = "length"
    prompt_tokens: int = 0
    cached: bool = False
    error: Optional[str] = None
    # A constrained answer the token budget cut, closed onto its shortest valid completion:
    # complete and valid, finish_reason "length" (tasks write llama_finish = "closed").
    closed: bool = False
    # Closed sets of alternatives (enum, choices, const) decided as wholes: per decision,
    # {"start": char offset of the value in text, "text": the chosen value's text,
    #  "alternatives": [text, ...], "probs": [p, ...]} (generation/alternatives.py).
    choices: List[Dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict:
        out = {
            "text": self.text,
            "token_ids": list(self.token_ids),
            "logprobs": list(self.logprobs),
            "finish_reason": self.finish_reason,
            "prompt_tokens": self.prompt_tokens,
        }
        if self.error is not None:  # e.g. a constrained answer cut off by max_new_tokens
            out["error"] = self.error
        if self.closed:
            out["closed"] = True
        if self.choices:
            out["choices"] = [dict(c) for c in self.choices]
        return out

    @classmethod
    def from_dict(cls, data: dict, *, cached: bool = False) -> GenerationResult:
        return cls(
            text=data["text"],
            token_ids=list(data["token_ids"]),
            logprobs=list(data["logprobs"]),
            finish_reason=data["finish_reason"],
            prompt_tokens=int(data.get("prompt_tokens", 0)),
            cached=cached,
            error=data.get("error"),
            closed=bool(data.get("closed", False)),
            choices=[dict(c) for c in data.get("choices", [])],
        )


@dataclass
class ScoreRequest:
    """Score each candidate continuation of ``prompt`` (no generation).

    ``prompt`` is fully formatted (chat template applied when the task uses one); every
    candidate is appended to it as text, e.g. ``" sport"``.
    """

    prompt: str
    candidates: List[str]
    add_special_tokens: bool = True
    label: str = ""
    # What it asks (tasks/base.py's ``Asked``): which doc of the batch given to
    # ``Task.requests`` (its index; None: a calibration probe, about no doc) and which of
    # that doc's questions (a label, an entity; 0 when a doc has one). Tasks set them;
    # results come back in request order, and the task's layout matches them to docs.
    doc_index: Optional[int] = None
    question: int = 0


@dataclass
class ScoreResult:
    """Per candidate: summed and mean log-probability of its tokens, and their count."""

    sums: List[float]
    means: List[float]
    n_tokens: List[int]


@dataclass
class TokenLogprobRequest:
    """The log-probability of every token of ``text`` under the model (surprisal)."""

    text: str
    add_special_tokens: bool = True
    label: str = ""
    # Tokens of context per pass and how far each pass moves on; None: the model's context
    # length and half of the window (texts that fit run in one pass either way).
    window: Optional[int] = None
    stride: Optional[int] = None
    # Token ids put before the text as its context (Surprisal.v3's start token where the
    # tokenizer adds no BOS): never scored themselves, so the text's first token is.
    prefix_ids: List[int] = field(default_factory=list)
    # What it asks (tasks/base.py's ``Asked``): which doc of the batch given to
    # ``Task.requests`` (its index; None: a calibration probe, about no doc) and which of
    # that doc's questions (a label, an entity; 0 when a doc has one). Tasks set them;
    # results come back in request order, and the task's layout matches them to docs.
    doc_index: Optional[int] = None
    question: int = 0


@dataclass
class TokenLogprobResult:
    token_ids: List[int]
    offsets: List[Tuple[int, int]]  # character span of each token in the text
    logprobs: List[Optional[float]]  # None where the model had no context (the first token)


AnyRequest = Union[GenerationRequest, ScoreRequest, TokenLogprobRequest]
AnyResult = Union[GenerationResult, ScoreResult, TokenLogprobResult]
