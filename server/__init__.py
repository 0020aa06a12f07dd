"""The composition root: settings, the aiohttp app (engine + both front ends) and the `rtserve` CLI."""
