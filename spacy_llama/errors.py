"""One catalogue of the package's errors, in the style of spaCy's ``errors.py``.

Every message a user can see is a coded entry of :class:`Errors` (``E...``) or
:class:`Warnings` (``W...``); reading an entry adds its code, so ``Errors.E001`` is
``"[E001] ..."``, and a code can be searched for in the docs and the issue tracker. Each
message names the thing that is wrong and the fix. Fill an entry with ``.format(...)``.

The exception classes live here too. They all derive from :class:`SpacyLlamaError`: an
error the user can fix, reported by the CLI as one message and an exit code (see
``cli/__init__.py``), never as a traceback from deep inside. The second base class keeps
``except ValueError`` (what spaCy and pydantic callers expect) working.
"""

from __future__ import annotations


class ErrorsWithCodes(type):
    """Reading a class attribute returns ``"[CODE] message"``."""

    def __getattribute__(self, code: str) -> str:
        msg = super().__getattribute__(code)
        if code.startswith("__"):  # the class's own machinery
            return msg
        return f"[{code}] {msg}"


# fmt: off
class Warnings(metaclass=ErrorsWithCodes):
    W001 = ("{path}: the last line was half-written (the run was interrupted); it was "
            "removed and that document will be annotated again.")


class Errors(metaclass=ErrorsWithCodes):
    # -- corpus input (batch/reader.py, batch/selection.py) ------------------------------
    E001 = "Input {path!r} does not exist."
    E002 = ("Input {path!r} has an unknown extension; use {suffixes} or a folder of such "
            "files.")
    E003 = "Input folder {path!r} holds no {suffixes} files."
    E004 = "{path!r} is not a readable spaCy DocBin ({error})."
    E005 = "--shard expects I/N, e.g. 1/4; got {spec!r}."
    E006 = "--shard {spec}: I must be between 1 and N."
    E007 = "Input {path!r} contains no documents."
    E008 = ("{line}. Fix the line, or pass --on-bad-line skip to record it in the failed file "
            "and go on.")
    # -- annotate options and outputs (batch/local.py, batch/sinks.py, batch/runinfo.py) -
    E010 = "OUTPUT must end in .jsonl or .spacy, not {name!r}."
    E011 = "--docbin must name a folder ending in .spacy."
    E012 = "--resume and --overwrite exclude each other."
    E013 = ("{path} already exists: pass --resume to continue that run, or --overwrite to "
            "start again.")
    E014 = "{path}:{line} is not a valid record ({reason})."
    E015 = "{path} exists and is not a folder of DocBin parts."
    E016 = ("{output} was written with a different config (hash {old}, now {new}). Resuming "
            "would mix two configs in one output: write to a new OUTPUT, or pass --overwrite "
            "to start again.")
    E017 = ("{output} was written for --shard {old}, not {new}; use the same --shard to "
            "resume it.")
    E018 = "Config or pipeline {path!r} does not exist."
    E019 = "Could not build the pipeline from {path}:\n{error}"
    E020 = "Could not read the config {path}:\n{error}"
    E021 = "--n-process does not apply with --ray; use --workers N."
    E022 = "--ray needs Ray Data: {hint}"
    # -- merge (batch/merge.py) -----------------------------------------------------------
    E030 = "OUTPUT and the shards must be all .jsonl files or all .spacy folders."
    E031 = "shard output(s) not found: {paths}"
    E032 = "{path} already exists; pass --overwrite to replace it."
    E033 = "no .run.json next to {paths}; pass --partial to merge anyway."
    E034 = "the shards were annotated with different configs; refusing to merge."
    E035 = "the shards were cut for different N: {counts}."
    E036 = "shards {seen} do not cover 1..N; pass --partial to merge anyway."
    E037 = "unfinished run(s): {paths}; resume them first or pass --partial."
    # -- evaluate (batch/evaluate.py) -----------------------------------------------------
    E040 = "Gold file {path!r} does not exist."
    E041 = "Gold file {path!r}: use .spacy or .jsonl."
    E042 = "Record {index} of {path!r}: an entity is not on token boundaries."
    # -- the component (pipeline.py) ------------------------------------------------------
    E050 = ("Component '{name}': the task {task} scores text ({kinds}), which a server "
            "backend cannot do. Use a local model loader (spacy-llama.HF.v1, GGUF.v1, Meta.v1 "
            "or SmolLM2.v1) for this task.")
    E051 = "Unknown request type {kind}; the engine answers {known}."
    # -- corpus-run locks and output paths (batch/lock.py, batch/paths.py): E060-E079 -----
    E060 = ("{path} is in use by another run: pid {pid} on host {host}, started {started} "
            "({command}). Two runs on one output would corrupt it: wait for that run to finish "
            "or stop it, or write to another OUTPUT. (A killed run holds no lock: the system "
            "releases it when the process ends.)")
    E061 = ("{path} is in use by another run, which has not written its pid into {lock} yet. "
            "Two runs on one output would corrupt it: wait for that run to finish or stop it, "
            "or write to another OUTPUT.")
    E062 = ("Cannot lock {path} through {lock}: {reason}. Write OUTPUT to a folder you can "
            "write to, on a filesystem with file locks (a local disk or NFS).")
    E063 = ("{what} {path} is the input {input}: writing it would destroy the input. Choose "
            "another path for {what}.")
    E064 = ("{what} {path} lies inside the input folder {input}, which this run reads. Choose "
            "a path for {what} outside the input folder.")
    E065 = ("The input {input} lies inside {what} {path}, which this run writes (and "
            "replaces with --overwrite). Choose a path for {what} that does not contain the "
            "input.")
    E066 = ("Cannot write {what} {path}: {reason}. Choose a path in a folder you can write "
            "to, or fix the folder's permissions.")
    E067 = ("Writing {path} failed: {reason}. Every batch finished before is saved and the "
            "batch in progress is not counted as done: fix the cause (free disk space, "
            "permissions), then run the same command with --resume to continue.")
    E068 = ("{what} {path} is also {other}: a run writes each of them in its own way, so they "
            "would overwrite each other. Choose another path for {what}.")
    E069 = ("Cannot write the response cache {path}: {reason}. Pass --cache with a file in a "
            "folder you can write to, or --no-cache to run without a cache.")
    # -- bad records and durable outputs (batch/reader.py, records.py, sinks.py): E080-E099
    E080 = ("{where} holds a lone surrogate ({char}), which no UTF-8 output can hold; fix the "
            "escape (\\ud800-\\udbff must be followed by \\udc00-\\udfff) or remove it")
    E081 = ("{where} is nested deeper than {limit} levels, more than the outputs can hold; "
            "flatten it")
    E082 = "a number with more than {limit} digits cannot be read; write it as a string"
    E083 = ("{where} holds an integer beyond 64 bits ({bits} bits), which a DocBin cannot hold; "
            "write it as a string")
    E084 = ("{where} holds {kind}, which JSON cannot hold; store only strings, numbers, "
            "booleans, None, lists and dicts with string keys in doc.user_data[{key!r}]")
    E085 = ("doc.user_data[{key!r}] must be a string or an integer, got {value}; set it to "
            "the document's id, or remove it to use the file and position")
    E086 = ("the text has {length} characters, more than the pipeline's nlp.max_length "
            "({limit}); split the document, or raise nlp.max_length (and check the memory)")
    E087 = ("{output} has records but {path} is missing, so a resume cannot check that they "
            "were made with this config. Pass --overwrite to start again, or write to a new "
            "OUTPUT.")
    E088 = ("{path} is not a readable run record ({reason}), so a resume cannot check that "
            "{output} was made with this config. Pass --overwrite to start again, or write "
            "to a new OUTPUT.")
    E089 = "the text could not be made into a Doc ({error}); fix or remove the document"
    # -- fingerprints and config hashes (models/base.py, batch/prepare.py): E100-E119 -----
    E100 = ("The files of the model {source} changed after it was loaded: {files}. Its "
            "fingerprint would describe files the loaded model does not hold, and cached "
            "answers of the old files would be mixed with new ones. Run again, so the model "
            "is loaded from the changed files (and do not edit a model while it runs).")
    E101 = ("Could not read {path!r}, named by `{setting}` in the config, to include its "
            "contents in the run's config hash: {error}. Make the file readable, or fix "
            "`{setting}`.")
    # -- models, servers, conversion, evaluate, templates: E120-E299 ----------------------
    # -- tasks (tasks/): E300-E399 ------------------------------------------------------
    E300 = ("{task}.initialize(formatter, sample=...) was not called; the llama component "
            "calls it when the pipeline is built.")
    E301 = "completion_attr and logprobs_attr must be two different names."
    E302 = "none_label {none_label!r} must not also be in `labels`."
    E303 = "delete_none = true needs a none_label (the answer meaning 'none')."
    E304 = "Few-shot file {path!r} does not exist (check `path`)."
    E305 = "Few-shot file {path!r}: use .jsonl, .json, .yml or .yaml."
    E306 = "Few-shot file {path!r} must hold a list of examples."
    E307 = 'Few-shot example {index} in {path!r} has no "text" string.'
    E308 = ('{example} has no "entities" list; give it e.g. "entities": [{{"text": "Paris", '
            '"label": "GPE"}}].')
    E309 = ("{example}: {entity!r} is not in its text; copy each entity string exactly from "
            "the example's text.")
    E310 = "The task needs at least one label (`labels` is empty)."
    E311 = "Labels must be unique, non-empty strings; got {labels}."
    E312 = "`{what}` names unknown labels {stray}; labels are {labels}."
    E313 = "Two labels share a verbalizer: {answers}."
    E314 = ("Unknown label {label!r} in {where}; the task's labels are {known}. Fix the "
            "example or add the label to `labels`.")
    E315 = "Extension names must be distinct identifiers; got {names}."
    E316 = ("The prompt for {label} does not fit the model's context. Shorten the document or "
            "set on_overflow = \"truncate\" in the task config.")
    E317 = ("The prompt template alone (without {label}'s text) does not fit the model's "
            "context; shorten the template, the label definitions or the few-shot examples.")
    E318 = "spans_key must be a non-empty string."
    E319 = "max_words must be at least 1; got {max_words}."
    E320 = "Surprisal.v2: window = {window}; it needs at least 2 tokens."
    E321 = ("Surprisal.v2: stride = {stride} with window = {window}; the stride must be at "
            "least 1 and smaller than the window (e.g. half of it), or null.")
    E322 = '{example} has no "label", "labels" or "cats".'
    E323 = "{example} needs exactly one label; got {names}."
    # -- TextCat.v2 (tasks/textcat.py): E330-E349 ----------------------------------------
    E330 = ("TextCat.v2: label_score = {value!r} is not one of {allowed}; use \"sum\" "
            "(the default) unless you have measured another on your own labels.")
    E331 = ("TextCat.v2: calibrate = true needs at least one content-free text; set "
            "content_free = \"N/A\" (or a list of such texts), or calibrate = false.")
    E332 = ("TextCat.v2: content_free must be a string or a list of strings; got {bad}. "
            "Quote each content-free text, e.g. content_free = [\"N/A\", \"\"].")
