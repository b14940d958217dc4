"""Training the llama component (``spacy train``): LoRA adapters and the loss of each task."""
