"""The chart pipeline: YAML source → spec → validation → compiled chart → diagrams."""
