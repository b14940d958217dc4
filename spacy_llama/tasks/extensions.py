"""The ``doc._``/``span._``/``token._`` attributes tasks write: named in the config,
installed once, re-installing the same name a no-op; and :func:`register_extensions`, which
installs a pipeline's for a process that only reads its output."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Iterable, List

from spacy.tokens import Doc, Span, Token

from ..errors import Errors, FewShotError, PipelineError, UsageError
from .base import Task


def install_extensions(
    *, doc: Iterable[str] = (), span: Iterable[str] = (), token: Iterable[str] = ()
) -> None:
    """Install extensions once (default None); re-installing the same name is a no-op."""
    for cls, names in ((Doc, doc), (Span, span), (Token, token)):
        for name in names:
            if not cls.has_extension(name):
                cls.set_extension(name, default=None)


def check_names(**names: str) -> None:
    """Extension names come from the config: they must be distinct, non-empty identifiers."""
    values = list(names.values())
    bad = [k for k, v in names.items() if not v or not v.isidentifier()]
    if bad or len(set(values)) != len(values):
        raise FewShotError(Errors.E315.format(names=names))


def task_assigns(task: Task) -> List[str]:
    """What a task writes, in spaCy's notation (``doc._.x``, ``span._.x``, ``token._.x``,
    ``doc.cats``...): its ``assigns`` when it declares them, else its ``extensions`` as Doc
    extensions."""
    declared = getattr(task, "assigns", None)
    if declared is not None:
        return list(declared)
    return [f"doc._.{name}" for name in task.extensions]


def install_assigned(assigns: Iterable[str]) -> List[str]:
    """Install the ``doc._.x``/``span._.x``/``token._.x`` entries of ``assigns``."""
    levels: Dict[str, List[str]] = {"doc": [], "span": [], "token": []}
    done = []
    for item in assigns:
        level, sep, name = item.partition("._.")
        if sep and level in levels:
            levels[level].append(name)
            done.append(item)
    install_extensions(doc=levels["doc"], span=levels["span"], token=levels["token"])
    return done


def register_extensions(nlp_or_config: Any) -> List[str]:
    """Install the Doc, Span and Token extensions the ``llama`` components of a pipeline
    write, so that their output read back elsewhere (a DocBin from ``annotate`` or
    ``spacy apply``) gives ``doc._.llama_completion`` and the rest instead of spaCy's E046.

    ``nlp_or_config``: a loaded pipeline, a config (``Config`` or dict), or the path of a
    ``.cfg`` file or a pipeline folder. From a config only the tasks are built (no model is
    loaded). ``spacy.load`` of a pipeline with the component does this by itself. Returns
    what was installed, e.g. ``["doc._.llama_completion", "doc._.llama_logprobs"]``.
    """
    from confection import Config
    from spacy.language import Language

    if isinstance(nlp_or_config, Language):
        assigns = []
        for _, pipe in nlp_or_config.pipeline:
            task = getattr(pipe, "task", None)
            if task is not None and hasattr(task, "extensions"):
                assigns += task_assigns(task)
        return install_assigned(assigns)
    if isinstance(nlp_or_config, (str, Path)):
        source = str(nlp_or_config)
        config = _read_config(Path(nlp_or_config))
    elif isinstance(nlp_or_config, dict):  # Config is a dict
        source, config = "the config", Config(nlp_or_config)
    else:
        raise UsageError(Errors.E801.format(kind=type(nlp_or_config).__name__))
    return install_assigned(_config_assigns(config, source))


# The factory's default task (pipeline.DEFAULT_CONFIG): only its extension names matter here
_DEFAULT_TASK = {"@llama_tasks": "spacy-llama.Completion.v1", "template": "{{ text }}"}


def _read_config(path: Path) -> Any:
    from spacy.util import load_config

    file = path / "config.cfg" if path.is_dir() else path
    if not file.exists():
        raise PipelineError(Errors.E018.format(path=str(path)))
    return load_config(file, interpolate=False)


def _config_assigns(config: Any, source: str) -> List[str]:
    from confection import Config
    from spacy.util import registry

    try:
        config = Config(config).interpolate()
    except Exception:  # a variable set elsewhere (--paths.x): read the blocks as they are
        config = Config(config)
    assigns: List[str] = []
    for name, component in (config.get("components") or {}).items():
        if not isinstance(component, dict) or component.get("factory") != "llama":
            continue
        block = component.get("task") or _DEFAULT_TASK
        try:
            task = registry.resolve({"task": block}, validate=True)["task"]
        except Exception as e:
            raise UsageError(
                Errors.E800.format(name=name, source=source, error=f"{type(e).__name__}: {e}")
            ) from None
        assigns += task_assigns(task)
    return assigns
