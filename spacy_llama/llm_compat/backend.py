"""``spacy-llama.SpacyLLM.v1``: a model for spacy-llm's ``llm_models`` registry.

spacy-llm's ``llm`` component hands its model one list of prompts per doc (one prompt per
shard) and expects the responses in the same shape. This backend answers every prompt of a
``pipe`` batch in one :meth:`~spacy_llama.generation.engine.Engine.run` call, the path the
``llama`` component takes: continuous batching, the prefix cache (spacy-llm's prompts share
their long instructions), prompt lookup and the response cache.

It is found through the entry-point group ``thinc_llm_models``: spacy-llm creates its
registries with ``spacy.util.registry.create(..., entry_points=True)``, thinc's classmethod,
which reads the group ``thinc_<name>``. Nothing is serialised but the config: the object has
no ``to_bytes``/``to_disk``, so spacy-llm's wrapper saves no model part.
"""

from __future__ import annotations

import importlib.util
import logging
from collections import abc
from typing import Any, Callable, Dict, Iterable, List, Literal, Optional, Union

from ..errors import CompatError, Errors, PromptTooLongError
from ..generation.config import GenerationConfig, generation_config
from ..generation.setup import build_engine
from ..models.base import LanguageModel
from ..types import GenerationRequest

logger = logging.getLogger("spacy_llama")

NAME = "spacy-llama.SpacyLLM.v1"
# spacy-llm's answers are lists and explanations, longer than the component's default of 32.
DEFAULT_GENERATION: Dict[str, Any] = {"max_new_tokens": 256, "temperature": 0.0}
OnOverflow = Literal["error", "truncate"]
ChatSetting = Union[bool, Literal["auto"]]
ELLIPSIS = " ... "


def require_spacy_llm(what: str) -> None:
    """Raise the install command when spacy-llm is missing."""
    if importlib.util.find_spec("spacy_llm") is None:
        raise CompatError(Errors.E740.format(what=what))


class SpacyLLMBackend:
    """Callable as spacy-llm's models are: ``Iterable[Iterable[str]] -> Iterable[Iterable[str]]``.
    The type hints are read by spacy-llm's ``validate_types`` check, so they stay exact."""

    def __init__(
        self,
        model: LanguageModel,
        generation: GenerationConfig,
        *,
        chat: ChatSetting = "auto",
        system: Optional[str] = None,
        batch_size: int = 32,
        cache: Optional[Any] = None,
        prefix_cache: bool = True,
        prompt_lookup: bool = True,
        on_overflow: OnOverflow = "error",
    ) -> None:
        self.model = model
        self.generation = generation
        self.system = system
        self.on_overflow = on_overflow
        self.engine, self._formatter = build_engine(
            model,
            generation,
            batch_size=batch_size,
            cache=cache,
            prefix_cache=prefix_cache,
            prompt_lookup=prompt_lookup,
        )
        self.chat = self._formatter.uses_chat(chat)

    @property
    def context_length(self) -> int:
        """Prompt tokens the model holds, counted by its own tokenizer: its context minus
        the room kept for the answer and what the chat template adds. spacy-llm's sharding
        tasks cut docs to this; with ``spacy-llama.TokenCounter.v1`` as their
        ``n_token_estimator`` they count in the same tokens."""
        overhead = self._formatter.count(self._format("")) if self.chat else 0
        return self._formatter.budget - overhead

    def __call__(self, prompts: Iterable[Iterable[str]]) -> Iterable[Iterable[str]]:
        """All prompts of the batch in one engine call; responses in the prompts' shape."""
        shaped: List[List[str]] = []
        for i, doc_prompts in enumerate(prompts):
            if isinstance(doc_prompts, str) or not isinstance(doc_prompts, abc.Iterable):
                raise CompatError(Errors.E741.format(doc=i, kind=type(doc_prompts).__name__))
            shard_prompts = list(doc_prompts)
            for p in shard_prompts:
                if not isinstance(p, str):
                    raise CompatError(Errors.E741.format(doc=i, kind=type(p).__name__))
            shaped.append(shard_prompts)
        requests = [
            self._request(text, doc=i, shard=j)
            for i, shard_prompts in enumerate(shaped)
            for j, text in enumerate(shard_prompts)
        ]
        results = iter(self.engine.run(requests))
        return [[next(results).text for _ in shard_prompts] for shard_prompts in shaped]

    def _request(self, text: str, *, doc: int, shard: int) -> GenerationRequest:
        req = self._format(text)
        req.label = f"spacy-llm doc {doc} shard {shard}"
        n = self._formatter.count(req)
        budget = self._formatter.budget
        if n <= budget:
            return req
        if self.on_overflow == "error":
            raise PromptTooLongError(
                Errors.E742.format(
                    doc=doc,
                    shard=shard,
                    n=n,
                    source=self.model.source,
                    budget=budget,
                    context=self.model.context_length,
                    max_new=self.generation.max_new_tokens,
                )
            )
        cut = self._truncate(text, n - budget)
        logger.warning(
            "[spacy-llama] %s: the prompt of doc %d (shard %d) was %d tokens, %d fit; its "
            'middle was cut (on_overflow = "truncate").',
            NAME,
            doc,
            shard,
            n,
            budget,
        )
        cut.label = req.label
        return cut

    def _format(self, text: str) -> GenerationRequest:
        return self._formatter.format(text, chat=self.chat, system=self.system)

    def _truncate(self, text: str, excess: int) -> GenerationRequest:
        """Cut the middle of the prompt: spacy-llm's prompts put the instructions first and
        the answer format last, and both must survive."""
        ids = self.model.encode(text, add_special_tokens=False)
        drop = excess + len(self.model.encode(ELLIPSIS, add_special_tokens=False))
        while True:
            keep = max(len(ids) - drop, 0)
            half = keep // 2
            head = ids[: keep - half]
            tail = ids[len(ids) - half :] if half else []
            cut = self.model.decode(head) + ELLIPSIS + self.model.decode(tail)
            req = self._format(cut)
            over = self._formatter.count(req) - self._formatter.budget
            if over <= 0 or keep == 0:
                return req
            drop += over


