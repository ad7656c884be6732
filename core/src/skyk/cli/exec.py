"""``skyk exec``: run a task or command on an existing cluster, without setup."""

from __future__ import annotations

HELP = "Run a task's run (or a command) on an UP cluster, skipping provisioning and setup."


def configure(parser) -> None:
    """Add this command's arguments."""
    parser.add_argument("cluster", metavar="NAME", help="an UP cluster")
    parser.add_argument("task", metavar="TASK|CMD", help="a task YAML file, or a command to run")
    parser.add_argument("-d", "--detach-run", dest="detach", action="store_true",
                        help="return once the job is submitted")
    parser.add_argument("--env", action="append", default=[], metavar="KEY[=VALUE]",
                        help="set an env var; KEY alone takes the value from your environment")
    parser.add_argument("--secret", action="append", default=[], metavar="KEY[=VALUE]",
                        help="set a secret, like --env but never printed")


def run(args) -> int:
    """Submit the run command as a job and follow it."""
    from skyk.cli.launch import check_cluster_name, task_or_command
    from skyk.lifecycle.launch import execute

    check_cluster_name(args.cluster, "")
    task = task_or_command(args.task).with_overrides(args.env, args.secret)
    task.check_ready()
    return execute(task, args.cluster, args.detach)
