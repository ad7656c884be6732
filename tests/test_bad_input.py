"""Bad input never gets a traceback: one line on stderr, naming what is wrong, with a hint.

Each case runs the real ``skyk`` command in a subprocess against the real
catalogs and checks that it

* exits non-zero, with no Python traceback anywhere in its output;
* writes exactly one line to stderr, containing the expected text;
* carries a hint (``hint:`` or ``did you mean``);
* for a problem in a task file, names that file, and for a problem in one
  field of the spec, names the field's path (``resources.accelerators``).

Task YAML is written to ``tmp_path/task.yaml`` and the command runs in
``tmp_path``. In command arguments and environment values, ``{task}`` stands
for that file and ``{tmp}`` for ``tmp_path``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

#: A task that is valid on its own, for cases whose problem is on the command line.
VALID = "name: ok\nrun: echo hi\n"

#: An environment variable no test run sets (``--env NAME`` must then fail).
UNSET_VAR = "SKYK_TEST_SURELY_UNSET_VAR"


@dataclass(frozen=True)
class Case:
    """One bad input and what the CLI must say about it."""

    yaml: str | bytes | None
    """The task file's content; None when the case writes no task file."""
    args: tuple[str, ...]
    """For a task case, the flags after ``launch --dryrun {task}``; else the whole command."""
    expect: str
    """Text the single stderr line must contain."""
    file: str | None = None
    """Path (template) the line must name: the task file for YAML problems."""
    field_path: str | None = None
    """Spec field path the line must name, for errors in one field."""
    env: dict[str, str | None] = field(default_factory=dict)


def yaml_case(case_id: str, yaml: str | bytes, expect: str, field_path: str | None = None,
              *, args: tuple[str, ...] = (), env: dict[str, str | None] | None = None):
    """A problem in the task file: the line must name the file (and the field)."""
    return pytest.param(Case(yaml, args, expect, "{task}", field_path, env or {}), id=case_id)


def flag_case(case_id: str, args: tuple[str, ...], expect: str,
              *, env: dict[str, str | None] | None = None):
    """A problem in a ``launch`` flag, given with a valid task file."""
    return pytest.param(Case(VALID, args, expect, None, None, env or {}), id=case_id)


def cmd_case(case_id: str, args: tuple[str, ...], expect: str, *, file: str | None = None,
             env: dict[str, str | None] | None = None):
    """A whole command with no task file written."""
    return pytest.param(Case(None, args, expect, file, None, env or {}), id=case_id)


