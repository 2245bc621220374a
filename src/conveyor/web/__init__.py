"""The HTTP job API and the WebSocket live feed (quart-trio, served by hypercorn)."""
