"""Where the models run: the executors and their workers.

The server side (``executor``, ``pool``, ``wrapper``) and the worker
process's own side (``worker``), the messages between them (``protocol``),
the reading of forms both sides share (``forms``), and the Ray executor
(``ray_executor``, ``ray_worker``: imported only when selected). Nothing here
imports aiohttp.
"""
