"""The reproduction protocols of ``bench/reproduce.py``: one module per paper, sharing the helpers in ``shared``."""
