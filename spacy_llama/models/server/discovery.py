"""Discovery: what a server at ``base_url`` serves and how to talk to it, asked once when
the model is loaded (so a wrong URL fails at start-up): the served models and the chosen
one, its context length, its tokenize endpoints, and its family (vLLM, llama.cpp,
llama-cpp-python), which decides how a constraint is sent (``constraints.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional

from ...errors import Errors, ModelLoadError
from .transport import HttpClient, ServerError

OWNED_BY = {"vllm": "vllm", "llamacpp": "llama.cpp", "me": "llama-cpp-python"}


@dataclass(frozen=True)
class TokenizeRoute:
    """One server family's tokenize/detokenize endpoints (at the server root)."""

    name: str
    tokenize: str
    detokenize: str
    text_key: str  # request field holding the text
    add_special_key: Optional[str]  # request field for add-special-tokens, if supported
    detok_key: str  # response field holding detokenized text


TOKENIZE_ROUTES = (
    TokenizeRoute(
        "llama-cpp-python", "/extras/tokenize", "/extras/detokenize", "input", None, "text"
    ),
    TokenizeRoute("llama.cpp", "/tokenize", "/detokenize", "content", "add_special", "content"),
    TokenizeRoute("vLLM", "/tokenize", "/detokenize", "prompt", "add_special_tokens", "prompt"),
)


def list_models(client: HttpClient) -> List[Dict[str, Any]]:
    """GET /models, once, with a short timeout: a wrong URL should fail at start-up."""
    url = client.base_url
    try:
        data = client.get("/models", timeout=min(client.timeout, 10.0))
    except ServerError as e:
        text = str(e)
        if "HTTP 401" in text or "HTTP 403" in text:
            message = Errors.E132.format(url=url, error=text, env=client.api_key_env)
        elif "HTTP 404" in text:
            message = Errors.E133.format(url=url, error=text)
        else:
            message = Errors.E134.format(url=url, error=text)
        raise ModelLoadError(message) from None
    models = data.get("data") if isinstance(data, dict) else None
    if not isinstance(models, list) or not models:
        raise ModelLoadError(Errors.E135.format(url=url, data=str(data)[:200]))
    return [m for m in models if isinstance(m, dict) and "id" in m]


def pick_model(models: List[Dict[str, Any]], wanted: str, url: str) -> Dict[str, Any]:
    names = [str(m["id"]) for m in models]
    if not wanted:
        if len(models) > 1:
            raise ModelLoadError(Errors.E136.format(url=url, names=names))
        return models[0]
    for m in models:
        if str(m["id"]) == wanted:
            return m
    raise ModelLoadError(Errors.E137.format(url=url, wanted=wanted, names=names))


def detect_context(client: HttpClient, entry: Dict[str, Any], tokenizer: Any, url: str) -> int:
    """vLLM lists ``max_model_len``; llama.cpp's server reports ``n_ctx`` in /props."""
    if entry.get("max_model_len"):
        return int(entry["max_model_len"])
    try:
        props = client.get("/props", at_root=True, timeout=min(client.timeout, 10.0))
        n_ctx = (props.get("default_generation_settings") or {}).get("n_ctx") or props.get("n_ctx")
        if n_ctx:
            return int(n_ctx)
    except (ServerError, AttributeError):
        pass
    raise ModelLoadError(Errors.E138.format(url=url))


def find_tokenize_route(client: HttpClient, served: str) -> Optional[TokenizeRoute]:
    for route in TOKENIZE_ROUTES:
        body: Dict[str, Any] = {route.text_key: "Hello", "model": served}
        try:
            out = client.post(route.tokenize, body, at_root=True)
        except ServerError:
            continue
        if isinstance(out, dict) and isinstance(out.get("tokens"), list) and out["tokens"]:
            return route
    return None


def detect_kind(entry: Dict[str, Any], route_name: Optional[str]) -> Optional[str]:
    """The server family from its /models entry (``owned_by``: vLLM says "vllm", llama.cpp
    "llamacpp", llama-cpp-python "me") or the tokenize route it answered; None if unknown."""
    kind = OWNED_BY.get(str(entry.get("owned_by", "")).lower())
    if kind is None and route_name is not None:
        kind = {"llama-cpp-python": "llama-cpp-python", "llama.cpp": "llama.cpp"}.get(route_name)
    return kind
