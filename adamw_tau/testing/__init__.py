"""Test helpers the tests and the bench share: ``bits`` (comparing words, NaN-aware),
``hard_data`` (the values where backends part ways), ``parity`` (dtype paths, running a
backend beside the reference and counting differing words), ``cases`` (the fixed parity
cases every CI backend runs). Imports core, launch and optim.
"""
