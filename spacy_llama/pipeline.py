"""The ``llama`` factory and the pipe it builds. The factory only unpacks its config."""

from __future__ import annotations

import dataclasses
import inspect
import tempfile
from pathlib import Path
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Dict,
    Iterable,
    Iterator,
    List,
    Literal,
    Optional,
    Sequence,
    Tuple,
)

import srsly
from confection import Config, ConfigValidationError
from spacy import util
from spacy.language import Language
from spacy.pipeline import Pipe
from spacy.tokens import Doc
from spacy.training import Example
from spacy.util import minibatch

from . import scorers  # noqa: F401  (registers spacy-llama.task_scorer.v1)
from .errors import BackendError, Errors, FewShotError, PromptTooLongError, TrainingError
from .generation.config import GenerationConfig, generation_config
from .models.base import LanguageModel
from .models.default import package_requirements
from .tasks.base import NamesLabels, TakesLabelsFromData, Task, needs_labels
from .tasks.completion import SUMMARY_TEMPLATE
from .tasks.extensions import task_assigns
from .training.settings import LoRASettings  # registers spacy-llama.LoRA.v1
from .types import AnyResult, GenerationRequest

if TYPE_CHECKING:  # pragma: no cover
    from thinc.api import Optimizer

    from .generation.response_cache import ResponseCache
    from .generation.stats import EngineStats
    from .training.adapters import Adapter

DEFAULT_TEMPLATE = SUMMARY_TEMPLATE  # tasks/completion.py: the instruction comes first

