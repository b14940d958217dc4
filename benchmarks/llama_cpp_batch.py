"""Greedy batched decoding with llama.cpp (llama-cpp-python's low-level API), for the
throughput benchmark: ``n_seq`` sequences share one KV cache and decode together, the way
llama.cpp's own ``batched`` example does. The high-level ``Llama`` object decodes one
sequence at a time, which would understate llama.cpp.
"""

from __future__ import annotations

from typing import Any, List, Sequence

import numpy as np


def _context(L: Any, model: Any, *, n_ctx: int, n_seq: int, threads: int) -> Any:
    """A context whose KV cache holds ``n_seq`` sequences (the high-level ``Llama`` only
    sets ``n_seq_max`` for embeddings)."""
    params = L.llama_context_default_params()
    params.n_ctx = n_ctx
    params.n_batch = 2048
    params.n_ubatch = 512
    params.n_seq_max = n_seq
    params.n_threads = threads
    params.n_threads_batch = threads
    params.kv_unified = True
    ctx = L.llama_init_from_model(model, params)
    if not ctx:
        raise RuntimeError("could not create a llama.cpp context")
    return ctx


def batched_greedy(
    model_path: str,
    prompts: Sequence[str],
    *,
    max_new: int,
    n_seq: int = 32,
    threads: int = 2,
    llm: Any = None,
) -> List[List[int]]:
    """Generated token ids (without the stop token) for each prompt, greedy. ``llm``: a
    ``Llama`` of ``model_path`` already loaded (to time generation without the load)."""
    import llama_cpp.llama_cpp as L
    from llama_cpp import Llama

    if llm is None:
        llm = Llama(model_path=model_path, n_ctx=512, n_threads=threads, verbose=False)
    ids = [llm.tokenize(p.encode("utf8"), add_bos=False, special=True) for p in prompts]
    longest = max(len(t) for t in ids) + max_new
    n_seq = min(n_seq, len(ids))
    ctx = _context(L, llm._model.model, n_ctx=n_seq * longest + 64, n_seq=n_seq, threads=threads)
    n_vocab = llm.n_vocab()
    eos = {llm.token_eos()}
    batch = L.llama_batch_init(2048, 0, n_seq)
    out: List[List[int]] = [[] for _ in prompts]
    try:
        for start in range(0, len(ids), n_seq):
            group = list(range(start, min(start + n_seq, len(ids))))
            L.llama_memory_clear(L.llama_get_memory(ctx), True)
            nxt = _prefill(L, ctx, batch, ids, group, n_vocab)
            pos = {i: len(ids[i]) for i in group}
            live = []
            for i in group:
                if nxt[i] not in eos:
                    out[i].append(nxt[i])
                    live.append(i)
            while live:
                live = [i for i in live if len(out[i]) < max_new]
                if not live:
                    break
                batch.n_tokens = 0
                for i in live:
                    _add(batch, out[i][-1], pos[i], group.index(i), True)
                    pos[i] += 1
                if L.llama_decode(ctx, batch) != 0:
                    raise RuntimeError("llama_decode failed")
                still = []
                for k, i in enumerate(live):
                    tok = _argmax(L, ctx, k, n_vocab)
                    if tok in eos:
                        continue
                    out[i].append(tok)
                    still.append(i)
                live = still
    finally:
        L.llama_batch_free(batch)
        L.llama_free(ctx)
    return out


def _add(batch: Any, token: int, pos: int, seq: int, logits: bool) -> None:
    n = batch.n_tokens
    batch.token[n] = token
    batch.pos[n] = pos
    batch.n_seq_id[n] = 1
    batch.seq_id[n][0] = seq
    batch.logits[n] = logits
    batch.n_tokens = n + 1


def _argmax(L: Any, ctx: Any, i: int, n_vocab: int) -> int:
    logits = np.ctypeslib.as_array(L.llama_get_logits_ith(ctx, i), shape=(n_vocab,))
    return int(np.argmax(logits))


def _prefill(
    L: Any, ctx: Any, batch: Any, ids: Sequence[Sequence[int]], group: List[int], n_vocab: int
) -> dict:
    """Decode every prompt of the group (in chunks of the batch capacity); pick each one's
    first token from the logits of its last prompt token."""
    first = {}
    batch.n_tokens = 0
    pending = []  # (request, index in batch) whose logits this chunk produces
    for seq, i in enumerate(group):
        for p, tok in enumerate(ids[i]):
            if batch.n_tokens == 2048:
                _flush(L, ctx, batch, pending, first, n_vocab)
            last = p == len(ids[i]) - 1
            if last:
                pending.append((i, batch.n_tokens))
            _add(batch, tok, p, seq, last)
    _flush(L, ctx, batch, pending, first, n_vocab)
    return first


def _flush(L: Any, ctx: Any, batch: Any, pending: list, first: dict, n_vocab: int) -> None:
    if batch.n_tokens and L.llama_decode(ctx, batch) != 0:
        raise RuntimeError("llama_decode failed")
    for i, k in pending:
        first[i] = _argmax(L, ctx, k, n_vocab)
    pending.clear()
    batch.n_tokens = 0
