"""Model loaders. Each returns a :class:`~spacy_llama.models.base.LoadedModel`."""
