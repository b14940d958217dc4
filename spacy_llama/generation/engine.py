"""The batched decode loop.

Left padding with an attention mask and explicit position ids; one forward pass for the
prompts (keeping only the last position's logits), then one token per step with a KV cache.
Finished rows are dropped from the batch and its cache, so short answers never pay for long
ones. Prompts are sorted by length before they are cut into micro-batches, to waste little
padding; results come back in input order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence

import torch

from ..models.base import LlamaModel
from ..types import (
    AnyRequest,
    AnyResult,
    GenerationRequest,
    GenerationResult,
    PromptTooLongError,
    ScoreRequest,
    TokenLogprobRequest,
)
from .config import GenerationConfig
from .sampling import choose_tokens, make_generators, request_seed


class ResponseCache:
    """What the engine needs from a cache (see :mod:`spacy_llama.cache`)."""

    def get_many(self, keys: Sequence[str]) -> Dict[str, dict]:  # pragma: no cover - protocol
        raise NotImplementedError

    def put_many(self, items: Dict[str, dict]) -> None:  # pragma: no cover - protocol
        raise NotImplementedError


@dataclass
class EngineStats:
    model_calls: int = 0  # requests that reached the model
    cache_hits: int = 0
    generated_tokens: int = 0
    prompt_tokens: int = 0


class Engine:
    def __init__(
        self,
        model: LlamaModel,
        config: GenerationConfig,
        *,
        batch_size: int = 16,
        cache: Optional[Any] = None,
    ) -> None:
        self.model = model
        self.config = config
        self.batch_size = max(1, int(batch_size))
        self.cache = cache
        self.stats = EngineStats()
        stop_ids = list(model.stop_token_ids) + list(config.stop_token_ids)
        self._stop_ids = sorted(set(stop_ids))
        self._scorer: Optional[Any] = None

    # -- public ----------------------------------------------------------------
    def run_all(self, requests: Sequence[AnyRequest]) -> List[AnyResult]:
        """Dispatch a task's mixed requests: generation here, scoring to the Scorer."""
        results: List[Optional[AnyResult]] = [None] * len(requests)
        kinds: Dict[type, List[int]] = {}
        for i, req in enumerate(requests):
            kinds.setdefault(type(req), []).append(i)
        for kind, idx in kinds.items():
            batch = [requests[i] for i in idx]
            outs: Sequence[AnyResult]
            if kind is GenerationRequest:
                outs = self.run(batch)  # type: ignore[arg-type]
            elif kind is ScoreRequest:
                outs = self.scorer.score(batch)  # type: ignore[arg-type]
            elif kind is TokenLogprobRequest:
                outs = self.scorer.token_logprobs(batch)  # type: ignore[arg-type]
            else:
                raise TypeError(f"Unknown request type {kind.__name__}")
            for i, out in zip(idx, outs):
                results[i] = out
        return results  # type: ignore[return-value]

    @property
    def scorer(self) -> Any:
        if self._scorer is None:
            from .scoring import Scorer

            self._scorer = Scorer(self.model, batch_size=self.batch_size)
        return self._scorer

    def tokenize(self, request: GenerationRequest) -> List[int]:
        return self.model.encode(request.prompt, add_special_tokens=request.add_special_tokens)

    def run(self, requests: Sequence[GenerationRequest]) -> List[GenerationResult]:
        """Complete every request; the i-th result belongs to the i-th request."""
        results: List[Optional[GenerationResult]] = [None] * len(requests)
        ids: List[List[int]] = []
        todo: List[int] = []
        limit = self.model.context_length - self.config.max_new_tokens
        for i, req in enumerate(requests):
            prompt_ids = self.tokenize(req)
            ids.append(prompt_ids)
            if not req.prompt.strip():
                results[i] = GenerationResult(text="", finish_reason="empty")
                continue
            if len(prompt_ids) > limit:
                raise PromptTooLongError(
                    f"The prompt for {req.label or f'request {i}'} has {len(prompt_ids)} tokens, "
                    f"more than the model's context ({self.model.context_length}) minus "
                    f"max_new_tokens ({self.config.max_new_tokens})."
                )
            todo.append(i)
        keys = {i: self.cache_key(ids[i]) for i in todo} if self.cache is not None else {}
        if self.cache is not None and todo:
            hits = self.cache.get_many(list(keys.values()))
            remaining = []
            for i in todo:
                hit = hits.get(keys[i])
                if hit is not None:
                    results[i] = self._with_echo(
                        requests[i], GenerationResult.from_dict(hit, cached=True)
                    )
                    self.stats.cache_hits += 1
                else:
                    remaining.append(i)
            todo = remaining
        # Longest first: the first batch shows the worst-case memory at once.
        todo.sort(key=lambda i: -len(ids[i]))
        for start in range(0, len(todo), self.batch_size):
            chunk = todo[start : start + self.batch_size]
            outs = self.generate_ids([ids[i] for i in chunk])
            if self.cache is not None:
                self.cache.put_many({keys[i]: out.to_dict() for i, out in zip(chunk, outs)})
            for i, out in zip(chunk, outs):
                results[i] = self._with_echo(requests[i], out)
        return [r if r is not None else GenerationResult(text="") for r in results]

    def cache_key(self, prompt_ids: Sequence[int]) -> str:
        import hashlib

        h = hashlib.sha256()
        h.update(self.model.fingerprint.encode())
        h.update(self.config.fingerprint().encode())
        h.update(",".join(map(str, self._stop_ids)).encode())
        h.update(b"\0")
        h.update(",".join(map(str, prompt_ids)).encode())
        return h.hexdigest()

    # -- the decode loop ---------------------------------------------------------
    @torch.inference_mode()
    def generate_ids(self, prompts: Sequence[Sequence[int]]) -> List[GenerationResult]:
        cfg = self.config
        lm = self.model.model
        device = self.model.device
        n = len(prompts)
        width = max(len(p) for p in prompts)
        input_ids = torch.full((n, width), self.model.pad_token_id, dtype=torch.long)
        mask = torch.zeros((n, width), dtype=torch.long)
        for row, p in enumerate(prompts):
            input_ids[row, width - len(p) :] = torch.tensor(list(p), dtype=torch.long)
            mask[row, width - len(p) :] = 1
        input_ids, mask = input_ids.to(device), mask.to(device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        generators = (
            make_generators([request_seed(cfg.seed, p) for p in prompts]) if not cfg.greedy else []
        )
        from transformers import DynamicCache

        cache = DynamicCache()
        out = lm(
            input_ids=input_ids,
            attention_mask=mask,
            position_ids=positions,
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=1,
        )
        logits = out.logits[:, -1, :]
        last_pos = positions[:, -1]
        alive = list(range(n))  # original row of each live batch row
        tokens: List[List[int]] = [[] for _ in range(n)]
        logprobs: List[List[float]] = [[] for _ in range(n)]
        texts: List[Optional[str]] = [None] * n
        reasons: List[str] = ["length"] * n
        stop_ids = torch.tensor(self._stop_ids, dtype=torch.long, device=device)
        self.stats.model_calls += n
        self.stats.prompt_tokens += sum(len(p) for p in prompts)
        for step in range(cfg.max_new_tokens):
            raw = logits.float()
            chosen = choose_tokens(
                raw,
                temperature=cfg.temperature,
                top_k=cfg.top_k,
                top_p=cfg.top_p,
                generators=[generators[r] for r in alive] if generators else [],
            )
            lp = torch.log_softmax(raw, dim=-1).gather(-1, chosen[:, None])[:, 0]
            is_stop = torch.isin(chosen, stop_ids) if len(self._stop_ids) else None
            chosen_l, lp_l = chosen.tolist(), lp.tolist()
            stop_l = is_stop.tolist() if is_stop is not None else [False] * len(alive)
            keep: List[int] = []
            for b, row in enumerate(alive):
                if stop_l[b]:
                    reasons[row] = "eos"
                    continue
                tokens[row].append(chosen_l[b])
                logprobs[row].append(float(lp_l[b]))
                if cfg.stop:
                    text = self.model.decode(tokens[row])
                    cut = _first_stop(text, cfg.stop)
                    if cut is not None:
                        texts[row] = text[:cut]
                        reasons[row] = "stop"
                        continue
                keep.append(b)
            self.stats.generated_tokens += sum(1 for s in stop_l if not s)
            if not keep or step == cfg.max_new_tokens - 1:
                break
            if len(keep) < len(alive):
                idx = torch.tensor(keep, device=device)
                cache.batch_select_indices(idx)  # type: ignore[attr-defined]
                mask = mask[idx]
                last_pos = last_pos[idx]
                chosen = chosen[idx]
                alive = [alive[b] for b in keep]
            mask = torch.cat([mask, mask.new_ones((len(alive), 1))], dim=1)
            last_pos = last_pos + 1
            out = lm(
                input_ids=chosen[:, None],
                attention_mask=mask,
                position_ids=last_pos[:, None],
                past_key_values=cache,
                use_cache=True,
            )
            logits = out.logits[:, -1, :]
        results = []
        for row in range(n):
            cut_text = texts[row]
            text = cut_text if cut_text is not None else self.model.decode(tokens[row])
            results.append(
                GenerationResult(
                    text=text,
                    token_ids=tokens[row],
                    logprobs=logprobs[row],
                    finish_reason=reasons[row],  # type: ignore[arg-type]
                    prompt_tokens=len(prompts[row]),
                )
            )
        return results

    def _with_echo(self, req: GenerationRequest, res: GenerationResult) -> GenerationResult:
        if self.config.echo:
            res.text = req.prompt + res.text
        return res


def _first_stop(text: str, stops: Sequence[str]) -> Optional[int]:
    found = [text.find(s) for s in stops if s]
    found = [f for f in found if f >= 0]
    return min(found) if found else None


TokenCounter = Callable[[str], int]
