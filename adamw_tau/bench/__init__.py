"""``adamw-tau bench``: step time beside torch and the copy roofline, with parity (bandwidth),
the host cost of step() (host_cost), their workloads and timing. Imports every layer below.
"""
