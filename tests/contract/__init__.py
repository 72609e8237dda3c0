"""One contract suite over every store (and, later, every plugin and notifier)."""
