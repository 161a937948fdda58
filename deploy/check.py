#!/usr/bin/env python3
"""Offline checks of deploy/: the files parse, hang together, and keep the drain numbers straight.

Run by deploy/check.sh (which adds the checks that need docker, docker-compose, haproxy,
systemd-analyze and kubectl); alone: `python3 deploy/check.py`. Needs PyYAML; validates the
Kubernetes manifests against the API schema too when the `kubernetes` Python client (v35+, its
pydantic models) is importable. Prints one line per check; exits 1 on any failure.

The rule behind the numbers: after SIGTERM, ebb-node drains for at most EBB_DRAIN_DEADLINE, then
spends a fixed amount of exit work (termination grace + HTTP shutdown + Redis deregistration,
read from the node's sources). Whatever kills it after a timeout -- Kubernetes'
terminationGracePeriodSeconds, compose's stop_grace_period, systemd's TimeoutStopSec -- must wait
longer than both together, or a slow drain ends in SIGKILL and abnormal closes (1006).
"""

from __future__ import annotations

import json
import re
import shlex
import sys
from pathlib import Path

DEPLOY = Path(__file__).resolve().parent
ROOT = DEPLOY.parent

try:
    import yaml
except ImportError:  # check.sh tells how to get it
    print("SKIP  check.py: PyYAML is missing (pip install pyyaml, or apt-get install python3-yaml)")
    sys.exit(0)

failures: list[str] = []


def ok(msg: str) -> None:
    print(f"ok    {msg}")


def fail(msg: str) -> None:
    failures.append(msg)
    print(f"FAIL  {msg}")


def skip(msg: str) -> None:
    print(f"SKIP  {msg}")


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


# ---- durations ------------------------------------------------------------------------------

_UNITS = {
    "ns": 1e-9, "us": 1e-6, "ms": 1e-3, "msec": 1e-3,
    "s": 1, "sec": 1, "secs": 1, "second": 1, "seconds": 1,
    "m": 60, "min": 60, "mins": 60, "minute": 60, "minutes": 60,
    "h": 3600, "hr": 3600, "hour": 3600, "hours": 3600,
}


def seconds(text: str | int | float, bare_unit: float = 1.0) -> float:
    """`30s`, `100ms`, `1m 30s`, `1min30s`, `45` (bare numbers in `bare_unit` seconds)."""
    if isinstance(text, (int, float)):
        return float(text) * bare_unit
    s = str(text).strip()
    if re.fullmatch(r"\d+(\.\d+)?", s):
        return float(s) * bare_unit
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]+)", s)
    if not parts or re.sub(r"(\d+(?:\.\d+)?)\s*([a-z]+)|\s", "", s):
        raise ValueError(f"not a duration: {text!r}")
    total = 0.0
    for number, unit in parts:
        if unit not in _UNITS:
            raise ValueError(f"unknown unit {unit!r} in {text!r}")
        total += float(number) * _UNITS[unit]
    return total


def fmt(secs: float) -> str:
    return f"{secs:g}s"


# ---- what the node's sources say --------------------------------------------------------------

def rust_const(path: Path, name: str) -> float | None:
    """The value of `const NAME: Duration = Duration::from_secs(N)` (or from_millis, ZERO)."""
    try:
        text = path.read_text()
    except OSError:
        return None
    m = re.search(rf"\b{name}\s*:\s*Duration\s*=\s*Duration::(\w+)(?:\((\d+)\))?", text)
    if not m:
        return None
    kind, number = m.group(1), m.group(2)
    if kind == "ZERO":
        return 0.0
    scale = {"from_secs": 1, "from_millis": 1e-3}.get(kind)
    return None if scale is None or number is None else int(number) * scale


def node_facts() -> tuple[float, dict[str, float], set[str]]:
    """(exit work after the deadline, default timings, every EBB_* variable the code reads)."""
    exit_parts = {
        "termination grace": rust_const(ROOT / "node/src/drain.rs", "TERMINATE_GRACE"),
        "HTTP shutdown": rust_const(ROOT / "node/src/config.rs", "DEFAULT_HTTP_SHUTDOWN_TIMEOUT"),
        "Redis deregistration": rust_const(ROOT / "node/src/bin/ebb-node.rs", "AGENT_SHUTDOWN"),
    }
    fallback = {"termination grace": 1.0, "HTTP shutdown": 1.0, "Redis deregistration": 3.0}
    for part, value in exit_parts.items():
        if value is None:
            skip(f"cannot read the node's {part} time from its sources; assuming {fmt(fallback[part])}")
            exit_parts[part] = fallback[part]
    exit_work = sum(exit_parts.values())  # type: ignore[arg-type]
    ok("node exit work after the drain deadline: "
       + " + ".join(f"{fmt(v)} {k}" for k, v in exit_parts.items()) + f" = {fmt(exit_work)}")

    config = ROOT / "node/src/config.rs"
    defaults = {}
    for var, const, fallback_value in [
        ("EBB_DRAIN_DEADLINE", "DEFAULT_DRAIN_DEADLINE", 30.0),
        ("EBB_PROPAGATION_DELAY", "DEFAULT_PROPAGATION_DELAY", 0.0),
        ("EBB_CLOSE_SPREAD", "DEFAULT_CLOSE_SPREAD", 5.0),
        ("EBB_NOTICE_LEAD", "DEFAULT_NOTICE_LEAD", 0.5),
        ("EBB_INFLIGHT_TIMEOUT", "DEFAULT_INFLIGHT_TIMEOUT", 3.0),
        ("EBB_CLOSE_TIMEOUT", "DEFAULT_CLOSE_TIMEOUT", 5.0),
    ]:
        value = rust_const(config, const)
        defaults[var] = fallback_value if value is None else value

    known: set[str] = set()
    for crate in ("node", "coordinator", "proto"):
        for src in (ROOT / crate / "src").rglob("*.rs"):
            known.update(re.findall(r'"(EBB_[A-Z0-9_]+)"', src.read_text()))
    if not known:
        skip("no Rust sources beside deploy/: EBB_* variable names are not checked")
    return exit_work, defaults, known


EXIT_WORK, DEFAULTS, KNOWN_VARS = node_facts()


