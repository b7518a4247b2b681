"""Distributed agents: a registry of named workers and task dispatch with load balancing.

Tasks go through a :class:`~inference_server.agents.broker.Broker`: Redis Streams consumer
groups across nodes (``agents.redis_url``) or an in-process queue on a single node. Each node
runs the agent types it can (:mod:`inference_server.agents.builtin`, plus ``agents.modules``)
within their capacity. See the README's Agents section.
"""
