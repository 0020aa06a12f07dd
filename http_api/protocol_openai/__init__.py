"""OpenAI-compatible request and response bodies, one module per API: chat, completions, audio, models.

Requests forbid unknown fields, so a typo or an unsupported option is a 400 naming it, not silently
ignored. Options we accept but do not act on (user, metadata, ...) are declared and documented.
"""
