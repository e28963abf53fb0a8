"""Developer tools of metrics-aggregation (run with `venv/bin/python -m tools.<name>`)."""
