"""The keygate benchmark runner's parts (bench/run.py is the entry point)."""