CASES = [
    # --- malformed YAML ------------------------------------------------------
    yaml_case("yaml-bad-indentation",
              "resources:\n    cpus: 4\n  accelerators: A100\nrun: echo\n", "malformed YAML"),
    yaml_case("yaml-tab-indentation", "resources:\n\tcpus: 4\nrun: echo\n", "tab character"),
    yaml_case("yaml-unclosed-bracket",
              "resources:\n  accelerators: [A100, H100\nrun: echo\n", "malformed YAML"),
    yaml_case("yaml-unclosed-quote", 'run: "echo hi\n', "malformed YAML"),
    yaml_case("yaml-duplicate-key", "run: echo a\nrun: echo b\n", "appears twice"),
    yaml_case("yaml-duplicate-nested-key",
              "resources:\n  cpus: 4\n  cpus: 8\nrun: echo\n", "appears twice"),
    yaml_case("yaml-unhashable-key", "[a, b]: c\nrun: echo\n", "cannot be a key"),
    yaml_case("yaml-empty-file", "", "is empty"),
    yaml_case("yaml-only-comments", "# nothing here\n", "is empty"),
    yaml_case("yaml-top-level-list", "- run: echo hi\n", "expected a mapping"),
    yaml_case("yaml-top-level-scalar", "echo hi\n", "expected a mapping"),
    yaml_case("yaml-not-utf8", b"name: caf\xe9\nrun: echo\n", "not UTF-8"),
    yaml_case("yaml-multiple-documents", "run: echo a\n---\nrun: echo b\n", "malformed YAML"),

    # --- unknown keys, with did-you-mean -------------------------------------
    yaml_case("unknown-top-level-typo", "resorces:\n  cpus: 4\nrun: echo\n",
              "did you mean 'resources'", "resorces"),
    yaml_case("unknown-top-level-far", "zzz: 1\nrun: echo\n", "unknown field", "zzz"),
    yaml_case("unknown-resources-key", "resources:\n  acelerators: A100\n",
              "did you mean 'accelerators'", "resources.acelerators"),
    yaml_case("unknown-service-key", "service:\n  replica: 2\n",
              "did you mean 'replicas'", "service.replica"),
    yaml_case("unknown-readiness-probe-key", "service:\n  readiness_probe:\n    pth: /health\n",
              "did you mean 'path'", "service.readiness_probe.pth"),
    yaml_case("unknown-replica-policy-key",
              "service:\n  replica_policy:\n    min_replicas: 1\n    max_replica: 3\n",
              "did you mean 'max_replicas'", "service.replica_policy.max_replica"),
    yaml_case("unknown-any-of-entry-key",
              "resources:\n  any_of:\n    - cpu: 4\n", "did you mean 'cpus'",
              "resources.any_of[0].cpu"),
    yaml_case("unknown-ordered-entry-key",
              "resources:\n  ordered:\n    - accelerators: L4\n    - acclerators: A10G\n",
              "did you mean 'accelerators'", "resources.ordered[1].acclerators"),
    yaml_case("unknown-autostop-key", "resources:\n  autostop:\n    idle_minute: 5\n",
              "idle_minute", "resources.autostop"),

    # --- wrong types -----------------------------------------------------------
    yaml_case("type-num-nodes-string", "num_nodes: two\nrun: echo\n",
              "expected an integer", "num_nodes"),
    yaml_case("type-use-spot-string", 'resources:\n  use_spot: "yes"\n',
              "expected true or false", "resources.use_spot"),
    yaml_case("type-run-list", "run: [1]\n", "expected a string", "run"),
    yaml_case("type-env-value-list", "envs:\n  FOO: [1, 2]\nrun: echo\n",
              "must be a string or number", "envs"),
    yaml_case("type-disk-size-negative", "resources:\n  disk_size: -5\n",
              "must be at least 1 GB", "resources.disk_size"),
    yaml_case("type-disk-size-gib", "resources:\n  disk_size: 256GiB\n",
              "bad disk_size '256GiB'", "resources.disk_size"),
    yaml_case("type-ports-word", "resources:\n  ports: abc\n", "bad port", "resources.ports"),
    yaml_case("type-resources-list", "resources: [A100]\nrun: echo\n",
              "expected a mapping", "resources"),
    yaml_case("type-disk-tier-unknown", "resources:\n  disk_tier: fast\n",
              "disk_tier", "resources.disk_tier"),

    # --- bad accelerator strings ----------------------------------------------
    yaml_case("acc-missing-count", "resources:\n  accelerators: 'A100:'\n",
              "bad accelerator count", "resources.accelerators"),
    yaml_case("acc-word-count", "resources:\n  accelerators: A100:x\n",
              "bad accelerator count", "resources.accelerators"),
    yaml_case("acc-missing-name", "resources:\n  accelerators: ':8'\n",
              "bad accelerator", "resources.accelerators"),
    yaml_case("acc-negative-count", "resources:\n  accelerators: A100:-1\n",
              "must be positive", "resources.accelerators"),
    yaml_case("acc-zero-count", "resources:\n  accelerators: A100:0\n",
              "must be positive", "resources.accelerators"),
    yaml_case("acc-mapping-zero-count", "resources:\n  accelerators: {A100: 0}\n",
              "must be positive", "resources.accelerators"),
    yaml_case("acc-empty-list", "resources:\n  accelerators: []\n",
              "list is empty", "resources.accelerators"),
    yaml_case("acc-empty-mapping", "resources:\n  accelerators: {}\n",
              "mapping is empty", "resources.accelerators"),
    yaml_case("acc-count-in-key-and-value", "resources:\n  accelerators: {'A100:8': 2}\n",
              "both key and value", "resources.accelerators"),
    yaml_case("acc-unknown-name", "resources:\n  accelerators: A1OO:8\n",
              "did you mean A100", "resources.accelerators"),
    # A real accelerator (SkyPilot knows it) that no installed cloud sells is not a typo.
    yaml_case("acc-offered-nowhere", "resources:\n  accelerators: L40:2\n",
              "no installed cloud offers L40", "resources.accelerators"),
    yaml_case("acc-offered-nowhere-in-any-of",
              "resources:\n  any_of:\n    - accelerators: l40\n    - accelerators: A40\n",
              "no installed cloud offers L40, A40", "resources.any_of[0].accelerators"),
    flag_case("acc-not-on-local", ("--cloud", "local", "--gpus", "A100"),
              "--gpus: the local cloud offers no A100"),

    # --- git workdir: (case, workdir value, expected text), all about the workdir field ---
    *(yaml_case(f"workdir-{name}", f"workdir: {value}\n", expect, "workdir") for name, value, expect in (
        ("git-no-url", "{ref: main}", "needs url"),
        ("git-bad-url", "{url: not-a-url}", "is not a git URL"),
        ("git-option-ref", "{url: 'https://h/r.git', ref: --upload-pack=x}", "cannot start with '-'"),
        ("git-unknown-field", "{url: 'https://h/r.git', branch: main}", "unknown workdir field 'branch'"),
        ("number", "5", "expected a local path or a git repository"),
    )),

    # --- fields accepted, not acted on yet: (case, YAML, expected text, field) ---------
    *(yaml_case(name, text, expect, field) for name, text, expect, field in (
        ("spot-recovery-and-job-recovery", "resources:\n  job_recovery: x\n  spot_recovery: y\n",
         "either job_recovery or spot_recovery", "resources"),
        ("inputs-two-entries", "inputs: {a: 1, b: 2}\n", "takes one mapping", "inputs"),
        ("outputs-size-word", "outputs: {s3://b/o: big}\n", "must be a size in GB", "outputs"),
        ("volumes-relative-path", "volumes: {data: v}\n", "must be an absolute path", "volumes"),
        ("volume-mounts-unknown", "volume_mounts: [{path: /d, volume: v}]\n",
         "unknown volume_mounts[0] field 'volume'", "volume_mounts"),
        ("resource-volumes-mode", "resources:\n  volumes: [{path: /d, attach_mode: rw}]\n",
         "attach_mode must be read_write or read_only", "resources.volumes"),
        ("pool-with-run", "pool: {workers: 2}\nrun: echo\n", "a pool task has no run", None),
        ("pool-zero-workers", "pool: {workers: 0}\n", "greater than or equal to 1", "pool.workers"),
    )),

    # --- SkyPilot's per-task config overrides -----------------------------------
    yaml_case("config-not-a-mapping", "config: 5\nrun: echo\n",
              "expected a mapping of sections", "config"),
    yaml_case("config-section-not-a-mapping", "config:\n  docker: --cpus 2\nrun: echo\n",
              "section docker must be a mapping", "config"),

    # --- negative or zero counts -----------------------------------------------
    yaml_case("count-num-nodes-zero", "num_nodes: 0\nrun: echo\n",
              "greater than or equal to 1", "num_nodes"),
    yaml_case("count-cpus-negative", "resources:\n  cpus: -1\n",
              "must be positive", "resources.cpus"),
    yaml_case("count-memory-zero", "resources:\n  memory: 0\n",
              "must be positive", "resources.memory"),
    yaml_case("count-cpus-word", "resources:\n  cpus: lots\n",
              "expected a number", "resources.cpus"),

    # --- impossible requests ---------------------------------------------------
    yaml_case("impossible-a100-3", "resources:\n  accelerators: A100:3\n",
              "comes only in counts"),
    yaml_case("impossible-cpus-100000", "resources:\n  cpus: 100000\n", "100000"),
    yaml_case("impossible-h100-azure-nowhere",
              "resources:\n  accelerators: H100:8\n  cloud: azure\n  region: nowhere\n",
              "azure: no region nowhere"),
    yaml_case("region-typo", "resources:\n  region: us-east-99\n",
              "aws: no region us-east-99 (did you mean us-east-2?)"),
    yaml_case("zone-typo", "resources:\n  infra: aws/us-east-1/use1-az9\n",
              "aws: no zone use1-az9 (did you mean use1-az6?)"),
    yaml_case("impossible-max-hourly-cost",
              "resources:\n  accelerators: A100:8\n  max_hourly_cost: 0.01\n",
              "max_hourly_cost"),
    yaml_case("impossible-spot-without-spot-price",
              "resources:\n  accelerators: H100:8\n  infra: aws/ap-northeast-2\n"
              "  use_spot: true\n", "no spot price"),
    yaml_case("impossible-instance-type",
              "resources:\n  cloud: aws\n  instance_type: p9.imaginary\n", "p9.imaginary"),

    # --- unknown clouds --------------------------------------------------------
    yaml_case("cloud-typo", "resources:\n  cloud: awz\n", "did you mean aws", "resources.cloud"),
    yaml_case("cloud-typo-in-any-of", "resources:\n  any_of:\n    - cloud: gpc\n",
              "did you mean gcp", "resources.any_of[0].cloud"),
    yaml_case("infra-unknown-cloud", "resources:\n  infra: foo/bar\n",
              "unknown cloud 'foo'", "resources.infra"),

    # --- bad infra forms and conflicting pins --------------------------------------
    yaml_case("infra-empty-part", "resources:\n  infra: aws//x\n", "bad infra", "resources.infra"),
    yaml_case("infra-four-parts", "resources:\n  infra: a/b/c/d\n", "bad infra", "resources.infra"),
    yaml_case("infra-and-cloud", "resources:\n  infra: aws/us-east-1\n  cloud: gcp\n",
              "not both", "resources"),
    yaml_case("any-of-and-ordered",
              "resources:\n  any_of:\n    - cpus: 4\n  ordered:\n    - cpus: 8\n",
              "not both", "resources"),
    yaml_case("any-of-empty", "resources:\n  any_of: []\n", "any_of is empty", "resources"),

    # --- bad ports ---------------------------------------------------------------
    yaml_case("port-range-reversed", "resources:\n  ports: 9000-8000\n",
              "ends before it starts", "resources.ports"),
    yaml_case("port-too-high", "resources:\n  ports: 70000\n", "1-65535", "resources.ports"),
    yaml_case("port-three-parts", "resources:\n  ports: 1-2-3\n", "bad port", "resources.ports"),

    # --- unsafe names ----------------------------------------------------------
    yaml_case("name-path-traversal", "name: ../etc\nrun: echo\n", "unsafe task name", "name"),
    yaml_case("name-with-space", "name: a b\nrun: echo\n", "unsafe task name", "name"),
    yaml_case("name-leading-digit", "name: 1abc\nrun: echo\n", "unsafe task name", "name"),
    yaml_case("name-leading-dash", "name: -abc\nrun: echo\n", "unsafe task name", "name"),
    flag_case("cluster-name-unsafe", ("-c", "bad name!"), "unsafe cluster name"),

    # --- env names and values ------------------------------------------------------
    yaml_case("env-name-leading-digit", "envs:\n  1X: a\nrun: echo\n",
              "bad envs variable name", "envs"),
    yaml_case("secret-name-dash", "secrets:\n  A-B: x\nrun: echo\n",
              "bad secrets variable name", "secrets"),
    flag_case("env-flag-bad-name", ("--env", "BAD-NAME=1"), "bad environment variable name"),
    yaml_case("env-null-not-supplied", "envs:\n  FOO: null\nrun: echo\n",
              "has no value", "envs.FOO"),
    yaml_case("secret-null-not-supplied", "secrets:\n  TOKEN:\nrun: echo\n",
              "has no value", "secrets.TOKEN"),
    flag_case("env-flag-unset-var", ("--env", UNSET_VAR), "not set in your environment",
              env={UNSET_VAR: None}),

    # --- files -------------------------------------------------------------------
    cmd_case("task-file-missing", ("launch", "--dryrun", "{tmp}/no-such-task.yaml"),
             "not found", file="{tmp}/no-such-task.yaml"),
    cmd_case("task-path-is-directory", ("launch", "--dryrun", "{tmp}"),
             "is a directory", file="{tmp}"),
    yaml_case("workdir-missing", "workdir: ./no-such-dir\nrun: echo\n",
              "is not a directory", "workdir"),
    yaml_case("file-mounts-source-missing", "file_mounts:\n  /data: ./no-such-file\nrun: echo\n",
              "does not exist", "file_mounts"),
    # A relative destination is in the workdir on the node (as in SkyPilot), but cannot climb out.
    yaml_case("file-mounts-relative-dest-escapes", "file_mounts:\n  ../data: /tmp\nrun: echo\n",
              "must be a path inside the workdir, or absolute", "file_mounts"),
    # A bucket is mounted by the nodes at a path of their own: it must be absolute.
    yaml_case("file-mounts-bucket-relative-dest", "file_mounts:\n  data: s3://bucket/dir\nrun: echo\n",
              "of a bucket is not absolute", "mount buckets at an absolute path"),
    yaml_case("storage-object-relative-dest",
              "file_mounts:\n  data:\n    name: my-bucket\n    mode: MOUNT\nrun: echo\n",
              "of a bucket is not absolute", "mount buckets at an absolute path"),
    yaml_case("storage-object-bad-mode", "file_mounts:\n  /data:\n    name: b1\n    mode: MOUNTED\nrun: echo\n",
              "unknown mode 'MOUNTED'", "MOUNT, COPY, MOUNT_CACHED"),
    yaml_case("storage-object-unknown-field", "file_mounts:\n  /data:\n    name: b1\n    mdoe: COPY\nrun: echo\n",
              "file_mounts./data.mdoe: unknown field", "did you mean 'mode'"),
    yaml_case("storage-object-no-name", "file_mounts:\n  /data:\n    source: /tmp\nrun: echo\n",
              "needs a name", "add name: my-bucket"),
    yaml_case("storage-object-name-and-url",
              "file_mounts:\n  /data:\n    name: b1\n    source: s3://other/dir\nrun: echo\n",
              "both name a bucket", "leave out name"),
    yaml_case("file-mounts-dest-var-unset", "file_mounts:\n  $DEST/data: /tmp\nrun: echo\n",
              "the destination names $DEST, which envs does not set", "file_mounts"),

    # --- service -------------------------------------------------------------------
    yaml_case("service-replicas-and-policy",
              "service:\n  replicas: 2\n  replica_policy:\n    min_replicas: 1\n",
              "not both", "service"),
    yaml_case("service-max-below-min",
              "service:\n  replica_policy:\n    min_replicas: 3\n    max_replicas: 1\n",
              "below min_replicas", "service.replica_policy"),
    yaml_case("service-probe-path-no-slash", "service:\n  readiness_probe: health\n",
              "must start with '/'", "service.readiness_probe.path"),
    yaml_case("service-probe-mapping-path-no-slash",
              "service:\n  readiness_probe:\n    path: v1/models\n",
              "must start with '/'", "service.readiness_probe.path"),
    # (min_replicas and max_replicas without a target is valid: a fixed count, as in SkyServe.)
    yaml_case("service-qps-per-accelerator-zero",
              "service:\n  replica_policy:\n    min_replicas: 1\n    max_replicas: 3\n"
              "    target_qps_per_replica: {H100: 0}\n",
              "target_qps_per_replica.H100 must be greater than 0", "service.replica_policy.target_qps_per_replica"),
    yaml_case("service-policy-missing-min",
              "service:\n  replica_policy:\n    max_replicas: 3\n",
              "is required", "service.replica_policy.min_replicas"),
    yaml_case("service-replicas-negative", "service:\n  replicas: -1\n",
              "greater than or equal to 0", "service.replicas"),

    # --- runtime: section (needs the vllm and sglang runtime plugins) ----------------
    yaml_case("runtime-unknown-engine", "runtime:\n  engine: vlm\n  model: m\n",
              "installed runtimes: sglang, vllm", "runtime.engine"),
    yaml_case("runtime-engine-typo-suggests", "runtime:\n  engine: sglng\n  model: m\n",
              "did you mean sglang", "runtime.engine"),
    yaml_case("runtime-flag-skyk-sets", "runtime:\n  engine: vllm\n  model: m\n  args:\n"
              "    port: 9000\n", "skyk sets itself", "runtime.args.port"),
    yaml_case("runtime-tp-skyk-sets", "runtime:\n  engine: sglang\n  model: m\n  args:\n"
              "    tp_size: 2\n", "--tp-size is one of the flags skyk sets", "runtime.args.tp_size"),
    yaml_case("runtime-flag-not-integer", "runtime:\n  engine: vllm\n  model: m\n  args:\n"
              "    max_num_seqs: many\n", "expects a whole number", "runtime.args.max_num_seqs"),
    yaml_case("runtime-flag-bad-choice", "runtime:\n  engine: sglang\n  model: m\n  args:\n"
              "    dtype: fp3\n", "expects one of auto", "runtime.args.dtype"),
    yaml_case("runtime-flag-bad-fraction", "runtime:\n  engine: vllm\n  model: m\n  args:\n"
              "    gpu-memory-utilization: 90\n", "fraction", "runtime.args.gpu-memory-utilization"),
    yaml_case("runtime-unknown-field", "runtime:\n  engine: vllm\n  model: m\n  arg: {}\n",
              "did you mean 'args'", "runtime.arg"),
    yaml_case("runtime-missing-model", "runtime:\n  engine: vllm\n", "is required", "runtime.model"),
    yaml_case("runtime-shorthand", "runtime: vllm\n", "needs the engine and the model", "runtime"),
    yaml_case("runtime-version-number", "runtime:\n  engine: vllm\n  model: m\n  version: 0.10\n",
              "read as a number", "runtime.version"),
    yaml_case("runtime-api-key-not-secret", "runtime:\n  engine: vllm\n  model: m\n"
              "  api_key: MY_KEY\n", "not a secret of this task", "runtime.api_key"),
    yaml_case("runtime-multi-node", "num_nodes: 2\nruntime:\n  engine: vllm\n  model: m\n",
              "num_nodes is 2", "runtime"),
    yaml_case("runtime-disabled", "runtime:\n  engine: vllm\n  model: m\n",
              "disabled by SKYK_DISABLE_PLUGINS", "runtime.engine",
              env={"SKYK_DISABLE_PLUGINS": "vllm"}),

    # --- bad launch flags --------------------------------------------------------------
    flag_case("flag-gpus-word-count", ("--gpus", "A100:x"), "bad accelerator count"),
    flag_case("flag-gpus-unknown-name", ("--gpus", "A1OO"), "--gpus"),
    flag_case("flag-cpus-word", ("--cpus", "abc"), "--cpus"),
    flag_case("flag-memory-zero", ("--memory", "0"), "--memory"),
    flag_case("flag-num-nodes-zero", ("--num-nodes", "0"), "--num-nodes"),
    flag_case("flag-num-nodes-word", ("--num-nodes", "two"), "--num-nodes"),
    flag_case("flag-max-hourly-cost-word", ("--max-hourly-cost", "cheap"), "--max-hourly-cost"),
    flag_case("flag-max-hourly-cost-zero", ("--max-hourly-cost", "0"), "--max-hourly-cost"),
    flag_case("flag-cloud-typo", ("--cloud", "awz"), "--cloud"),
    flag_case("flag-infra-four-parts", ("--infra", "a/b/c/d"), "bad infra"),
    flag_case("flag-infra-and-cloud", ("--infra", "aws", "--cloud", "gcp"), "not both"),
    flag_case("flag-unknown", ("--bogus-flag",), "--bogus-flag"),
    flag_case("flag-output-choice", ("-o", "yaml"), "unknown choice 'yaml' (choose from table, json)"),
    flag_case("flag-output-typo", ("-o", "jsno"), "unknown choice 'jsno'; did you mean json?"),
    cmd_case("launch-without-task", ("launch", "--dryrun"), "TASK|CMD"),
    cmd_case("unknown-command", ("lanch", "task.yaml"), "unknown command 'lanch'; did you mean launch?"),
    cmd_case("unknown-command-far", ("xyzzy",), "unknown command 'xyzzy' (choose from check,"),

    # --- other commands ---------------------------------------------------------------
    cmd_case("show-gpus-unknown", ("show-gpus", "A1OO"), "did you mean A100"),
    cmd_case("show-gpus-offered-nowhere", ("show-gpus", "L40"), "no installed cloud offers L40"),
    cmd_case("show-gpus-bad-count", ("show-gpus", "A100:x"), "bad accelerator count"),
    cmd_case("show-gpus-count-not-offered", ("show-gpus", "A100:3"), "no cloud offers A100:3"),
    cmd_case("show-gpus-cloud-typo", ("show-gpus", "--cloud", "awz"), "did you mean aws"),
    cmd_case("check-cloud-typo", ("check", "awz"), "did you mean aws"),
    cmd_case("check-cloud-unknown", ("check", "nosuchcloud"), "unknown cloud 'nosuchcloud'"),
    cmd_case("catalog-refresh-missing-source",
             ("catalog", "refresh", "--source", "{tmp}/no-such-source"), "could not be refreshed",
             env={"SKYK_CATALOG_DIR": "{tmp}/catalogs"}),
    cmd_case("catalog-refresh-cloud-typo",
             ("catalog", "refresh", "--source", "{tmp}", "--cloud", "gpc"), "did you mean gcp",
             env={"SKYK_CATALOG_DIR": "{tmp}/catalogs"}),
]

