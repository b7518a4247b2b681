"""Routing between the edge (this node) and cloud peers: modes, privacy, breakers, reasons."""
