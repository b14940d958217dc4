"""Batched generation and scoring: the only code that knows about batching and devices."""
