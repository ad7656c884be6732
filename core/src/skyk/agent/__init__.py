"""The node agent: job queue, logs, multi-node fan-out and autostop on a head node.

Everything in this package uses the standard library only and imports its
siblings relatively, because skyk copies the package onto every node (as
``skyk_agent``) and runs it there with whatever ``python3`` the node has.
The CLI drives it through a :class:`~skyk.agent.runners.CommandRunner`.

Modules: ``client`` (the CLI's side), ``__main__``/``commands`` (the agent's
command line), ``jobs`` (the SQLite job table), ``daemon`` (scheduler and
autostop), ``driver`` (one job across the nodes), ``part`` (one phase on one
node), ``logs``, ``procs`` (process groups), ``layout`` (paths on a node),
``runners`` (reaching a node), ``mounts`` (a node's bucket mounts) and
``rclone`` (rclone's config for them).
"""