# fmt: on


class SpacyLlamaError(Exception):
    """A problem the user can fix; its message names the thing and the fix."""


class ModelLoadError(SpacyLlamaError, ValueError):
    """A model could not be loaded; the message names the path and the fix."""


class TemplateError(SpacyLlamaError, ValueError):
    """A prompt template does not compile or render; the message names it and the line."""


class FewShotError(SpacyLlamaError, ValueError):
    """Few-shot examples or labels are malformed; the message names the file and example."""


class PromptTooLongError(SpacyLlamaError, ValueError):
    """A prompt does not fit the model's context; the message names the document."""


class GenerationError(SpacyLlamaError, RuntimeError):
    """Some requests of a batch failed (e.g. a server kept refusing them)."""


class CorpusError(SpacyLlamaError):
    """An input problem of a corpus run (file, line, reason)."""


class RunStateError(SpacyLlamaError):
    """An output problem of a corpus run (existing output, changed config, broken record)."""


class PipelineError(SpacyLlamaError):
    """The pipeline of a corpus run could not be built."""


class AnnotateError(SpacyLlamaError):
    """An option of a corpus run is wrong, or a run cannot start."""


class GoldError(SpacyLlamaError, ValueError):
    """The gold file of ``evaluate`` cannot be read; the message names the file and record."""
