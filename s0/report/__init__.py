"""The report: statistics, the paper's reference values, tables, figures and the reproduction page (page.py).

It reads the results store and runs no model; each module is imported by its own name, this file imports none.
"""
