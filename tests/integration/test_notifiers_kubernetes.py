"""The kubernetes notifier against the API server fake (tests/fakes/kubernetes.py) over HTTPS with a throwaway CA.

No cluster can be run here; the fake was written from the Kubernetes API docs, and one test checks it (and our
PATCH) against the real `kubectl rollout restart`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from rotator_plugins.notifiers.kubernetes import RESTARTED_AT, RESTARTED_FOR, KubernetesRolloutNotifier

from rotator import ComponentSetup, ConfigError, NotifyError, RotationEvent, TransientError
from rotator.registry import load_notifier
from rotator.testing import sample_event
from tests.fakes.kubernetes import FakeKubernetes
from tests.fakes.throwaway_ca import TlsFiles, make_throwaway_tls
from tests.servers.watch import unavailable

NS = "web"


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_throwaway_tls(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def kube(tls: TlsFiles) -> Iterator[FakeKubernetes]:
    fake = FakeKubernetes(tls).serve()
    yield fake
    fake.stop()


@pytest.fixture
def token(kube: FakeKubernetes, monkeypatch: pytest.MonkeyPatch) -> str:
    value = f"kube-token-{uuid.uuid4().hex}"
    kube.add_token(value, "system:serviceaccount:web:rotator", verbs={"get", "patch"}, namespaces={NS})
    monkeypatch.setenv("TEST_KUBE_TOKEN", value)
    return value


class Clock:
    """A fake monotonic clock that sleep() advances: waits take no real time and are counted."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def make(
    kube: FakeKubernetes, tls: TlsFiles, tmp_path: Path, clock: Clock | None = None, **options: Any
) -> KubernetesRolloutNotifier:
    setup = ComponentSetup(name="k8s", config_dir=tmp_path, state_dir=tmp_path / "state")
    opts: dict[str, Any] = {
        "api_server": kube.url,
        "token": "env:TEST_KUBE_TOKEN",
        "ca_bundle": str(tls.ca_cert),
        "namespace": NS,
        "targets": ["deployment/api"],
        **options,
    }
    clock = clock or Clock()
    return KubernetesRolloutNotifier(opts, setup, sleep=clock.sleep, clock=clock)


def event(kind: str = "credential.rotated") -> RotationEvent:
    return sample_event(kind)


def template_annotations(kube: FakeKubernetes, plural: str, name: str) -> dict[str, str]:
    annotations: dict[str, str] = kube.workload(plural, NS, name)["spec"]["template"]["metadata"]["annotations"]
    return annotations


def test_restart_patches_the_pod_template_like_kubectl(kube: FakeKubernetes, tls: TlsFiles, token: str, tmp_path: Path):
    kube.add_workload("deployments", NS, "api")
    before = kube.workload("deployments", NS, "api")
    ev = event()
    make(kube, tls, tmp_path)(ev)
    [patch] = kube.patches("api")
    assert patch.path == f"/apis/apps/v1/namespaces/{NS}/deployments/api"
    assert patch.content_type == "application/strategic-merge-patch+json"
    assert patch.user == "system:serviceaccount:web:rotator"  # the bearer token was sent and accepted
    assert patch.body == {
        "spec": {
            "template": {
                "metadata": {
                    "annotations": {
                        RESTARTED_AT: ev.rotated_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                        RESTARTED_FOR: f"credential.rotated {ev.run_id}",
                    }
                }
            }
        }
    }
    after = kube.workload("deployments", NS, "api")
    assert after["metadata"]["generation"] == before["metadata"]["generation"] + 1  # a new rollout
    assert datetime.strptime(template_annotations(kube, "deployments", "api")[RESTARTED_AT], "%Y-%m-%dT%H:%M:%SZ")
    assert token not in json.dumps([r.body for r in kube.requests])


def test_same_event_twice_restarts_once_and_a_rollback_restarts_again(
    kube: FakeKubernetes, tls: TlsFiles, token: str, tmp_path: Path
):
    kube.add_workload("deployments", NS, "api")
    ev = event()
    make(kube, tls, tmp_path)(ev)
    make(kube, tls, tmp_path)(ev)  # a new notifier object: a resumed daemon
    assert len(kube.patches("api")) == 1
    generation = kube.workload("deployments", NS, "api")["metadata"]["generation"]
    rolled_back = RotationEvent(**{**ev.__dict__, "kind": "credential.rolled_back"})
    make(kube, tls, tmp_path)(rolled_back)
    assert len(kube.patches("api")) == 2
    assert kube.workload("deployments", NS, "api")["metadata"]["generation"] == generation + 1
    assert template_annotations(kube, "deployments", "api")[RESTARTED_FOR] == f"credential.rolled_back {ev.run_id}"


