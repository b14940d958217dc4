"""Model loaders. Each returns a :class:`~spacy_llama.models.base.LoadedModel` (its weights
here), except ``server/``'s, which returns a ``ServerModel`` (no weights: a served model);
both are a :class:`~spacy_llama.models.base.LanguageModel`."""