#: An integer past what a float holds (and far past any bound): 400 digits.
HUGE = "1" * 400
#: A path component longer than NAME_MAX (255 bytes).
LONG_NAME = "n" * 300

#: Issue 11, points 12, 13 and 15: bad input that gave "internal error" or a wrong plan.
ISSUE_11_CASES = [
    # --- explicit YAML tags with bad values, over-long integers ------------------------
    yaml_case("tag-float-bad", "resources:\n  cpus: !!float abc\n", "cannot read 'abc' as float"),
    yaml_case("tag-bool-bad", "resources:\n  use_spot: !!bool maybe\n", "cannot read 'maybe' as bool"),
    yaml_case("tag-map-on-list", "resources: !!map [1]\n", "is tagged !!map but is not a mapping"),
    yaml_case("int-over-4300-digits", "num_nodes: " + "1" * 5000 + "\n", "4300 digits"),
    yaml_case("post-data-recursive-alias",
              "service:\n  readiness_probe:\n    path: /\n    post_data: &p {a: [*p]}\n",
              "recursive alias"),
    # --- numbers past a float, nan, and the bounds ------------------------------------
    yaml_case("num-nodes-2-pow-64", "num_nodes: 18446744073709551616\nrun: echo\n",
              "less than or equal to 1000", "num_nodes"),
    *(yaml_case(case_id, f"resources:\n  {line}\n", expect, f"resources.{line.split(':')[0]}")
      for case_id, line, expect in [
          ("cpus-huge", f"cpus: {HUGE}", "cpus must be at most"),
          ("memory-huge-text", f"memory: '{HUGE}+'", "memory must be at most"),
          ("memory-inf", "memory: .inf", "memory must be at most"),
          ("ports-huge", f"ports: {HUGE}", "outside 1-65535"),
          ("ports-huge-text", f"ports: '{HUGE}'", "outside 1-65535"),
          ("accelerator-count-huge", f"accelerators: {{A100: {HUGE}}}", "must be at most"),
          ("accelerator-count-nan", "accelerators: A100:nan", "bad accelerator count"),
          ("accelerator-count-nan-value", "accelerators: {A100: .nan}", "not a number"),
          ("autostop-huge", f"autostop: {HUGE}", "autostop must be at most"),
          ("autostop-huge-text", f"autostop: {HUGE}h", "bad autostop"),
      ]),
    flag_case("flag-num-nodes-huge", ("--num-nodes", HUGE), "--num-nodes"),
    flag_case("flag-gpus-nan", ("--gpus", "A100:nan"), "--gpus"),
    flag_case("flag-idle-minutes-nan", ("-i", "nan"), "idle-minutes"),
    cmd_case("show-gpus-nan", ("show-gpus", "A100:nan"), "bad accelerator count"),
    cmd_case("show-gpus-inf", ("show-gpus", "A100:inf"), "bad accelerator count"),
    # --- a misspelt cloud in one alternative while another leaves the cloud open -------
    yaml_case("cloud-typo-in-one-any-of", "resources:\n  any_of:\n    - cpus: 2\n    - cloud: awz\n",
              "did you mean aws", "resources.any_of[1].cloud"),
    yaml_case("cloud-typo-in-one-ordered",
              "resources:\n  ordered:\n    - infra: gpc\n    - cpus: 2\n",
              "did you mean gcp", "resources.ordered[0].infra"),
    # --- NUL bytes, paths the OS cannot hold, unknown users --------------------------
    yaml_case("nul-in-run", 'run: "echo \\0 hi"\n', "NUL character", "run"),
    yaml_case("nul-in-setup", 'setup: "a\\0"\nrun: echo\n', "NUL character", "setup"),
    yaml_case("nul-in-envs", 'envs:\n  A: "x\\0"\nrun: echo\n', "NUL character", "envs"),
    yaml_case("workdir-name-max", f"workdir: /tmp/{LONG_NAME}/x\n", "at most 255", "workdir"),
    yaml_case("file-mount-name-max", f"file_mounts:\n  /data: /tmp/{LONG_NAME}\n", "at most 255",
              "file_mounts"),
    yaml_case("file-mount-dest-name-max", f"file_mounts:\n  /{LONG_NAME}: /tmp\n", "at most 255",
              "file_mounts"),
    yaml_case("runtime-model-name-max",
              f"runtime:\n  engine: vllm\n  model: /models/{LONG_NAME}\n", "at most 255",
              "runtime.model"),
    yaml_case("workdir-unknown-user", "workdir: ~nosuchuser-skyk/x\n", "no user 'nosuchuser-skyk'",
              "workdir"),
    yaml_case("file-mount-unknown-user", "file_mounts:\n  /data: ~nosuchuser-skyk/x\n",
              "no user 'nosuchuser-skyk'", "file_mounts"),
    # --- other commands ---------------------------------------------------------------
    cmd_case("status-endpoint-superscript-port", ("status", "--endpoint", "²", "c1"),
             "port must be a number"),
    cmd_case("cancel-job-id-past-sqlite", ("cancel", "c1", "9223372036854775808"), "job id"),
    cmd_case("launch-json-without-dryrun", ("launch", "echo hi", "-o", "json", "-y"),
             "-o json prints the plan of a --dryrun"),
    cmd_case("cancel-no-job-ids", ("cancel", "c1"), "name the jobs of c1 to cancel"),
    cmd_case("cancel-ids-and-all", ("cancel", "c1", "3", "-a"), "give job ids or -a, not both"),
    cmd_case("logs-job-id-past-sqlite", ("logs", "c1", HUGE), "job id"),
    cmd_case("autostop-nan", ("autostop", "c1", "-i", "nan"), "not a number"),
    cmd_case("autostop-inf", ("autostop", "c1", "-i", "inf"), "at most"),
    cmd_case("catalog-refresh-empty-source", ("catalog", "refresh", "--source", ""),
             "--source is empty", env={"SKYK_CATALOG_DIR": "{tmp}/catalogs",
                                       "SKYK_CATALOG_SOURCE": "http://127.0.0.1:9/unreachable"}),
]
CASES += ISSUE_11_CASES


