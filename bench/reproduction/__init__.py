"""The protocols of bench/reproduce.py: one module per data set, and the report they share."""
