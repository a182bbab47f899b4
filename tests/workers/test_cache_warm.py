"""cache_warm end to end: memcached, sidecar, API server and a real worker, on SQLite and
PostgreSQL (the worker loads the origins from the database).

The scenario is the runbook's: projects and rule sets are read (and so cached), an
operator clears both namespaces through AdminService, then asks WarmCache. The test's
own reference is what it did: the ids it created, and how often it read each project, so
the most-read plan it expects (a policy of the 3 most read projects) is computed here.
After the task succeeded, reads through the API of the warmed keys must be sidecar hits
(the hit counter rises by exactly the number of reads, misses do not), a project outside
the plan must be a miss, and ListCacheKeys must show exactly the warmed ids.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass

import grpc
import pytest
from agentic.admin.v1 import admin_pb2 as apb
from agentic.admin.v1 import admin_pb2_grpc
from agentic.cache.v1 import cache_pb2, cache_pb2_grpc
from agentic.compliance.v1 import rule_sets_pb2 as rpb
from agentic.compliance.v1 import rule_sets_pb2_grpc
from agentic.projects.v1 import projects_pb2 as ppb
from agentic.projects.v1 import projects_pb2_grpc
from agentic.tasks.v1 import tasks_pb2 as pb
from agentic.tasks.v1 import tasks_pb2_grpc
from google.rpc import code_pb2, error_details_pb2

from tests._identity import authorized_channel
from tests._processes import Memcached, free_port, start_sidecar
from tests._status import rich_status
from tests._support import REPO, postgres_database
from tests.workers._stack import TIMEOUT, private_vhost, stack, watch_to_end

SHIPPED = (REPO / "cache_sidecar" / "namespaces.toml").read_text()
# The shipped policy with a plan small enough to leave read projects out of it, and a
# warm rule on artifacts, which workers have no origin for.
POLICY = SHIPPED.replace(
    "warm = { most_read = 100, window_seconds = 3600 }",
    "warm = { most_read = 3, window_seconds = 3600 }",
).replace(
    'invalidate_keys_on = { "artifact.*" = "artifact_id" }',
    'invalidate_keys_on = { "artifact.*" = "artifact_id" }\nwarm = "all"',
)
assert POLICY.count("warm = ") == SHIPPED.count("warm = ") + 1, "the shipped policy moved"
assert "most_read = 3," in POLICY
# How often the test reads each project before the clear: the plan is the 3 most read.
READS = [5, 4, 3, 1, 1]


@dataclass
class Env:
    admin: admin_pb2_grpc.AdminServiceStub
    tasks: tasks_pb2_grpc.TaskServiceStub
    projects: projects_pb2_grpc.ProjectServiceStub
    rule_sets: rule_sets_pb2_grpc.RuleSetServiceStub
    sidecar: cache_pb2_grpc.CacheServiceStub


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def env(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    """memcached <- sidecar <- API server and one worker, on a database of the param."""
    workdir = tmp_path_factory.mktemp(f"warm-{request.param}")
    policy = workdir / "policy.toml"
    policy.write_text(POLICY)
    with ExitStack() as cleanup:
        memcached = Memcached(free_port(), workdir / "memcached.log")
        memcached.start()
        cleanup.callback(memcached.stop)
        sidecar = start_sidecar(workdir / "sidecar", [memcached], policy)
        cleanup.callback(sidecar.stop)
        database = (
            f"sqlite:///{workdir / 'tasks.db'}"
            if request.param == "sqlite"
            else cleanup.enter_context(postgres_database(workdir / "pg"))
        )
        broker = cleanup.enter_context(private_vhost())
        s = cleanup.enter_context(stack(workdir, broker, database))
        s.start_server(AGENTIC_CACHE_ADDRESS=sidecar.address)
        s.start_worker(concurrency=1, AGENTIC_CACHE_ADDRESS=sidecar.address)
        channel = authorized_channel(s.servers[0].address)
        cleanup.callback(channel.close)
        sidecar_channel = grpc.insecure_channel(sidecar.address)
        cleanup.callback(sidecar_channel.close)
        yield Env(
            admin=admin_pb2_grpc.AdminServiceStub(channel),
            tasks=tasks_pb2_grpc.TaskServiceStub(channel),
            projects=projects_pb2_grpc.ProjectServiceStub(channel),
            rule_sets=rule_sets_pb2_grpc.RuleSetServiceStub(channel),
            sidecar=cache_pb2_grpc.CacheServiceStub(sidecar_channel),
        )


def figures(env: Env, namespace: str) -> tuple[int, int]:
    """(hits, misses) of a namespace, from the sidecar's own Stats."""
    stats = env.sidecar.Stats(cache_pb2.StatsRequest(), timeout=TIMEOUT)
    (found,) = [n for n in stats.namespaces if n.namespace == namespace]
    return found.hits, found.misses


