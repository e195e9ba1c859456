"""`edgeport bench`: one latency harness, one result schema (schema.py), runners behind one interface
(runner.py) that live in the targets they belong to."""
