"""Operator commands, run by hand against a deployed (or local) mail collection; not deployed."""
