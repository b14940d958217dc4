"""Tasks turn Docs into requests and results back into annotations. They never touch torch."""
