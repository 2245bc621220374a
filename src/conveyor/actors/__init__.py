"""The node's actors. Each is `async def run_x(..., *, task_status)` started by a supervisor."""