def agent_exit_work() -> float:
    """What ebb-agent does after its app has exited (or been killed at the deadline)."""
    value = rust_const(ROOT / "node/src/bin/ebb-agent/main.rs", "AGENT_SHUTDOWN")
    if value is None:
        skip("cannot read the agent's AGENT_SHUTDOWN from its sources; assuming 3s")
        return 3.0
    return value


AGENT_EXIT_WORK = agent_exit_work()


def check_agent_numbers(where: str, env: dict[str, str], kill_after: float, kill_name: str) -> None:
    """kill_after > the agent's drain deadline + its exit work."""
    try:
        deadline = seconds(env.get("EBB_DRAIN_DEADLINE", DEFAULTS["EBB_DRAIN_DEADLINE"]))
    except ValueError as e:
        fail(f"{where}: {e}")
        return
    need = deadline + AGENT_EXIT_WORK
    if kill_after > need:
        ok(f"{where}: {kill_name} {fmt(kill_after)} > EBB_DRAIN_DEADLINE {fmt(deadline)}"
           f" + agent exit work {fmt(AGENT_EXIT_WORK)} = {fmt(need)}")
    else:
        fail(f"{where}: {kill_name} {fmt(kill_after)} must exceed EBB_DRAIN_DEADLINE"
             f" {fmt(deadline)} + agent exit work {fmt(AGENT_EXIT_WORK)} = {fmt(need)}: the"
             " agent would be killed before it reports and deregisters")


def agent_app(words: list[str]) -> list[str]:
    """The app of an `ebb-agent [flags] -- APP...` command line (empty when there is none)."""
    return words[words.index("--") + 1:] if "--" in words else []


def check_numbers(where: str, env: dict[str, str], kill_after: float, kill_name: str) -> None:
    """kill_after > deadline + exit work, and the paced schedule fits in the deadline."""
    try:
        timing = {k: seconds(env[k]) if k in env else v for k, v in DEFAULTS.items()}
    except ValueError as e:
        fail(f"{where}: {e}")
        return
    deadline = timing["EBB_DRAIN_DEADLINE"]
    need = deadline + EXIT_WORK
    if kill_after > need:
        ok(f"{where}: {kill_name} {fmt(kill_after)} > EBB_DRAIN_DEADLINE {fmt(deadline)}"
           f" + exit work {fmt(EXIT_WORK)} = {fmt(need)}")
    else:
        fail(f"{where}: {kill_name} {fmt(kill_after)} must exceed EBB_DRAIN_DEADLINE"
             f" {fmt(deadline)} + exit work {fmt(EXIT_WORK)} = {fmt(need)}; a slow drain"
             " would be SIGKILLed")
    # Closes are spread over [notice lead, spread]: the last one comes at the later of the two.
    closes = max(timing["EBB_NOTICE_LEAD"], timing["EBB_CLOSE_SPREAD"])
    schedule = (timing["EBB_PROPAGATION_DELAY"] + closes
                + timing["EBB_INFLIGHT_TIMEOUT"] + timing["EBB_CLOSE_TIMEOUT"])
    if schedule <= deadline:
        ok(f"{where}: the paced drain fits its deadline: propagation + max(notice lead, spread)"
           f" + in-flight + close timeout = {fmt(schedule)} <= {fmt(deadline)}")
    else:
        fail(f"{where}: propagation + max(notice lead, spread) + in-flight + close timeout ="
             f" {fmt(schedule)} exceeds EBB_DRAIN_DEADLINE {fmt(deadline)}: the last clients would"
             " be cut, not closed")


def check_var_names(where: str, names) -> None:
    if not KNOWN_VARS:
        return
    unknown = sorted(n for n in names if n.startswith("EBB_") and n not in KNOWN_VARS)
    if unknown:
        fail(f"{where}: EBB_* variables no ebb binary reads (typos?): {', '.join(unknown)}")
    else:
        ok(f"{where}: every EBB_* variable is one ebb reads")


# ---- YAML ------------------------------------------------------------------------------------

def load_yaml(path: Path) -> list | None:
    try:
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    except yaml.YAMLError as e:
        fail(f"{rel(path)}: not valid YAML: {e}")
        return None
    ok(f"{rel(path)}: valid YAML ({len(docs)} document{'s' if len(docs) != 1 else ''})")
    return docs


# ---- Kubernetes -----------------------------------------------------------------------------

def kube_schema():
    """(validate(doc) -> error or None) using the kubernetes client's pydantic models, or None."""
    try:
        from kubernetes import client  # type: ignore
    except ImportError:
        skip("Kubernetes API schema: the `kubernetes` Python client is missing"
             " (deploy/check.sh --install-tools puts it in a private venv)")
        return None
    probe = getattr(client, "V1Container", None)
    if probe is None or not hasattr(probe, "model_validate"):
        skip("Kubernetes API schema: this `kubernetes` client predates its pydantic models (v35+)")
        return None

    def validate(doc: dict) -> str | None:
        version = doc["apiVersion"].split("/")[-1]
        cls = getattr(client, version[0].upper() + version[1:] + doc["kind"], None)
        if cls is None:
            return "no schema"
        try:
            cls.model_validate(doc)
        except Exception as e:  # pydantic.ValidationError
            return " / ".join(str(e).splitlines()[:4])
        return None

    return validate


def pod_spec(doc: dict) -> dict | None:
    kind = doc.get("kind")
    if kind in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"):
        return doc.get("spec", {}).get("template", {}).get("spec")
    if kind == "CronJob":
        return doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    if kind == "Pod":
        return doc.get("spec")
    return None


def pod_labels(doc: dict) -> dict:
    return doc.get("spec", {}).get("template", {}).get("metadata", {}).get("labels", {}) or {}


def is_agent_container(container: dict) -> bool:
    """A container whose entrypoint is ebb-agent, wrapping an app."""
    command = container.get("command") or []
    return bool(command) and command[0].endswith("ebb-agent")