def listed(env: Env, namespace: str, page_size: int = 2) -> list[apb.CachedKey]:
    keys: list[apb.CachedKey] = []
    token = ""
    for _ in range(100):  # bounded: a handful of keys at 2 a page
        page = env.admin.ListCacheKeys(
            apb.ListCacheKeysRequest(namespace=namespace, page_size=page_size, page_token=token),
            timeout=TIMEOUT,
        )
        assert page.cache_enabled
        assert len(page.keys) <= page_size
        keys.extend(page.keys)
        token = page.next_page_token
        if not token:
            return keys
    raise AssertionError("ListCacheKeys never returned a last page")


def cached(env: Env, namespace: str, key: str) -> bytes:
    """The value the sidecar holds for a key (straight from the sidecar; a hit)."""
    read = env.sidecar.Get(
        cache_pb2.GetRequest(namespace=namespace, key=key.encode()), timeout=TIMEOUT
    )
    assert read.outcome == cache_pb2.OUTCOME_HIT, (namespace, key, read)
    value: bytes = read.value
    return value


def get_project(env: Env, project_id: str) -> None:
    env.projects.GetProject(ppb.GetProjectRequest(id=project_id), timeout=TIMEOUT)


def get_rule_set(env: Env, rule_set_id: str) -> None:
    env.rule_sets.GetRuleSet(rpb.GetRuleSetRequest(id=rule_set_id), timeout=TIMEOUT)


