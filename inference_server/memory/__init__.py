"""Tiered key-value memory (hot Redis → warm directory → cold cloud peer) and the response cache."""