def check_agent_container(where: str, container: dict, spec: dict, env: dict, names: set) -> None:
    """ebb-agent as a container's entrypoint: named by the pod, told where the app is, with an
    app after `--`, ready on the app's /health, and a grace period above its deadline."""
    words = (container.get("command") or []) + (container.get("args") or [])
    app = agent_app(words)
    if app:
        ok(f"{where}: ebb-agent runs the app {' '.join(app)!r} as its child")
    elif "--pid" in words:
        fail(f"{where}: --pid attaches to a process in the same container: there is none")
    else:
        fail(f"{where}: ebb-agent needs the app after `--` in its command or args")
    given = names | {w.split("=", 1)[0] for w in words if w.startswith("--")}
    for need, flag in (("EBB_NAME", "--name"), ("EBB_REDIS_URL", "--redis"),
                       ("EBB_SECRET", "--secret"), ("EBB_ADVERTISE_URL", "--advertise-url"),
                       ("EBB_HEALTH_URL", "--health-url")):
        if need not in given and flag not in given:
            fail(f"{where}: sets neither {need} nor {flag}")
    name_ref = next((v for v in container.get("env", []) if v["name"] == "EBB_NAME"), {})
    if (name_ref.get("valueFrom") or {}).get("fieldRef", {}).get("fieldPath") == "metadata.name":
        ok(f"{where}: EBB_NAME is the pod name (downward API)")
    else:
        fail(f"{where}: EBB_NAME should come from metadata.name (downward API)")
    health = env.get("EBB_HEALTH_URL", "")
    m = re.fullmatch(r"http://(127\.0\.0\.1|localhost):(\d+)(/.*)", health)
    readiness = (container.get("readinessProbe") or {}).get("httpGet") or {}
    ports = {p.get("name"): p.get("containerPort") for p in container.get("ports", []) or []}
    probe_port = ports.get(readiness.get("port"), readiness.get("port"))
    if m and readiness.get("path") == m.group(3) and str(probe_port) == m.group(2):
        ok(f"{where}: the readiness probe and the agent read the same health URL ({health})")
    else:
        fail(f"{where}: readinessProbe httpGet {readiness} and EBB_HEALTH_URL {health!r} must"
             " name the app's own /health on the pod (127.0.0.1) and the same port")
    liveness = (container.get("livenessProbe") or {}).get("httpGet") or {}
    if liveness.get("path") == readiness.get("path") and liveness:
        fail(f"{where}: a livenessProbe on the health URL would kill a draining app (503)")
    grace = spec.get("terminationGracePeriodSeconds", 30)
    check_agent_numbers(where, env, float(grace), "terminationGracePeriodSeconds")
    if spec.get("enableServiceLinks") is not False:
        fail(f"{where}: set enableServiceLinks: false (Service env vars land in the app's env)")


def is_node_container(container: dict, names: set[str]) -> bool:
    """An ebb-node container: configured by EBB_* variables, run by the image's entrypoint
    (ebb-node) or an explicit ebb-node; not the `ebb` CLI, not Redis."""
    command = container.get("command") or []
    runs_node = not command or command[0].endswith("ebb-node")
    return runs_node and any(n.startswith("EBB_") for n in names)


def container_env(container: dict, configmaps: dict, where: str) -> tuple[dict, set]:
    """The env a container gets from literal values and ConfigMaps, and every name it sets."""
    env: dict[str, str] = {}
    names: set[str] = set()
    for source in container.get("envFrom", []) or []:
        ref = source.get("configMapRef")
        if ref:
            cm = configmaps.get(ref["name"])
            if cm is None:
                fail(f"{where}: envFrom names ConfigMap {ref['name']!r}, which no manifest defines")
                continue
            env.update({k: str(v) for k, v in (cm.get("data") or {}).items()})
            names.update((cm.get("data") or {}).keys())
    for var in container.get("env", []) or []:
        names.add(var["name"])
        if "value" in var:
            env[var["name"]] = str(var["value"])
        ref = (var.get("valueFrom") or {}).get("configMapKeyRef")
        if ref:
            cm = configmaps.get(ref["name"])
            if cm is None or ref["key"] not in (cm.get("data") or {}):
                if not ref.get("optional"):
                    fail(f"{where}: {var['name']} refers to ConfigMap key"
                         f" {ref['name']}/{ref['key']}, which no manifest defines")
            else:
                env[var["name"]] = str(cm["data"][ref["key"]])
    return env, names


