"""The exit codes of every command, defined once."""

EXIT_OK = 0  # done
EXIT_ERROR = 1  # convert: the source could not be converted
EXIT_USAGE = 2  # an input, config or output problem, reported as one message
EXIT_FAILED = 3  # annotate: some documents failed (listed in OUTPUT.failed.jsonl)
EXIT_INTERRUPTED = 130  # Ctrl-C / SIGINT; finished batches are kept
