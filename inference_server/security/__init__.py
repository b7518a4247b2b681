"""Who may call what: bearer tokens (static or JWT) with roles, rate limits and CORS."""
