"""The runner: config schema, plan, pipeline, results store, provenance, and the mechanism analyses (mechanism.py).

run.py drives it; each module is imported by its own name, this file imports none.
"""
