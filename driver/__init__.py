"""The training driver: one run configuration, the components built from it, and the loop
that hands out prompts, routes results, reports progress and enforces the budget."""
