"""The ``llama`` factory and the pipe it builds. The factory only unpacks its config."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Literal, Optional, Sequence

import srsly
from confection import Config, ConfigValidationError
from pydantic import ValidationError
from spacy.language import Language
from spacy.pipeline import Pipe
from spacy.tokens import Doc
from spacy.util import minibatch

from .generation.config import GenerationConfig
from .models.base import LlamaModel
from .tasks.base import Task
from .types import AnyResult

# The instruction comes first: the engine computes the prompt prefix every document shares
# (chat template, system prompt, instruction) once, not once per document.
DEFAULT_TEMPLATE = (
    "Summarize the text in one short sentence.\n\n"
    "Text: {{ text }}"
    "{% if ents %}\nNamed entities: "
    "{% for e in ents %}{{ e.text }} ({{ e.label_ }}){{ ', ' if not loop.last }}{% endfor %}"
    "{% endif %}"
)

DEFAULT_CONFIG_STR = """
[llama]
batch_size = 32
prefix_cache = true
prompt_lookup = true

[llama.model]
@llama_models = "spacy-llama.SmolLM2.v1"
device = "auto"
dtype = "auto"

[llama.task]
@llama_tasks = "spacy-llama.Completion.v1"
template = {template}
chat = true
system = null

[llama.generation]
max_new_tokens = 32
temperature = 0.0
top_p = 1.0
top_k = 0
seed = 0
stop = []
echo = false
"""

DEFAULT_CONFIG: Dict[str, Any] = Config().from_str(
    DEFAULT_CONFIG_STR.replace("{template}", srsly.json_dumps(DEFAULT_TEMPLATE))
)["llama"]

ASSIGNS = ["doc._.llama_completion", "doc._.llama_logprobs"]


@Language.factory("llama", assigns=ASSIGNS, default_config=DEFAULT_CONFIG)
def make_llama(
    nlp: Language,
    name: str,
    model: LlamaModel,
    task: Task,
    generation: Dict[str, Any],
    batch_size: int,
    cache: Optional[Any] = None,
    prefix_cache: bool = True,
    prompt_lookup: bool = True,
    quantize: Optional[Literal["int8"]] = None,
) -> LlamaPipe:
    """Run a LLaMA-family model over each Doc and store what the task derives from it."""
    try:
        gen = GenerationConfig(**generation)
    except ValidationError as e:
        errors = [
            {"loc": ["generation", *map(str, err["loc"])], "msg": err["msg"]} for err in e.errors()
        ]
        raise ConfigValidationError(
            config={"generation": generation}, errors=errors, title=f"Config error for '{name}'"
        ) from None
    if batch_size < 1:
        raise ConfigValidationError(
            config={"batch_size": batch_size},
            errors=[{"loc": ["batch_size"], "msg": "must be at least 1"}],
            title=f"Config error for '{name}'",
        )
    return LlamaPipe(
        nlp,
        name,
        model=model,
        task=task,
        generation=gen,
        batch_size=batch_size,
        cache=cache,
        prefix_cache=prefix_cache,
        prompt_lookup=prompt_lookup,
        quantize=quantize,
    )


class LlamaPipe(Pipe):
    def __init__(
        self,
        nlp: Language,
        name: str,
        *,
        model: LlamaModel,
        task: Task,
        generation: GenerationConfig,
        batch_size: int = 32,
        cache: Optional[Any] = None,
        prefix_cache: bool = True,
        prompt_lookup: bool = True,
        quantize: Optional[str] = None,
    ) -> None:
        from .generation.engine import Engine
        from .generation.formatter import ModelPromptFormatter

        self.name = name
        self.model = model
        self.task = task
        self.generation = generation
        self.batch_size = batch_size
        self.engine = Engine(
            model,
            generation,
            batch_size=batch_size,
            cache=cache,
            prefix_cache=prefix_cache,
            prompt_lookup=prompt_lookup,
            quantize=quantize,
        )
        self.cfg: Dict[str, Any] = {"batch_size": batch_size}
        sample = nlp.make_doc("This is a short sample document about Paris.")
        task.initialize(
            ModelPromptFormatter(model, max_new_tokens=generation.max_new_tokens), sample=sample
        )
        if self.engine.remote:
            _check_remote_task(name, task, sample)
        # spaCy's Pipe.score calls this, so `spacy evaluate` / nlp.evaluate score the task.
        self.scorer = getattr(task, "score", None)

    @property
    def extensions(self) -> List[str]:
        return list(self.task.extensions)

    def __call__(self, doc: Doc) -> Doc:
        error_handler = self.get_error_handler()
        try:
            self.set_annotations([doc], self.predict([doc]))
        except Exception as e:
            error_handler(self.name, self, [doc], e)
        return doc

    def pipe(self, stream: Iterable[Doc], *, batch_size: int = 128) -> Iterator[Doc]:
        """Buffer at least ``batch_size`` docs (spaCy's) so the engine can sort them by
        length; the model sees micro-batches of this component's own ``batch_size``."""
        error_handler = self.get_error_handler()
        for docs in minibatch(stream, size=max(batch_size or 1, self.batch_size)):
            try:
                self.set_annotations(docs, self.predict(docs))
            except Exception as e:
                error_handler(self.name, self, docs, e)
            yield from docs

    def predict(self, docs: Sequence[Doc]) -> List[AnyResult]:
        """The task's requests (any number per doc), answered in order by the engine."""
        return self.engine.run_all(self.task.requests(docs))

    def set_annotations(self, docs: Sequence[Doc], results: Sequence[AnyResult]) -> None:
        self.task.assign(docs, results)

    def initialize(
        self,
        get_examples: Optional[Callable[[], Iterable[Any]]] = None,
        *,
        nlp: Optional[Language] = None,
    ) -> None:
        return None  # nothing to train; the model is loaded from the config

    # Weights never go into a pipeline folder: the config says where they come from.
    def to_disk(self, path: Path, *, exclude: Iterable[str] = tuple()) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        srsly.write_json(
            path / "cfg",
            {**self.cfg, "model": self.model.name, "model_fingerprint": self.model.fingerprint},
        )
        self.task.to_disk(path / "task", exclude=exclude)

    def from_disk(self, path: Path, *, exclude: Iterable[str] = tuple()) -> LlamaPipe:
        path = Path(path)
        if (path / "task").exists():
            self.task.from_disk(path / "task", exclude=exclude)
        return self

    def to_bytes(self, *, exclude: Iterable[str] = tuple()) -> bytes:
        return srsly.msgpack_dumps(self.cfg)

    def from_bytes(self, bytes_data: bytes, *, exclude: Iterable[str] = tuple()) -> LlamaPipe:
        return self


def _check_remote_task(name: str, task: Task, sample: Doc) -> None:
    """A server completes text; scoring needs the weights. Say so now, not at batch one."""
    kinds = {type(r).__name__ for r in task.requests([sample])}
    unsupported = kinds - {"GenerationRequest"}
    if unsupported:
        raise ValueError(
            f"Component '{name}': the task {type(task).__name__} scores text "
            f"({', '.join(sorted(unsupported))}), which a server backend cannot do. Use a local "
            "model loader (spacy-llama.HF.v1, GGUF.v1, Meta.v1 or SmolLM2.v1) for this task."
        )