def test_warming_after_a_clear_makes_the_next_reads_of_warmed_keys_hits(env: Env) -> None:
    projects = [
        env.projects.CreateProject(
            ppb.CreateProjectRequest(project=ppb.Project(name=f"w-{uuid.uuid4().hex[:8]}")),
            timeout=TIMEOUT,
        ).project.id
        for _ in READS
    ]
    rule_sets = [
        env.rule_sets.CreateRuleSet(
            rpb.CreateRuleSetRequest(
                rule_set=rpb.RuleSet(
                    name=f"warm-{uuid.uuid4().hex[:8]}",
                    processes=[rpb.Process(id="SYS.1", name="Requirements Elicitation")],
                )
            ),
            timeout=TIMEOUT,
        ).rule_set.id
        for _ in range(3)
    ]
    for project_id, times in zip(projects, READS, strict=True):
        for _ in range(times):
            get_project(env, project_id)
    get_rule_set(env, rule_sets[0])  # the others were never read: "all" warms them too
    planned = projects[:3]  # the most read, by construction of READS
    # What the server cached (its origin); the worker's warm fills must be the same bytes.
    served = {
        (namespace, key): cached(env, namespace, key)
        for namespace, keys in (("projects", planned), ("rule_sets", rule_sets[:1]))
        for key in keys
    }

    for namespace in ("projects", "rule_sets"):
        cleared = env.admin.ClearCacheNamespace(
            apb.ClearCacheNamespaceRequest(namespace=namespace), timeout=TIMEOUT
        )
        assert cleared.cleared
        assert listed(env, namespace) == [], f"{namespace} still lists keys after the clear"

    task = env.admin.WarmCache(
        apb.WarmCacheRequest(namespaces=["projects", "rule_sets", "project_lists"]),
        timeout=TIMEOUT,
    ).task
    assert task.kind == pb.TASK_KIND_CACHE_WARM
    watch_to_end(env.tasks, task.id, timeout=60.0)
    done = env.tasks.GetTask(pb.GetTaskRequest(id=task.id), timeout=TIMEOUT).task
    assert done.state == pb.TASK_STATE_SUCCEEDED, done
    result = {n.namespace: n for n in done.cache_warm_result.namespaces}
    assert set(result) == {"projects", "rule_sets", "project_lists"}
    # project_lists has no warm rule: named, it is an all-zero entry.
    assert (result["project_lists"].policy, result["project_lists"].keys_considered) == (
        "none",
        0,
    )
    assert result["projects"].policy == "most_read:3/3600s"
    assert result["rule_sets"].policy == "all"
    for namespace, count in (("projects", 3), ("rule_sets", 3)):
        warmed = result[namespace]
        assert (warmed.keys_considered, warmed.keys_warmed) == (count, count), warmed
        assert (warmed.keys_already_cached, warmed.keys_not_stored) == (0, 0), warmed

    for (namespace, key), value in served.items():
        assert cached(env, namespace, key) == value, f"{namespace} {key}: other bytes"

    # ListCacheKeys shows exactly the warmed ids, as the callers' keys.
    for namespace, ids in (("projects", planned), ("rule_sets", rule_sets)):
        keys = listed(env, namespace)
        assert sorted(k.key for k in keys) == sorted(ids), namespace
        assert not any(k.hashed for k in keys)
        assert all(k.size_bytes > 0 and k.HasField("expire_time") for k in keys)

    # The next reads of warmed keys are hits: exactly one more hit per read, no miss.
    for namespace, ids, read in (
        ("projects", planned, get_project),
        ("rule_sets", rule_sets, get_rule_set),
    ):
        hits, misses = figures(env, namespace)
        for key in ids:
            read(env, key)
        assert figures(env, namespace) == (hits + len(ids), misses), namespace

    # A project outside the plan was not warmed: its read is a miss.
    hits, misses = figures(env, "projects")
    get_project(env, projects[3])
    assert figures(env, "projects") == (hits, misses + 1)

    # A second run finds everything it plans already cached and loads nothing.
    again = env.admin.WarmCache(apb.WarmCacheRequest(namespaces=["rule_sets"]), timeout=TIMEOUT)
    watch_to_end(env.tasks, again.task.id, timeout=60.0)
    second = env.tasks.GetTask(pb.GetTaskRequest(id=again.task.id), timeout=TIMEOUT).task
    assert second.state == pb.TASK_STATE_SUCCEEDED, second
    (rules,) = second.cache_warm_result.namespaces
    assert (rules.namespace, rules.keys_considered, rules.keys_already_cached) == (
        "rule_sets",
        3,
        3,
    )
    assert rules.keys_warmed == 0


def test_bad_namespaces_and_tokens_are_invalid_argument(env: Env) -> None:
    cases = [
        (
            lambda: env.admin.WarmCache(
                apb.WarmCacheRequest(namespaces=["projects", "nope"]), timeout=TIMEOUT
            ),
            {"namespaces[1]": "namespace.unknown"},
        ),
        (
            lambda: env.admin.ListCacheKeys(
                apb.ListCacheKeysRequest(namespace="nope"), timeout=TIMEOUT
            ),
            {"namespace": "namespace.unknown"},
        ),
        (
            lambda: env.admin.ListCacheKeys(
                apb.ListCacheKeysRequest(namespace="projects", page_token="garbage"),
                timeout=TIMEOUT,
            ),
            {"page_token": "page_token.invalid"},
        ),
    ]
    calls: list[tuple[Callable[[], object], dict[str, str]]] = cases
    for call, expected in calls:
        with pytest.raises(grpc.RpcError) as raised:
            call()
        assert raised.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert rich_status(raised.value).violation_reasons == expected


def test_a_warm_policy_without_a_worker_origin_fails_the_task_up_front(env: Env) -> None:
    # An empty spec means every namespace with a warm rule, artifacts included here.
    hits, misses = figures(env, "rule_sets")
    task = env.admin.WarmCache(apb.WarmCacheRequest(), timeout=TIMEOUT).task
    final = watch_to_end(env.tasks, task.id, timeout=60.0)[-1].task
    assert final.state == pb.TASK_STATE_FAILED, final
    assert final.error.code == code_pb2.FAILED_PRECONDITION
    info = error_details_pb2.ErrorInfo()
    assert final.error.details[0].Unpack(info)
    assert (info.reason, dict(info.metadata)) == ("WARM_ORIGIN_UNKNOWN", {"namespace": "artifacts"})
    # Up front: not one key of the namespaces it could warm was read.
    assert figures(env, "rule_sets") == (hits, misses)
