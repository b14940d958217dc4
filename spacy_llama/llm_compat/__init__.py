"""spacy-llm compatibility: this project's engine as a model of spacy-llm's ``llm``
component (:mod:`.backend`), and a spacy-llm config translated to the ``llama`` component
(:mod:`.translate`, :mod:`.task_maps`, :mod:`.examples`). spacy-llm is an optional
dependency (the ``spacy-llm`` extra); only the backend needs it installed."""