def check_kubernetes() -> None:
    k8s = DEPLOY / "k8s"
    files = sorted(p for p in k8s.rglob("*") if p.suffix in (".yaml", ".yml"))
    if not files:
        fail("deploy/k8s: no manifests")
        return
    docs: list[tuple[Path, dict]] = []
    for path in files:
        loaded = load_yaml(path)
        if loaded is None:
            continue
        for doc in loaded:
            if not isinstance(doc, dict):
                fail(f"{rel(path)}: a document that is not a mapping")
                continue
            docs.append((path, doc))

    validate = kube_schema()
    objects: list[tuple[Path, dict]] = []
    for path, doc in docs:
        where = rel(path)
        if doc.get("kind") == "Kustomization":
            for resource in doc.get("resources", []):
                if not (path.parent / resource).exists():
                    fail(f"{where}: resource {resource} does not exist")
            ok(f"{where}: Kustomization lists {len(doc.get('resources', []))} existing resources")
            continue
        meta = doc.get("metadata") or {}
        missing = [f for f, v in (("apiVersion", doc.get("apiVersion")), ("kind", doc.get("kind")),
                                  ("metadata.name", meta.get("name"))) if not v]
        if missing:
            fail(f"{where}: a document without {', '.join(missing)}")
            continue
        name = f"{where}: {doc['kind']}/{meta['name']}"
        if "namespace" in meta:
            fail(f"{name}: sets metadata.namespace; the manifests must stay namespace-agnostic")
        if validate:
            error = validate(doc)
            if error == "no schema":
                skip(f"{name}: no schema for {doc['apiVersion']} {doc['kind']}")
            elif error:
                fail(f"{name}: does not match the Kubernetes API: {error}")
            else:
                ok(f"{name}: matches the Kubernetes API schema")
        objects.append((path, doc))

    by_kind: dict[str, dict[str, dict]] = {}
    for path, doc in objects:
        # optional/ holds alternatives to the main files (same names on purpose).
        scope = "optional" if "optional" in path.parts else "main"
        by_kind.setdefault(doc["kind"], {})[f"{scope}:{doc['metadata']['name']}"] = doc
    configmaps = {k.split(":", 1)[1]: v for k, v in by_kind.get("ConfigMap", {}).items()}
    secrets = {k.split(":", 1)[1]: v for k, v in by_kind.get("Secret", {}).items()}
    services = [d for d in by_kind.get("Service", {}).values()]

    workloads = [(p, d) for p, d in objects if pod_spec(d) is not None]
    node_workloads = 0
    agent_workloads = 0
    for path, doc in workloads:
        where = f"{rel(path)}: {doc['kind']}/{doc['metadata']['name']}"
        spec = pod_spec(doc) or {}
        selector = (doc.get("spec", {}).get("selector") or {}).get("matchLabels")
        if selector is not None:
            labels = pod_labels(doc)
            if all(labels.get(k) == v for k, v in selector.items()):
                ok(f"{where}: selector matches the pod template's labels")
            else:
                fail(f"{where}: selector {selector} does not match the pod labels {labels}")
        if doc["kind"] == "StatefulSet":
            governing = doc["spec"].get("serviceName")
            if any(s["metadata"]["name"] == governing and s["spec"].get("clusterIP") == "None"
                   for s in services):
                ok(f"{where}: governing Service {governing} exists and is headless")
            else:
                fail(f"{where}: serviceName {governing!r} is not a headless Service here")
        for container in spec.get("containers", []):
            cwhere = f"{where} container {container['name']}"
            env, names = container_env(container, configmaps, cwhere)
            check_var_names(cwhere, names)
            for var in container.get("env", []) or []:
                ref = (var.get("valueFrom") or {}).get("secretKeyRef")
                if ref and not ref.get("optional"):
                    secret = secrets.get(ref["name"])
                    data = {**(secret or {}).get("data", {}), **(secret or {}).get("stringData", {})}
                    if secret is None or ref["key"] not in data:
                        fail(f"{cwhere}: needs Secret key {ref['name']}/{ref['key']},"
                             " which secret.example.yaml does not show")
            if is_agent_container(container):
                agent_workloads += 1
                check_agent_container(cwhere, container, spec, env, names)
                continue
            if not is_node_container(container, names):
                args = " ".join(container.get("args") or [])
                if "rolling-restart" in args:
                    check_rollout_args(cwhere, container.get("args") or [], configmaps)
                continue
            node_workloads += 1
            for required in ("EBB_NAME", "EBB_REDIS_URL", "EBB_SECRET"):
                if required not in names:
                    fail(f"{cwhere}: does not set {required}")
            name_ref = next((v for v in container.get("env", []) if v["name"] == "EBB_NAME"), {})
            if (name_ref.get("valueFrom") or {}).get("fieldRef", {}).get("fieldPath") == "metadata.name":
                ok(f"{cwhere}: EBB_NAME is the pod name (downward API)")
            else:
                fail(f"{cwhere}: EBB_NAME should come from metadata.name (downward API)")
            readiness = (container.get("readinessProbe") or {}).get("httpGet") or {}
            if readiness.get("path") == "/health":
                ok(f"{cwhere}: readiness probe is GET /health")
            else:
                fail(f"{cwhere}: needs a readinessProbe httpGet on /health")
            liveness = (container.get("livenessProbe") or {}).get("httpGet") or {}
            if liveness.get("path") == "/health":
                fail(f"{cwhere}: livenessProbe on /health would kill a draining node (503)")
            grace = spec.get("terminationGracePeriodSeconds", 30)
            check_numbers(cwhere, env, float(grace), "terminationGracePeriodSeconds")
            if spec.get("enableServiceLinks") is not False:
                fail(f"{where}: set enableServiceLinks: false (Service env vars land in EBB_*)")
        # Named ports used by probes exist.
        ports = {p.get("name") for c in spec.get("containers", []) for p in c.get("ports", []) or []}
        for container in spec.get("containers", []):
            for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
                for action in ("httpGet", "tcpSocket"):
                    port = ((container.get(probe) or {}).get(action) or {}).get("port")
                    if isinstance(port, str) and port not in ports:
                        fail(f"{where}: {probe} uses port {port!r}, which no container names")
    if node_workloads == 0:
        fail("deploy/k8s: no ebb-node workload found")
    if agent_workloads == 0:
        fail("deploy/k8s: no workload with ebb-agent as its entrypoint (ws-app-agent.yaml)")

    # Services and PodDisruptionBudgets select some workload's pods, on ports those pods name.
    for kind in ("Service", "PodDisruptionBudget"):
        for key, doc in by_kind.get(kind, {}).items():
            where = f"{kind}/{doc['metadata']['name']}"
            selector = doc["spec"].get("selector") or {}
            selector = selector.get("matchLabels", selector) if kind == "PodDisruptionBudget" else selector
            matched = [d for _, d in workloads
                       if selector and all(pod_labels(d).get(k) == v for k, v in selector.items())]
            if not matched:
                fail(f"{where}: selector {selector} matches no workload's pods")
                continue
            ok(f"{where}: selects the pods of {', '.join(sorted({d['kind'] + '/' + d['metadata']['name'] for d in matched}))}")
            if kind == "Service":
                named = {p.get("name") for d in matched for c in pod_spec(d)["containers"]
                         for p in c.get("ports", []) or []}
                for port in doc["spec"].get("ports", []):
                    target = port.get("targetPort")
                    if isinstance(target, str) and target not in named:
                        fail(f"{where}: targetPort {target!r} is no port the pods name")
    pdbs = list(by_kind.get("PodDisruptionBudget", {}).values())
    if any(str(p["spec"].get("maxUnavailable")) == "1" for p in pdbs):
        ok("PodDisruptionBudget: maxUnavailable 1")
    else:
        fail("deploy/k8s: no PodDisruptionBudget with maxUnavailable: 1")
    check_serve_kubernetes(workloads, services, configmaps)


def check_rollout_args(where: str, args: list[str], configmaps: dict) -> None:
    """A coordinator Job: --drain-timeout above the nodes' drain deadline."""
    value = None
    for i, arg in enumerate(args):
        if arg.startswith("--drain-timeout="):
            value = arg.split("=", 1)[1]
        elif arg == "--drain-timeout" and i + 1 < len(args):
            value = args[i + 1]
    drain_timeout = seconds(value) if value else 90.0
    deadlines = [seconds(cm["data"]["EBB_DRAIN_DEADLINE"]) for cm in configmaps.values()
                 if "EBB_DRAIN_DEADLINE" in (cm.get("data") or {})] or [DEFAULTS["EBB_DRAIN_DEADLINE"]]
    if drain_timeout > max(deadlines):
        ok(f"{where}: --drain-timeout {fmt(drain_timeout)} > EBB_DRAIN_DEADLINE {fmt(max(deadlines))}")
    else:
        fail(f"{where}: --drain-timeout {fmt(drain_timeout)} must exceed the nodes'"
             f" EBB_DRAIN_DEADLINE {fmt(max(deadlines))}")
    for arg in args:
        if arg.startswith("--exec") and "kubectl" in arg:
            ok(f"{where}: --exec uses kubectl (needs the deploy/Dockerfile.kubectl image and the Role)")