def test_statefulsets_daemonsets_and_targets_in_other_namespaces(
    kube: FakeKubernetes, tls: TlsFiles, token: str, tmp_path: Path
):
    kube.add_token(token, verbs={"get", "patch"}, namespaces={NS, "jobs"})
    kube.add_workload("statefulsets", NS, "db")
    kube.add_workload("daemonsets", NS, "agent")
    kube.add_workload("deployments", "jobs", "worker")
    targets = ["statefulset/db", "ds/agent", {"kind": "deployment", "name": "worker", "namespace": "jobs"}]
    make(kube, tls, tmp_path, targets=targets)(event())
    paths = [p.path for p in kube.patches()]
    assert paths == [
        f"/apis/apps/v1/namespaces/{NS}/statefulsets/db",
        f"/apis/apps/v1/namespaces/{NS}/daemonsets/agent",
        "/apis/apps/v1/namespaces/jobs/deployments/worker",
    ]


def test_wait_for_rollout_polls_until_complete(kube: FakeKubernetes, tls: TlsFiles, token: str, tmp_path: Path):
    kube.rollout_polls = 3  # the fake reports the rollout in progress for three GETs
    kube.add_workload("deployments", NS, "api")
    kube.add_workload("statefulsets", NS, "db")
    clock = Clock()
    notifier = make(
        kube, tls, tmp_path, clock, targets=["deployment/api", "statefulset/db"], wait_for_rollout=True, poll_interval=2
    )
    notifier(event())
    assert clock.sleeps == [2, 2]  # two rounds in progress, the third complete
    for plural, name in (("deployments", "api"), ("statefulsets", "db")):
        status = kube.workload(plural, NS, name)["status"]
        assert status["updatedReplicas"] == 2 and status["observedGeneration"] == 2


def test_wait_timeout_is_transient_and_the_retry_does_not_patch_again(
    kube: FakeKubernetes, tls: TlsFiles, token: str, tmp_path: Path
):
    kube.rollout_polls = 1000
    kube.add_workload("deployments", NS, "api")
    clock = Clock()
    notifier = make(kube, tls, tmp_path, clock, wait_for_rollout=True, wait_timeout=30, poll_interval=10)
    ev = event()
    with pytest.raises(TransientError, match=r"not complete after 30s: deployments/api in web \(0 of 2 new replicas"):
        notifier(ev)
    assert len(clock.sleeps) == 3
    with pytest.raises(TransientError):
        notifier(ev)  # the engine's retry: waits again
    assert len(kube.patches("api")) == 1


def test_a_rollout_past_its_progress_deadline_fails(kube: FakeKubernetes, tls: TlsFiles, token: str, tmp_path: Path):
    kube.rollout_polls = 5
    kube.add_workload("deployments", NS, "api")
    kube.fail_rollout(NS, "api")
    with pytest.raises(NotifyError, match="exceeded its progress deadline"):
        make(kube, tls, tmp_path, wait_for_rollout=True)(event())


@pytest.mark.parametrize(
    ("workload", "match"),
    [
        ({"plural": "deployments", "paused": True}, "is paused"),
        ({"plural": "statefulsets", "update_strategy": "OnDelete"}, "OnDelete"),
    ],
)
def test_workloads_a_restart_would_not_roll_out_are_refused(
    kube: FakeKubernetes, tls: TlsFiles, token: str, tmp_path: Path, workload: dict[str, Any], match: str
):
    plural = workload.pop("plural")
    kube.add_workload(plural, NS, "api", **workload)
    with pytest.raises(NotifyError, match=match):
        make(kube, tls, tmp_path, targets=[f"{plural}/api"])(event())
    assert kube.patches() == []


