"""The agent types every node knows: ``llm``, ``embed`` and ``memory`` (one module each)."""