# ---- ebb serve ------------------------------------------------------------------------------
#
# `ebb serve` answers its probes, its Service and its published port only where it listens: its
# default (127.0.0.1:8090) is unreachable from outside a pod or container, so the listen address
# is checked against the ports that point at it. Its secrets come from a Secret (Kubernetes) or
# from the environment of whoever runs compose, never from the file.

SERVE_PATH = "/api/status"
SERVE_DEFAULT_LISTEN = "127.0.0.1:8090"
SERVE_SECRETS = ("EBB_SECRET", "EBB_API_TOKEN")


def runs_serve(command: list, args: list) -> bool:
    """`ebb [global flags] serve ...` (the `ebb` CLI, not ebb-node)."""
    words = [str(w) for w in [*command, *args]]
    return bool(words) and any(w.endswith("/ebb") or w == "ebb" for w in words[:1]) \
        and "serve" in words[1:]


def listen_of(args: list, env: dict) -> tuple[str, str]:
    """(where it comes from, `host:port`): `--listen` in args, EBB_SERVE_LISTEN, or the default."""
    args = [str(a) for a in args]
    for i, arg in enumerate(args):
        if arg.startswith("--listen="):
            return "--listen", arg.split("=", 1)[1]
        if arg == "--listen" and i + 1 < len(args):
            return "--listen", args[i + 1]
    if env.get("EBB_SERVE_LISTEN"):
        return "EBB_SERVE_LISTEN", str(env["EBB_SERVE_LISTEN"])
    return "the default", SERVE_DEFAULT_LISTEN


def split_listen(addr: str) -> tuple[str, int] | None:
    m = re.fullmatch(r"\[?([^\]]*)\]?:(\d+)", addr.strip())
    return (m.group(1), int(m.group(2))) if m else None


def reachable_listen(where: str, source: str, addr: str) -> int | None:
    """The port, when `addr` is reachable from outside the pod or container; fails otherwise."""
    split = split_listen(addr)
    if split is None:
        fail(f"{where}: {source} {addr!r} is not host:port")
        return None
    host, port = split
    if host in ("127.0.0.1", "localhost", "::1"):
        fail(f"{where}: listens on {addr} ({source}): loopback, out of reach of probes, Services"
             " and published ports; set EBB_SERVE_LISTEN=0.0.0.0:<port>")
        return None
    return port


def check_serve_kubernetes(workloads: list, services: list, configmaps: dict) -> None:
    found = 0
    for path, doc in workloads:
        spec = pod_spec(doc) or {}
        where = f"{rel(path)}: {doc['kind']}/{doc['metadata']['name']}"
        for container in spec.get("containers", []):
            if not runs_serve(container.get("command") or [], container.get("args") or []):
                continue
            found += 1
            cwhere = f"{where} container {container['name']}"
            replicas = doc.get("spec", {}).get("replicas", 1)
            if doc["kind"] == "Deployment" and replicas >= 2:
                ok(f"{cwhere}: ebb serve, {replicas} replicas: a leader and a standby that takes over")
            else:
                fail(f"{cwhere}: ebb serve should be a Deployment of 2+ replicas (a standby takes"
                     f" over a dead leader's rollout), not a {doc['kind']} of {replicas}")
            env, _ = container_env(container, configmaps, cwhere)
            source, addr = listen_of(container.get("args") or [], env)
            port = reachable_listen(cwhere, source, addr)
            ports = {p.get("name"): p.get("containerPort") for p in container.get("ports", []) or []}
            readiness = (container.get("readinessProbe") or {}).get("httpGet") or {}
            probe_port = ports.get(readiness.get("port"), readiness.get("port"))
            if readiness.get("path") != SERVE_PATH:
                fail(f"{cwhere}: needs a readinessProbe httpGet on {SERVE_PATH} (503 while Redis is"
                     " unreachable)")
            elif port is not None and probe_port != port:
                fail(f"{cwhere}: the readiness probe asks port {probe_port}, ebb serve listens on"
                     f" {addr} ({source})")
            elif port is not None:
                ok(f"{cwhere}: readiness GET {SERVE_PATH} on port {port}, where it listens"
                   f" ({source} {addr})")
            liveness = (container.get("livenessProbe") or {}).get("httpGet") or {}
            if liveness.get("path") == SERVE_PATH:
                fail(f"{cwhere}: a livenessProbe on {SERVE_PATH} restarts every replica when Redis"
                     " is away")
            by_name = {v["name"]: v for v in container.get("env", []) or []}
            redis = by_name.get("EBB_REDIS_URL", {})
            from_config = (redis.get("valueFrom") or {}).get("configMapKeyRef") or any(
                "EBB_REDIS_URL" in (configmaps.get(src.get("configMapRef", {}).get("name"), {})
                                    .get("data") or {})
                for src in container.get("envFrom", []) or [])
            if from_config:
                ok(f"{cwhere}: EBB_REDIS_URL (--redis) from a ConfigMap")
            else:
                fail(f"{cwhere}: EBB_REDIS_URL (--redis) should come from a ConfigMap")
            for name in SERVE_SECRETS:
                var = by_name.get(name)
                if var is None:
                    fail(f"{cwhere}: does not set {name}")
                elif "value" in var or not (var.get("valueFrom") or {}).get("secretKeyRef"):
                    fail(f"{cwhere}: {name} must come from a Secret (secretKeyRef), not the manifest")
                else:
                    ref = var["valueFrom"]["secretKeyRef"]
                    ok(f"{cwhere}: {name} from Secret {ref['name']}/{ref['key']}"
                       + (" (optional)" if ref.get("optional") else ""))
            if port is None:
                continue
            labels = pod_labels(doc)
            reaching = []
            for svc in services:
                selector = svc["spec"].get("selector") or {}
                if not selector or not all(labels.get(k) == v for k, v in selector.items()):
                    continue
                for sp in svc["spec"].get("ports", []):
                    target = sp.get("targetPort", sp.get("port"))
                    if ports.get(target, target) == port:
                        reaching.append(f"Service/{svc['metadata']['name']} port {sp.get('port')}")
            if reaching:
                ok(f"{cwhere}: the API is reached through {', '.join(reaching)}")
            else:
                fail(f"{cwhere}: no Service targets the API's port {port}")
    if found == 0:
        fail("deploy/k8s: no `ebb serve` workload found")


