"""The evaluation stage: execute, compare, classify, report."""