def _fill(text: str, values: dict[str, str]) -> str:
    for key, value in values.items():
        text = text.replace("{" + key + "}", value)
    return text


def test_case_ids_are_unique():
    ids = [param.id for param in CASES]
    assert len(ids) == len(set(ids))
    assert len(ids) >= 40


@pytest.mark.parametrize("case", CASES)
def test_bad_input_gives_one_line_with_hint(case: Case, skyk, tmp_path):
    task = tmp_path / "task.yaml"
    values = {"task": str(task), "tmp": str(tmp_path)}
    if case.yaml is None:
        args = [_fill(a, values) for a in case.args]
    else:
        if isinstance(case.yaml, bytes):
            task.write_bytes(case.yaml)
        else:
            task.write_text(case.yaml, encoding="utf-8")
        args = ["launch", "--dryrun", str(task), *case.args]
    env = {k: None if v is None else _fill(v, values) for k, v in case.env.items()}

    result = skyk(*args, env=env, cwd=tmp_path)

    shown = f"skyk {' '.join(args)}\nrc={result.returncode}\nstderr:\n{result.stderr}"
    assert result.returncode != 0, shown
    assert "Traceback" not in result.stderr + result.stdout, shown
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, shown
    line = lines[0]
    assert case.expect in line, shown
    assert "hint:" in line or "did you mean" in line, f"no hint\n{shown}"
    if case.file is not None:
        path = _fill(case.file, values)
        name = path.rstrip("/").rsplit("/", 1)[-1]
        assert path in line or name in line, f"file not named\n{shown}"
    if case.field_path is not None:
        assert case.field_path in line, f"field path {case.field_path!r} not named\n{shown}"


def test_the_readmes_sample_error_lines_are_what_skyk_prints(skyk, tmp_path):
    """Every ``skyk: error: task.yaml: ...`` line the README shows is skyk's real output for it."""
    import re

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    samples = re.findall(r"^skyk: error: task\.yaml: resources\.accelerators: unknown accelerator '(\w+)'.*$",
                         readme, flags=re.M)
    assert samples, "the README shows no sample error line"
    for name in samples:
        (tmp_path / "task.yaml").write_text(f"resources:\n  accelerators: {name}\n")
        shown = skyk("launch", "--dryrun", "task.yaml", cwd=tmp_path)
        [line] = [x for x in readme.splitlines() if x.startswith("skyk: error: task.yaml") and f"'{name}'" in x]
        assert shown.stderr.strip() == line