def check_serve_compose(services: dict, where_file: str) -> None:
    found = 0
    for name, service in sorted(services.items()):
        command = service.get("command") or []
        entrypoint = service.get("entrypoint") or []
        if isinstance(command, str):
            command = shlex.split(command)
        if isinstance(entrypoint, str):
            entrypoint = shlex.split(entrypoint)
        if not runs_serve(entrypoint, command):
            continue
        found += 1
        where = f"{where_file}: service {name} (ebb serve)"
        env = service.get("environment") or {}
        if isinstance(env, list):
            env = dict(e.split("=", 1) if "=" in e else (e, None) for e in env)
        check_var_names(where, env.keys())
        if service.get("restart") in ("always", "unless-stopped"):
            ok(f"{where}: restart {service['restart']}")
        else:
            fail(f"{where}: restart must be always or unless-stopped (got {service.get('restart')!r})")
        if "EBB_REDIS_URL" in env or any(str(c).startswith("--redis") for c in command):
            ok(f"{where}: --redis from EBB_REDIS_URL={env.get('EBB_REDIS_URL')}")
        else:
            fail(f"{where}: no --redis / EBB_REDIS_URL")
        for secret in SERVE_SECRETS:
            if secret not in env:
                fail(f"{where}: does not pass {secret} on")
            elif env[secret] is not None:
                fail(f"{where}: {secret} has a value in the file; leave it empty (`{secret}:`) so it"
                     " comes from the environment of whoever runs compose")
        if all(env.get(s, "") is None for s in SERVE_SECRETS):
            ok(f"{where}: {' and '.join(SERVE_SECRETS)} passed on from the environment, not in the file")
        source, addr = listen_of(command, {k: v for k, v in env.items() if v is not None})
        port = reachable_listen(where, source, addr)
        if port is None:
            continue
        published = []
        for mapping in service.get("ports") or []:
            text = str(mapping.get("target") if isinstance(mapping, dict) else mapping)
            container_port = text.split("/")[0].rsplit(":", 1)[-1]
            if container_port == str(port):
                published.append(str(mapping if not isinstance(mapping, dict) else mapping))
        if published:
            ok(f"{where}: listens on {addr} ({source}), published as {', '.join(published)}")
        else:
            fail(f"{where}: listens on port {port} ({source}), which no `ports:` entry publishes")
    if found == 0:
        fail(f"{where_file}: no `ebb serve` service")


def check_serve_systemd() -> None:
    unit = DEPLOY / "systemd/ebb-serve.service"
    where = rel(unit)
    if not unit.exists():
        fail(f"{where} is missing")
        return
    s = unit_settings(unit)
    exec_start = " ".join(s.get("ExecStart", []))
    if runs_serve(shlex.split(exec_start), []):
        ok(f"{where}: ExecStart runs ebb serve")
    else:
        fail(f"{where}: ExecStart must run `ebb serve` (got {exec_start!r})")
    for key, want in (("Restart", "always"), ("KillSignal", "SIGTERM")):
        if s.get(key, [""])[-1] == want:
            ok(f"{where}: {key}={want}")
        else:
            fail(f"{where}: {key} must be {want} (a standby must stay up to take over)")
    files = s.get("EnvironmentFile", [])
    if any(f.lstrip("-") == "/etc/ebb/common.env" for f in files):
        ok(f"{where}: EnvironmentFile /etc/ebb/common.env (Redis, cluster, secret: the nodes' own)")
    else:
        fail(f"{where}: expected EnvironmentFile=/etc/ebb/common.env")
    inline = [e for e in s.get("Environment", []) if any(x in e for x in SERVE_SECRETS)]
    if inline:
        fail(f"{where}: secrets in Environment= are readable by any user (systemctl show); put"
             f" them in a 0600 EnvironmentFile: {inline}")
    example = DEPLOY / "systemd/serve.env.example"
    if example.exists():
        env = read_env_file(example)
        check_var_names(rel(example), env.keys())
        source, addr = listen_of(shlex.split(exec_start), env)
        if split_listen(addr):
            ok(f"{rel(example)}: ebb serve listens on {addr} ({source})")
        else:
            fail(f"{rel(example)}: {source} {addr!r} is not host:port")
        if any(f.lstrip("-") == "/etc/ebb/serve.env" for f in files):
            ok(f"{where}: EnvironmentFile /etc/ebb/serve.env ({example.name}: the API token, the address)")
        else:
            fail(f"{where}: {example.name} is shown but the unit reads no /etc/ebb/serve.env")


# ---- Compose --------------------------------------------------------------------------------

def check_compose() -> None:
    path = DEPLOY / "compose.yaml"
    docs = load_yaml(path)
    if not docs:
        return
    text = path.read_text()
    compose = docs[0]
    services = compose.get("services") or {}
    for var in ("EBB_NODE_IMAGE", "EBB_REDIS_IMAGE"):
        if re.search(r"\$\{" + var + r":-[^}]+\}", text):
            ok(f"{rel(path)}: image name from ${{{var}:-default}}")
        else:
            fail(f"{rel(path)}: images must come from ${{{var}:-default}}")
    nodes = {}
    for name, service in services.items():
        command = service.get("command") or []
        if isinstance(command, str):
            command = shlex.split(command)
        if "--name" in command:
            nodes[name] = (service, command[command.index("--name") + 1])
    if len(nodes) < 2:
        fail(f"{rel(path)}: expected several node services (with --name), found {sorted(nodes)}")
    names = [n for _, n in nodes.values()]
    if len(set(names)) != len(names):
        fail(f"{rel(path)}: node names repeat: {names}")
    for name, (service, node_name) in sorted(nodes.items()):
        where = f"{rel(path)}: service {name} (--name {node_name})"
        if service.get("restart") in ("always", "unless-stopped"):
            ok(f"{where}: restart {service['restart']}: an exit after a drain is restarted")
        else:
            fail(f"{where}: restart must be always or unless-stopped (got {service.get('restart')!r});"
                 " otherwise a drained node never comes back and the rollout stops")
        env = service.get("environment") or {}
        if isinstance(env, list):
            env = dict(e.split("=", 1) if "=" in e else (e, None) for e in env)
        check_var_names(where, env.keys())
        env = {k: v for k, v in env.items() if v is not None}
        if "stop_grace_period" not in service:
            fail(f"{where}: no stop_grace_period (Docker's default 10s would SIGKILL a drain)")
            continue
        try:
            grace = seconds(service["stop_grace_period"])
        except ValueError as e:
            fail(f"{where}: {e}")
            continue
        check_numbers(where, env, grace, "stop_grace_period")
        if "redis" not in " ".join(service.get("command") or []) and "EBB_REDIS_URL" not in env:
            fail(f"{where}: no --redis / EBB_REDIS_URL")
    check_serve_compose(services, rel(path))


