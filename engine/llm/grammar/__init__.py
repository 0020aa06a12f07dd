"""Constrained decoding for the LLM lane, on llguidance.

compiler.py turns a StructuredOutput into a grammar once (cached by value); matcher.py is one sequence's
grammar state; masks.py fills the step's token bitmask for the constrained rows and applies it to logits.
"""
