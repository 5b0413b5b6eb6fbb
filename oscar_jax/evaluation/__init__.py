"""Evaluation: retrieval metrics in numpy (`metrics`), code sets of records (`codesets`), the
paper's benchmarks and the separation score (`benchmarks`), Table 6 (`table6`), the report
and its plots (`report`, `plots`) and the attribution demo (`demo`)."""
