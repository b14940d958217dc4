"""LLaMA hidden states as features for spaCy's trainable components (spacy-transformers
listeners): the architecture (model.py), piece alignment (alignment.py), batch-invariant
forward passes (batching.py) and the scalar mix of layers (layers.py)."""