DEFAULT_CONFIG_STR = """
[llama]
batch_size = 32
prefix_cache = true
prompt_lookup = true

[llama.scorer]
@scorers = "spacy-llama.task_scorer.v1"

[llama.model]
@llama_models = "spacy-llama.SmolLM2.v1"
device = "auto"
dtype = "auto"

[llama.task]
@llama_tasks = "spacy-llama.Completion.v1"
template = {template}
chat = "auto"
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
    model: LanguageModel,
    task: Task,
    generation: Dict[str, Any],
    batch_size: int,
    cache: Optional[Any] = None,
    prefix_cache: bool = True,
    prompt_lookup: bool = True,
    quantize: Optional[Literal["int8"]] = None,
    scorer: Optional[Callable[..., Dict[str, Any]]] = None,
    adapter: Optional[LoRASettings] = None,
) -> LlamaPipe:
    """Run a LLaMA-family model over each Doc and store what the task derives from it.
    With an ``adapter`` block the component is trainable (``spacy train``): LoRA adapters
    on its own copy of the model."""
    from .models.threads import configure_threads

    configure_threads()  # once per process: the cores it may use, or SPACY_LLAMA_THREADS
    gen = generation_config(generation, title=f"Config error for '{name}'")
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
        scorer=scorer,
        adapter=adapter,
    )


# A Pipe, not a TrainablePipe: TrainablePipe's methods take ``self.model`` for a thinc Model
# that owns the weights and is saved with the pipeline (to_disk, finish_update, use_params,
# create_optimizer); here the weights come from the config and are never saved, and training
# is a torch LoRA adapter, off without an ``adapter`` block. The contract spaCy's training
# checks (spacy.ty.TrainableComponent and InitializableComponent: update, finish_update,
# is_trainable, initialize; Language.use_params: use_params) is implemented below instead.
class LlamaPipe(Pipe):
    def __init__(
        self,
        nlp: Language,
        name: str,
        *,
        model: LanguageModel,
        task: Task,
        generation: GenerationConfig,
        batch_size: int = 32,
        cache: Optional[Any] = None,
        prefix_cache: bool = True,
        prompt_lookup: bool = True,
        quantize: Optional[str] = None,
        scorer: Optional[Callable[..., Dict[str, Any]]] = None,
        adapter: Optional[LoRASettings] = None,
    ) -> None:
        from .generation.setup import build_engine

        self._pipe_metas = nlp._pipe_meta  # see ``name``: this component's own meta there
        self.adapter: Optional[Adapter] = None
        if adapter is not None:
            from .training.adapters import build_adapter

            self.adapter = build_adapter(name, model, task, adapter, quantize)
            model = self.adapter.model  # its own copy, with the adapters merged in
        self.name = name
        self.model = model
        self.task = task
        self.generation = generation
        self.batch_size = batch_size
        self.engine, self._formatter = build_engine(
            model,
            generation,
            batch_size=batch_size,
            cache=cache,
            prefix_cache=prefix_cache,
            prompt_lookup=prompt_lookup,
            quantize=quantize,
        )
        self.cfg: Dict[str, Any] = {"batch_size": batch_size}
        _add_requirements(nlp, package_requirements(model))
        sample = nlp.make_doc("This is a short sample document about Paris.")
        self._sample = sample
        if needs_labels(task):  # labels = []: from the training data, in initialize
            if self.adapter is None:
                raise FewShotError(
                    Errors.E530.format(name=name, task=type(task).__name__, example=_example(task))
                )
        else:
            task.initialize(self._formatter, sample=sample)
            # a per-doc schema that can never fit: E650 now, measured with the local grammar
            # (a server runs its own and is checked as each request is sent)
            if self.engine.answers_scoring:
                self.engine.check_budget(
                    _sample_constraints(task, sample), where=f" of component '{name}'"
                )
        if not self.engine.answers_scoring:
            _check_scoring_task(name, task, sample)
        # Pipe.score calls this, so `spacy evaluate` / nlp.evaluate score the task.
        self.scorer = scorer

    # spaCy keeps one meta per factory, and ``analyze_pipes`` shows its ``assigns``: the
    # same list (the Completion task's) for every task. Once add_pipe has stored the
    # factory's meta under this component's name, it names the component
    # (Language._link_components sets ``name``), and the component puts a copy with its
    # task's ``assigns`` in its place.
    @property  # type: ignore[override]
    def name(self) -> str:
        return getattr(self, "_name", "")

    @name.setter
    def name(self, value: str) -> None:
        self._name = value
        metas: Optional[Dict[str, Any]] = getattr(self, "_pipe_metas", None)
        meta = metas.get(value) if metas is not None else None
        if metas is not None and meta is not None and meta.factory == "llama":
            if "task" in vars(self):
                metas[value] = dataclasses.replace(meta, assigns=self.assigns)

    @property
    def labels(self) -> Tuple[str, ...]:
        """The labels the task can assign (spaCy writes them to meta.json): TextCat's
        categories, NER's and EntityReview's entity labels, REL's relations; () for the
        others."""
        return tuple(self.task.label_names) if isinstance(self.task, NamesLabels) else ()

    @property
    def extensions(self) -> List[str]:
        return list(self.task.extensions)

    @property
    def assigns(self) -> List[str]:
        """What this component writes, in spaCy's notation (``doc._.x``, ``span._.x``,
        ``token._.x``, ``doc.cats``...): the task's ``assigns``, or its ``extensions`` as Doc
        extensions."""
        return task_assigns(self.task)

    def __call__(self, doc: Doc) -> Doc:
        error_handler = self.get_error_handler()
        try:
            self.set_annotations([doc], self.predict([doc]))
        except Exception as e:
            error_handler(self.name, self, [doc], e)
        return doc

    def pipe(self, stream: Iterable[Doc], *, batch_size: int = 128) -> Iterator[Doc]:
        """Take ``batch_size`` docs (spaCy's) at a time, so the engine can sort them by length
        (the model sees micro-batches of this component's own ``batch_size``), and yield
        them when done: ``nlp.pipe(..., batch_size=2)`` hands docs on every 2, which is
        what lets ``annotate --batch-size 2`` write every 2 docs."""
        error_handler = self.get_error_handler()
        for docs in minibatch(stream, size=batch_size or self.batch_size):
            try:
                self.set_annotations(docs, self.predict(docs))
            except Exception as e:
                error_handler(self.name, self, docs, e)
            yield from docs

    def predict(self, docs: Sequence[Doc]) -> List[AnyResult]:
        """The task's requests (any number per doc), answered in order by the engine."""
        if needs_labels(self.task):
            raise TrainingError(Errors.E531.format(name=self.name, task=type(self.task).__name__))
        self._sync_adapter()
        return self.engine.run_all(self.task.requests(docs))

    def set_annotations(self, docs: Sequence[Doc], results: Sequence[AnyResult]) -> None:
        self.task.assign(docs, results)

    def initialize(
        self,
        get_examples: Optional[Callable[[], Iterable[Any]]] = None,
        *,
        nlp: Optional[Language] = None,
    ) -> None:
        """Without an adapter there is nothing to train (the model comes from the config);
        with one, a task built with ``labels = []`` takes its labels from the training data
        (as spaCy's textcat), and the data is checked for what the task learns from."""
        if self.adapter is None:
            return
        if get_examples is None or _placeholder(get_examples):
            if needs_labels(self.task):
                raise TrainingError(
                    Errors.E532.format(name=self.name, task=type(self.task).__name__)
                )
            return
        from .training.capabilities import check_examples, labels_from_data

        if needs_labels(self.task) and isinstance(self.task, TakesLabelsFromData):
            self.task.set_labels(labels_from_data(self.name, self.task, get_examples()))
            self.task.initialize(self._formatter, sample=self._sample)
        check_examples(self.name, self.task, get_examples())

    # -- training (only with an adapter block; spaCy's TrainablePipe contract) -----------
    @property
    def is_trainable(self) -> bool:
        return self.adapter is not None

    def update(
        self,
        examples: Iterable[Example],
        *,
        drop: float = 0.0,
        sgd: Optional[Optimizer] = None,
        losses: Optional[Dict[str, float]] = None,
    ) -> Dict[str, float]:
        """Add the gradients of the task's loss to the adapter weights; with ``sgd``, step.
        ``drop`` is not used: LoRA's own dropout is the adapter block's ``dropout``."""
        losses = {} if losses is None else losses
        if self.adapter is None:
            return losses
        losses.setdefault(self.name, 0.0)
        from .training.capabilities import check_batch

        examples = list(examples)
        check_batch(self.name, self.task, examples)  # NaN or 7 must not train silently
        value, loss = self.get_loss(examples)
        if loss is not None:
            loss.backward()  # accumulates in .grad until finish_update
        losses[self.name] += value
        if sgd is not None:
            self.finish_update(sgd)
        return losses

    def get_loss(self, examples: Iterable[Example], scores: Any = None) -> Tuple[float, Any]:
        """The task's loss on ``examples`` (its value, and the torch tensor to backpropagate;
        None when every doc was empty). ``scores`` is unused: the loss runs its own
        teacher-forced forward pass."""
        if self.adapter is None:
            return 0.0, None
        from .training.capabilities import task_loss  # the loss of the task's capability

        peft = self.adapter.peft
        peft.train()
        try:
            # micro-batches of the component's batch_size rows, as in prediction
            loss, _ = task_loss(
                self.task, self.adapter.model, peft, examples, batch_size=self.batch_size,
                name=self.name,
            )
        finally:
            peft.eval()
        return (float(loss.detach()) if loss is not None else 0.0), loss

    def finish_update(self, sgd: Optimizer) -> None:
        """One optimizer step on the adapter weights (the only ones with gradients); the
        merged inference weights follow at the next prediction."""
        if self.adapter is None:
            return
        self.adapter.shim.finish_update(sgd)
        self.adapter.stale = True

    def use_params(self, params: Dict[Any, Any]) -> Iterator[None]:
        """Predict (and save) with ``params`` in place of the adapter weights, e.g. the
        optimizer's averages: spaCy's train loop evaluates and saves checkpoints inside
        ``nlp.use_params(optimizer.averages)``. A generator, as TrainablePipe's: spaCy's
        Language.use_params steps it with ``next`` (enter, then restore)."""
        backup = self.adapter.swap_in(params) if self.adapter is not None else None
        try:
            yield
        finally:
            if backup is not None and self.adapter is not None:
                self.adapter.restore(backup)

    def _sync_adapter(self) -> None:
        if self.adapter is not None and self.adapter.refresh():
            self.engine.weights_changed()

    def score(self, examples: Iterable[Example], **kwargs: Any) -> Dict[str, Any]:
        """The configured scorer's figures; a scorer that takes ``task`` is given this
        component's task (spacy-llama.task_scorer.v1 does)."""
        if self.scorer is None:
            return {}
        if _takes_task(self.scorer):
            kwargs = {"task": self.task, **kwargs}
        return self.scorer(examples, **kwargs)

    # Weights never go into a pipeline folder: the config says where they come from. What
    # is saved is this component's settings and what its task learned (few-shot examples).
    def _saved_cfg(self) -> Dict[str, Any]:
        self._sync_adapter()
        return {**self.cfg, "model": self.model.name, "model_fingerprint": self.model.fingerprint}

    def to_disk(self, path: Path, *, exclude: Iterable[str] = tuple()) -> None:
        serializers: Dict[str, Callable[[Path], None]] = {
            "cfg": lambda p: srsly.write_json(p, self._saved_cfg()),
            "task": lambda p: self.task.to_disk(p, exclude=exclude),
        }
        if self.adapter is not None:
            serializers["adapter"] = self.adapter.to_disk
        util.to_disk(path, serializers, exclude)

    def from_disk(self, path: Path, *, exclude: Iterable[str] = tuple()) -> LlamaPipe:
        def load_task(p: Path) -> None:
            if p.exists():
                self.task.from_disk(p, exclude=exclude)

        readers: Dict[str, Callable[[Path], Any]] = {"cfg": lambda p: None, "task": load_task}
        if self.adapter is not None:
            readers["adapter"] = self.adapter.from_disk
        pending = needs_labels(self.task)
        util.from_disk(path, readers, exclude)
        self._labels_loaded(pending)
        return self

    def to_bytes(self, *, exclude: Iterable[str] = tuple()) -> bytes:
        serializers: Dict[str, Callable[[], bytes]] = {
            "cfg": lambda: srsly.json_dumps(self._saved_cfg()).encode("utf8"),
            "task": lambda: _folder_bytes(lambda p: self.task.to_disk(p, exclude=exclude)),
        }
        if self.adapter is not None:
            serializers["adapter"] = lambda: _folder_bytes(self.adapter.to_disk)  # type: ignore[union-attr]
        return util.to_bytes(serializers, exclude)

    def from_bytes(self, bytes_data: bytes, *, exclude: Iterable[str] = tuple()) -> LlamaPipe:
        def load_task(data: bytes) -> None:
            _from_folder_bytes(data, lambda p: self.task.from_disk(p, exclude=exclude))

        readers: Dict[str, Callable[[bytes], Any]] = {"cfg": lambda b: None, "task": load_task}
        if self.adapter is not None:
            adapter = self.adapter
            readers["adapter"] = lambda b: _from_folder_bytes(b, adapter.from_disk)
        pending = needs_labels(self.task)
        util.from_bytes(bytes_data, readers, exclude)
        self._labels_loaded(pending)
        return self

    def _labels_loaded(self, pending: bool) -> None:
        """A task built without labels that read them from the saved pipeline is initialized
        now (as it would have been at build time)."""
        if pending and not needs_labels(self.task):
            self.task.initialize(self._formatter, sample=self._sample)

    # -- what a corpus run asks of the component (batch/: annotate, its Ray workers) -----
    @property
    def model_fingerprint(self) -> str:
        """What identifies the weights that answer (a run's config hash covers it)."""
        return self.engine.model.fingerprint

    @property
    def engine_stats(self) -> EngineStats:
        """The engine's running counts: model calls, cache hits, tokens generated and
        scored, answers repaired."""
        return self.engine.stats

    def use_run_cache(self, cache: Optional[ResponseCache]) -> None:
        """A corpus run's response cache: ``cache``, unless the config gave this component
        its own; ``None`` turns caching off, the config's cache too (``--no-cache``)."""
        if cache is None:
            self.engine.cache = None
        elif self.engine.cache is None:
            self.engine.cache = cache

    def prompt_templates(self) -> Dict[str, str]:
        """The text of each prompt template the task renders, by the task's setting name
        (the package's defaults included, so an upgrade that changes one is seen)."""
        from .tasks.prompt import PromptTemplate

        items = vars(self.task).items()
        return {attr: value.source for attr, value in items if isinstance(value, PromptTemplate)}


def _add_requirements(nlp: Language, requirements: List[str]) -> None:
    """Into the pipeline's meta.json, which ``spacy package`` reads its requirements from."""
    listed = nlp.meta.setdefault("requirements", [])
    for requirement in requirements:
        if requirement not in listed:
            listed.append(requirement)


def _placeholder(get_examples: Callable[[], Iterable[Any]]) -> bool:
    """spaCy's stand-in when nlp.initialize() gets no data (``spacy assemble`` does that):
    one "x y z" doc without annotation, which is no training data to check."""
    return getattr(get_examples, "__qualname__", "") == "Language.initialize.<locals>.get_examples"


def _example(task: Task) -> List[str]:
    from .training.capabilities import example_labels

    return example_labels(task)


def _takes_task(scorer: Callable[..., Any]) -> bool:
    try:
        params = inspect.signature(scorer).parameters
    except (TypeError, ValueError):  # a builtin or C callable
        return False
    return "task" in params


def _folder_bytes(write: Callable[[Path], None]) -> bytes:
    """What ``write`` puts in a folder, as bytes: the task keeps one serialization (its
    ``to_disk``) for both the disk and the bytes of a pipeline."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "task"
        write(root)
        files = {
            p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()
        }
    return srsly.msgpack_dumps(files)


def _from_folder_bytes(data: bytes, read: Callable[[Path], Any]) -> None:
    files: Dict[str, bytes] = srsly.msgpack_loads(data)
    if not files:
        return
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "task"
        for name, content in files.items():
            target = root / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content)
        read(root)


def _sample_constraints(task: Task, sample: Doc) -> List[Any]:
    """The constraints of the sample doc's requests. A prompt that does not fit the context
    is not this check's business: on_overflow decides that per document at run time."""
    try:
        requests = task.requests([sample])
    except PromptTooLongError:
        return []
    return [
        r.constraint
        for r in requests
        if isinstance(r, GenerationRequest) and r.constraint is not None
    ]


def _check_scoring_task(name: str, task: Task, sample: Doc) -> None:
    """A backend without logits (a server) completes text; scoring needs the weights. Say
    so now, not at batch one."""
    unsupported = {
        type(r).__name__ for r in task.requests([sample]) if not isinstance(r, GenerationRequest)
    }
    if unsupported:
        raise BackendError(
            Errors.E050.format(
                name=name, task=type(task).__name__, kinds=", ".join(sorted(unsupported))
            )
        )