def test_api_errors_are_mapped_and_never_show_the_token(
    kube: FakeKubernetes, tls: TlsFiles, token: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    kube.add_workload("deployments", NS, "api")
    errors: list[BaseException] = []

    def expect(kind: type[Exception], match: str, **options: Any) -> None:
        with pytest.raises(kind, match=match) as info:
            make(kube, tls, tmp_path, **options)(event())
        errors.append(info.value)

    expect(NotifyError, r'not found \(deployments.apps "missing" not found\)', targets=["deployment/missing"])
    kube.fail(409, "/deployments/api", method="PATCH")
    expect(TransientError, "409 Conflict")
    kube.fail(429, "/deployments/api", retry_after=3)
    expect(TransientError, "429 TooManyRequests, Retry-After 3s")
    kube.fail(503, "/deployments/api")
    expect(TransientError, "503 ServiceUnavailable")
    kube.fail(422, "/deployments/api", method="PATCH")
    expect(NotifyError, "refused it")
    reader = f"reader-{uuid.uuid4().hex}"
    kube.add_token(reader, "system:serviceaccount:web:reader", verbs={"get"})
    monkeypatch.setenv("TEST_KUBE_TOKEN", reader)
    expect(
        NotifyError,
        r'cannot patch resource "deployments" in API group "apps".*grant the service account verbs get and patch',
    )
    monkeypatch.setenv("TEST_KUBE_TOKEN", "not-a-known-token-" + uuid.uuid4().hex)
    expect(NotifyError, r"refused the token \(401 Unauthorized\)")
    for error in errors:
        assert token not in str(error) and reader not in str(error)


def test_tls_is_verified(kube: FakeKubernetes, tls: TlsFiles, token: str, tmp_path: Path):
    kube.add_workload("deployments", NS, "api")
    setup = ComponentSetup(name="k8s", config_dir=tmp_path, state_dir=tmp_path)
    notifier = KubernetesRolloutNotifier(
        {"api_server": kube.url, "token": "env:TEST_KUBE_TOKEN", "namespace": NS, "targets": ["deployment/api"]}, setup
    )  # no ca_bundle: the system CAs, which do not know the throwaway CA
    with pytest.raises(NotifyError, match="TLS verification"):
        notifier(event())
    assert kube.patches() == []


def test_in_cluster_defaults_and_a_rotated_token_file(
    kube: FakeKubernetes, tls: TlsFiles, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """In a pod: API server from KUBERNETES_SERVICE_HOST/PORT, token, CA and namespace from the service account
    directory; the token file is read at each call (the kubelet replaces it before it expires)."""
    account = tmp_path / "serviceaccount"
    account.mkdir()
    first, second = f"first-{uuid.uuid4().hex}", f"second-{uuid.uuid4().hex}"
    kube.add_token(first)
    (account / "token").write_text(first + "\n")
    shutil.copy(tls.ca_cert, account / "ca.crt")
    (account / "namespace").write_text("apps-ns")
    kube.add_workload("deployments", "apps-ns", "api")
    host, port = kube.url.removeprefix("https://").rsplit(":", 1)
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", host)
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", port)
    setup = ComponentSetup(name="k8s", config_dir=tmp_path, state_dir=tmp_path)
    notifier = KubernetesRolloutNotifier({"targets": ["deployment/api"]}, setup, service_account_dir=account)
    notifier(event())
    kube.tokens.pop(first)  # the old token expires...
    kube.add_token(second)
    (account / "token").write_text(second)  # ...after the kubelet wrote the new one
    notifier(event())
    assert [p.path for p in kube.patches()] == ["/apis/apps/v1/namespaces/apps-ns/deployments/api"] * 2


def test_options_are_validated_with_the_key_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    setup = ComponentSetup(name="k8s", config_dir=tmp_path, state_dir=tmp_path, config_file="rotator.toml")
    cases = [
        ({"targets": ["deployment/api"], "api_server": "https://k", "token": "abc"}, "notifiers.k8s.token"),
        ({"targets": ["pod/api"], "api_server": "https://k", "namespace": "x"}, "notifiers.k8s.targets"),
        ({"targets": ["deployment/api"], "api_server": "http://k", "namespace": "x"}, "notifiers.k8s.api_server"),
        ({"targets": ["deployment/api"], "namespace": "x"}, "notifiers.k8s.api_server"),
        ({"targets": ["deployment/api"], "api_server": "https://k"}, "notifiers.k8s.namespace"),
        ({"targets": ["deployment/api"], "api_server": "https://k", "namespace": "x", "wait": 1}, "notifiers.k8s.wait"),
    ]
    for options, key in cases:
        with pytest.raises(ConfigError) as info:
            load_notifier("kubernetes", options, setup, "notifiers.k8s")
        assert key in str(info.value), str(info.value)


def test_the_fake_and_our_patch_agree_with_kubectl(kube: FakeKubernetes, tls: TlsFiles, token: str, tmp_path: Path):
    """`kubectl rollout restart` against the fake: it accepts kubectl's requests, and kubectl sends the PATCH we
    send (path, content type, the restartedAt annotation in the pod template)."""
    if shutil.which("kubectl") is None:
        unavailable("kubectl is not installed (it checks the Kubernetes fake against the real client)")
    kube.add_workload("deployments", NS, "api")
    kube.add_workload("deployments", NS, "ours")
    env = {**os.environ, "KUBECONFIG": str(tmp_path / "no-kubeconfig"), "HOME": str(tmp_path)}
    argv = ["kubectl", "rollout", "restart", "deployment/api", "-n", NS, "--server", kube.url, "--token", token]
    argv += ["--certificate-authority", str(tls.ca_cert), "--cache-dir", str(tmp_path / "cache")]
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "deployment.apps/api restarted" in done.stdout
    make(kube, tls, tmp_path, targets=["deployment/ours"])(event())
    theirs, ours = kube.patches("api")[0], kube.patches("ours")[0]
    assert theirs.content_type == ours.content_type
    assert theirs.path.rsplit("/", 1)[0] == ours.path.rsplit("/", 1)[0]
    their_annotations = theirs.body["spec"]["template"]["metadata"]["annotations"]
    assert set(their_annotations) == {RESTARTED_AT}
    assert set(theirs.body) == set(ours.body) == {"spec"}
    assert RESTARTED_AT in ours.body["spec"]["template"]["metadata"]["annotations"]
    datetime.fromisoformat(their_annotations[RESTARTED_AT])  # RFC 3339, like ours