def token_counter_v1(model: Optional[LanguageModel] = None) -> Callable[[str], int]:
    """``spacy-llama.TokenCounter.v1`` (registry ``llm_misc``): an ``n_token_estimator`` for
    spacy-llm's ``spacy.ShardMapper.v1`` that counts a prompt's tokens with the model's own
    tokenizer (spacy-llm's default counts words, which undercounts). Give it the same model
    block as the backend: the model is loaded once for both."""
    require_spacy_llm("spacy-llama.TokenCounter.v1")
    if model is None:
        from ..models.default import smollm2_model_v1

        model = smollm2_model_v1()
    loaded = model

    def count_tokens(text: str) -> int:
        return loaded.count_tokens(text, add_special_tokens=False)

    return count_tokens


def spacy_llm_v1(
    model: Optional[LanguageModel] = None,
    generation: Dict[str, Any] = {},  # noqa: B006 - read only
    chat: ChatSetting = "auto",
    system: Optional[str] = None,
    batch_size: int = 32,
    cache: Optional[Any] = None,
    prefix_cache: bool = True,
    prompt_lookup: bool = True,
    on_overflow: OnOverflow = "error",
) -> SpacyLLMBackend:
    """A spacy-llm model running on this project's engine. ``model`` is the ``llama``
    component's model block (default: the embedded SmolLM2); ``generation`` its generation
    settings (default max_new_tokens = 256, greedy); ``chat`` whether prompts go through the
    model's chat template ("auto": when it has one). A prompt longer than the context fails
    (``on_overflow = "error"``) or has its middle cut (``"truncate"``); tasks that shard
    never send one when their docs can be cut."""
    require_spacy_llm(NAME)
    title = f"Config error for {NAME}"
    gen = generation_config(generation, title=title, defaults=DEFAULT_GENERATION)
    if batch_size < 1:
        raise CompatError(
            Errors.E743.format(setting="batch_size", value=batch_size, fix="use 1 or more.")
        )
    if on_overflow not in ("error", "truncate"):
        raise CompatError(
            Errors.E743.format(
                setting="on_overflow", value=on_overflow, fix='use "error" or "truncate".'
            )
        )
    if model is None:
        from ..models.default import smollm2_model_v1

        model = smollm2_model_v1()
    return SpacyLLMBackend(
        model,
        gen,
        chat=chat,
        system=system,
        batch_size=batch_size,
        cache=cache,
        prefix_cache=prefix_cache,
        prompt_lookup=prompt_lookup,
        on_overflow=on_overflow,
    )
