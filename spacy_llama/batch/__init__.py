"""A corpus run: read the inputs, select what to do, run the pipeline (here or on Ray),
write every batch durably, and merge or evaluate outputs.

Data flows top-down through the modules:
``options`` -> ``reader`` -> ``selection`` -> the pipeline (``loading``, ``identity``,
``batch_size``, ``failures``, ``run_stats``, ``workers``) -> ``lifecycle`` (the steps every
run takes) -> ``local`` or ``ray`` (the runners) -> ``records`` -> ``sinks`` / ``runinfo``
(the files, via ``files``). ``merge`` and ``evaluate`` work on finished outputs and gold
sets.
"""
