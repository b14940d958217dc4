"""``spacy-llama.OpenAICompatible.v1``: generate on an OpenAI-compatible server (vLLM,
llama.cpp's ``llama-server``, ``llama-cpp-python[server]``, ...). One module per idea:

* ``loader.py``: the registered loader (settings, discovery, one probe completion);
* ``discovery.py``: the served models, the context length, tokenize endpoints, the family;
* ``transport.py``: JSON over HTTP with bounded time and size, retries, ``breaker.py``;
* ``openai.py``: the completions request body and the answer read back;
* ``constraints.py``: a generation constraint as each server family's own fields;
* ``tokenizer.py``: the optional local tokenizer (``tokenizer_path``);
* ``model.py``: :class:`ServerModel`, a model with no weights that completes prompts.

Tokens are counted (for prompt budgets) with a local tokenizer when ``tokenizer_path`` is
set, else with the server's tokenize endpoint. ``chat = true`` needs ``tokenizer_path``:
the chat template lives in the tokenizer, and rendering it here keeps prompts, cache keys
and logprobs identical to the local backends.
"""

from .loader import openai_compatible_v1
from .model import ServerModel
from .transport import ServerError

__all__ = ["ServerError", "ServerModel", "openai_compatible_v1"]
