"""Per-target packaging and runners: cortex_m, android, host."""
