"""Read-only views for operators: what sits in the dead-letter topics and in the quarantine, and
the whole life of one order. Each view is a dataclass with `as_dict()` (for `--json`) and
`lines()` (for a terminal); the CLI only prints them."""
