"""The viewer: any pprof read back into stacks, shown as an HTML flame graph, a diff of two,
speedscope's JSON or folded stacks (``hostflame view`` and ``hostflame diff``)."""
