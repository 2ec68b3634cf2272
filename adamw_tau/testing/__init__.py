"""The parity harness the tests and the bench share: dtype paths, hard data, and counting the
words a backend's step differs from the reference in. Imports core, launch and optim.
"""
