"""``adamw-tau sweep lm``: both claims of the seeds on real text. The grid and its cost (grid),
one run (train), the CSV and its analysis (results), the driver (sweep), the corpus (corpus)
and the model (tiny_gpt).
"""