# ---- systemd --------------------------------------------------------------------------------

def unit_settings(path: Path) -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line[0] in "#;[":
            continue
        key, _, value = line.partition("=")
        settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def read_env_file(path: Path) -> dict[str, str]:
    env = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            env[key.strip()] = value.strip().strip('"')
    return env


def check_systemd() -> None:
    unit = DEPLOY / "systemd/ebb-node@.service"
    if not unit.exists():
        fail("deploy/systemd/ebb-node@.service is missing")
        return
    s = unit_settings(unit)
    where = rel(unit)
    exec_start = " ".join(s.get("ExecStart", []))
    if "--name %i" in exec_start:
        ok(f"{where}: the instance name is the node name (--name %i)")
    else:
        fail(f"{where}: ExecStart must pass --name %i")
    for key, want in (("Restart", "always"), ("KillSignal", "SIGTERM")):
        if s.get(key, [""])[-1] == want:
            ok(f"{where}: {key}={want}")
        else:
            fail(f"{where}: {key} must be {want}")
    files = s.get("EnvironmentFile", [])
    if any("%i" in f for f in files) and any("common.env" in f for f in files):
        ok(f"{where}: EnvironmentFile common.env and %i.env")
    else:
        fail(f"{where}: expected EnvironmentFile=/etc/ebb/common.env and /etc/ebb/%i.env")
    timeout = s.get("TimeoutStopSec") or s.get("TimeoutSec")
    if not timeout:
        fail(f"{where}: no TimeoutStopSec (systemd's default 90s is only by luck enough)")
        return
    env_example = DEPLOY / "systemd/common.env.example"
    env = read_env_file(env_example) if env_example.exists() else {}
    check_var_names(rel(env_example), env.keys())
    check_numbers(f"{where} with {env_example.name}", env, seconds(timeout[-1]), "TimeoutStopSec")
    rollout = DEPLOY / "systemd/ebb-rolling-restart.service"
    if rollout.exists():
        r = unit_settings(rollout)
        if r.get("Type", [""])[-1] == "oneshot" and "rolling-restart" in " ".join(r.get("ExecStart", [])):
            ok(f"{rel(rollout)}: a oneshot running ebb rolling-restart")
        else:
            fail(f"{rel(rollout)}: expected Type=oneshot and ExecStart=... ebb rolling-restart")
    check_serve_systemd()
    check_agent_systemd()


def check_agent_systemd() -> None:
    unit = DEPLOY / "systemd/ebb-agent@.service"
    where = rel(unit)
    if not unit.exists():
        fail(f"{where} is missing")
        return
    s = unit_settings(unit)
    words = shlex.split(" ".join(s.get("ExecStart", [])))
    if words and words[0].endswith("ebb-agent") and "--name" in words and "%i" in words:
        ok(f"{where}: ExecStart runs ebb-agent --name %i")
    else:
        fail(f"{where}: ExecStart must run ebb-agent --name %i")
    app = agent_app(words)
    if app and app[0].startswith("/"):
        ok(f"{where}: the app {' '.join(app)!r} is the agent's child (an absolute path)")
    else:
        fail(f"{where}: ExecStart needs the app after `--`, by its absolute path")
    for key, want in (("Restart", "always"), ("KillSignal", "SIGTERM"), ("KillMode", "mixed")):
        if s.get(key, [""])[-1] == want:
            ok(f"{where}: {key}={want}")
        else:
            fail(f"{where}: {key} must be {want} (the agent drains the app; systemd must not"
                 " signal the app behind its back)")
    if s.get("MemoryDenyWriteExecute", ["no"])[-1] in ("yes", "true", "1"):
        fail(f"{where}: MemoryDenyWriteExecute breaks JIT runtimes (Node.js, the JVM)")
    files = s.get("EnvironmentFile", [])
    if any("common.env" in f for f in files) and any("%i" in f for f in files):
        ok(f"{where}: EnvironmentFile common.env and %i.env")
    else:
        fail(f"{where}: expected EnvironmentFile=/etc/ebb/common.env and /etc/ebb/%i.env")
    example = DEPLOY / "systemd/agent.env.example"
    env = read_env_file(DEPLOY / "systemd/common.env.example")
    if example.exists():
        own = read_env_file(example)
        check_var_names(rel(example), own.keys())
        env.update(own)
        for need in ("EBB_ADVERTISE_URL", "EBB_HEALTH_URL"):
            if need not in env:
                fail(f"{rel(example)}: does not set {need}")
    else:
        fail(f"{rel(example)} is missing")
    timeout = s.get("TimeoutStopSec") or s.get("TimeoutSec")
    if not timeout:
        fail(f"{where}: no TimeoutStopSec")
        return
    check_agent_numbers(f"{where} with common.env", env, seconds(timeout[-1]), "TimeoutStopSec")


# ---- Dockerfile -----------------------------------------------------------------------------

INSTRUCTIONS = {"FROM", "RUN", "CMD", "LABEL", "MAINTAINER", "EXPOSE", "ENV", "ADD", "COPY",
                "ENTRYPOINT", "VOLUME", "USER", "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL",
                "HEALTHCHECK", "SHELL"}


def dockerfile_instructions(text: str) -> list[tuple[int, str, str]]:
    """(line, INSTRUCTION, arguments), with continuations joined and comments dropped."""
    out, buf, start = [], "", 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.rstrip()
        if not buf and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if buf and line.lstrip().startswith("#"):
            continue  # a comment inside a continued instruction
        if not buf:
            start = number
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        word, _, args = buf.strip().partition(" ")
        out.append((start, word.upper() if word.upper() in INSTRUCTIONS else word, args.strip()))
        buf = ""
    if buf:
        out.append((start, "<unterminated>", buf))
    return out


def dockerfile_stages(path: Path) -> list[dict] | None:
    """The stages of a Dockerfile, after checking each instruction; None on a failure."""
    where = rel(path)
    instructions = dockerfile_instructions(path.read_text())
    bad = [(n, w) for n, w, _ in instructions if w not in INSTRUCTIONS]
    for n, w in bad:
        fail(f"{where}:{n}: unknown instruction {w!r}")
    if bad:
        return None
    ok(f"{where}: {len(instructions)} instructions, all known")
    stages: list[dict] = []
    good = True
    for n, word, args in instructions:
        if word == "FROM":
            m = re.fullmatch(r"(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?", args, re.IGNORECASE)
            if not m:
                fail(f"{where}:{n}: cannot read FROM {args}")
                return None
            stages.append({"base": m.group(1), "name": (m.group(2) or "").lower(), "lines": []})
            continue
        if not stages:
            if word != "ARG":
                fail(f"{where}:{n}: {word} before the first FROM")
                return None
            continue
        stages[-1]["lines"].append((n, word, args))
        if word in ("CMD", "ENTRYPOINT", "SHELL") and args.startswith("["):
            try:
                json.loads(args)
            except ValueError:
                good = False
                fail(f"{where}:{n}: {word} is neither valid JSON nor shell form: {args}")
        if word == "COPY":
            source = re.search(r"--from=(\S+)", args)
            known = {s["name"] for s in stages[:-1]}
            if source and source.group(1).lower() not in known and not source.group(1).isdigit():
                good = False
                fail(f"{where}:{n}: COPY --from={source.group(1)} names no earlier stage")
        if word == "RUN" and args.startswith("--mount"):
            good = False
            fail(f"{where}:{n}: RUN --mount needs BuildKit; keep the legacy builder working")
        if word == "HEALTHCHECK" and args.upper() != "NONE":
            good = False
            fail(f"{where}:{n}: HEALTHCHECK {args}: the image has no HTTP client to run it")
    if good:
        ok(f"{where}: stages {', '.join(s['name'] or '(unnamed)' for s in stages)};"
           " JSON forms parse, COPY --from names earlier stages")
    return stages


def check_dockerfile() -> None:
    path = DEPLOY / "Dockerfile"
    where = rel(path)
    if not path.exists():
        fail(f"{where} is missing")
        return
    stages = dockerfile_stages(path)
    if not stages:
        return
    names = [s["name"] for s in stages]

    def chain(stage: dict) -> list[dict]:
        """The stage and the stages it is built FROM, nearest first."""
        out = [stage]
        while out[-1]["base"].lower() in names[: stages.index(out[-1])]:
            out.append(stages[names.index(out[-1]["base"].lower())])
        return out

    final = chain(stages[-1])

    def last(word: str) -> str | None:
        for stage in final:
            for _, w, args in reversed(stage["lines"]):
                if w == word:
                    return args
        return None

    if final[-1]["base"].startswith("debian:bookworm-slim"):
        ok(f"{where}: the default target (last stage) runs on {final[-1]['base']}")
    else:
        fail(f"{where}: the default target should run on debian:bookworm-slim, not {final[-1]['base']}")
    if stages[0]["base"].startswith("rust:"):
        ok(f"{where}: built in {stages[0]['base']}")
    else:
        fail(f"{where}: the first stage should build in rust:1-bookworm, not {stages[0]['base']}")
    user = last("USER")
    if user and user.split(":")[0] not in ("0", "root"):
        ok(f"{where}: the default target runs as USER {user}")
    else:
        fail(f"{where}: the default target must set a non-root USER (got {user!r})")
    entrypoint = last("ENTRYPOINT") or ""
    if "ebb-node" in entrypoint:
        ok(f"{where}: ENTRYPOINT {entrypoint}")
    else:
        fail(f"{where}: the default target's ENTRYPOINT must be ebb-node (got {entrypoint!r})")
    exposed = " ".join(a for s in final for _, w, a in s["lines"] if w == "EXPOSE")
    if "8080" in exposed.split():
        ok(f"{where}: EXPOSE 8080")
    else:
        fail(f"{where}: EXPOSE 8080 is missing")
    builds = " ".join(a for s in stages for _, w, a in s["lines"] if w == "RUN")
    for package in ("ebb-node", "ebb-coordinator"):
        if f"-p {package}" not in builds:
            fail(f"{where}: no `cargo build ... -p {package}`")
    copies = " ".join(a for s in final for _, w, a in s["lines"] if w == "COPY")
    if "/out/ebb " in copies + " " and "/out/ebb-node" in copies and "/out/ebb-agent" in copies:
        ok(f"{where}: ebb-node, ebb-agent and the ebb CLI are installed")
    else:
        fail(f"{where}: the default target must carry ebb-node, ebb-agent and ebb")
    if any(w == "RUN" and ("kubectl" in a or "curl" in a) for s in stages for _, w, a in s["lines"]):
        fail(f"{where}: downloads something besides crates (the legacy builder builds every stage)")

    extra = DEPLOY / "Dockerfile.kubectl"
    if extra.exists():
        kubectl = dockerfile_stages(extra)
        if kubectl:
            entry = next((a for _, w, a in reversed(kubectl[-1]["lines"]) if w == "ENTRYPOINT"), "")
            if kubectl[-1]["base"].startswith("${EBB_IMAGE") and "/ebb" in entry:
                ok(f"{rel(extra)}: builds on ${{EBB_IMAGE}} (deploy/Dockerfile's image), ENTRYPOINT {entry}")
            else:
                fail(f"{rel(extra)}: should build FROM ${{EBB_IMAGE}} with the ebb CLI as entrypoint")


def main() -> int:
    for section, check in (("Kubernetes", check_kubernetes), ("Compose", check_compose),
                           ("systemd", check_systemd), ("Dockerfile", check_dockerfile)):
        print(f"--    {section}")
        check()
    if failures:
        print(f"check.py: {len(failures)} problem(s)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
