#!/usr/bin/env python3
"""Checks deploy/kubernetes/ offline; `tests/deploy.rs` runs it in `make test`.

Usage: check.py [--ktransform BIN] [--self-test]

- Every kustomization (the Deployment variant here, the StatefulSet variant in statefulset/)
  resolves: its resources exist, and every manifest in these folders is in one of them.
- Every built-in object is valid against the Kubernetes schemas bundled by kubernetes-validate
  (PyPI), strictly (an unknown field is an error), for the oldest and newest versions we name.
- The KEDA objects are valid against KEDA's own CRD schemas (schemas/keda-v2.21.1/, from the
  kedacore/keda v2.21.1 Go module), strictly too, and the kafka trigger uses only the metadata
  and authentication parameters KEDA's kafka scaler reads, with values it accepts.
- The objects agree with each other and with ktransform: the trigger reads the group, topic and
  brokers of the ConfigMap's TOML; the probes and the Service reach the metrics port the TOML
  serves on (not loopback); the grace period is above the shutdown timeout; the pods run as
  non-root on a read-only root filesystem with requests set; the variant's env is in place.
- With --ktransform, the TOML, the pod's args and env go through `ktransform run --print-config`:
  ktransform itself refuses anything it would refuse at start.

--self-test breaks the manifests in memory, one way at a time, and fails unless every break is
found: a check that finds nothing is no check.

Exit 0: valid; 1: problems (listed); 3: kubernetes-validate is not installed.
"""

import argparse
import copy
import os
import re
import subprocess
import sys
import tempfile
import tomllib

try:
    import jsonschema
    import kubernetes_validate
    import yaml
except ImportError as e:
    print(f"check.py needs kubernetes-validate ({e}): python3 -m pip install "
          "kubernetes-validate==1.37.0 (`make k8s-tools`)", file=sys.stderr)
    sys.exit(3)

HERE = os.path.dirname(os.path.abspath(__file__))
VARIANTS = [".", "statefulset"]
KUBERNETES_VERSIONS = ["1.31.0", "1.37.0"]
KEDA_SCHEMAS = os.path.join(HERE, "schemas", "keda-v2.21.1")
TEST_CA = os.path.join(HERE, "..", "..", "tests", "fixtures", "test-ca.pem")

# KEDA v2.21.1, pkg/scalers/kafka_scaler.go, kafkaMetadata's `keda:"name=...,order=..."` tags.
KAFKA_METADATA = {
    "bootstrapServers", "consumerGroup", "topic", "partitionLimitation", "lagThreshold",
    "activationLagThreshold", "offsetResetPolicy", "allowIdleConsumers", "excludePersistentLag",
    "scaleToZeroOnInvalidOffset", "limitToPartitionsWithLag",
    "ensureEvenDistributionOfPartitions", "fullMetadata", "version", "tls", "unsafeSsl", "sasl",
    "saslTokenProvider", "awsRegion",
}
KAFKA_AUTH_PARAMS = {
    "tls", "ca", "cert", "key", "keyPassword", "sasl", "username", "password",
    "saslTokenProvider", "scopes", "oauthTokenEndpointUri", "oauthExtensions", "keytab",
    "ccacheName", "realm", "kerberosConfig", "kerberosServiceName", "kerberosDisableFAST",
}
KAFKA_BOOLEANS = {
    "allowIdleConsumers", "excludePersistentLag", "scaleToZeroOnInvalidOffset",
    "limitToPartitionsWithLag", "ensureEvenDistributionOfPartitions", "fullMetadata",
    "unsafeSsl",
}
# librdkafka's sasl.mechanisms as KEDA's `sasl` parameter names them.
SASL = {"PLAIN": "plaintext", "SCRAM-SHA-256": "scram_sha256", "SCRAM-SHA-512": "scram_sha512"}


def load_variant(variant):
    """The documents a kustomization builds (resources only; no patches are used), and the
    files it read."""
    docs, files = [], []

    def visit(folder):
        path = os.path.join(folder, "kustomization.yaml")
        with open(path) as f:
            k = yaml.safe_load(f)
        files.append(os.path.normpath(path))
        for resource in k.get("resources", []):
            target = os.path.normpath(os.path.join(folder, resource))
            if os.path.isdir(target):
                visit(target)
            elif os.path.isfile(target):
                files.append(target)
                with open(target) as f:
                    docs.extend((target, d) for d in yaml.safe_load_all(f) if d)
            else:
                raise SystemExit(f"{path}: resource {resource} does not exist")

    visit(os.path.normpath(os.path.join(HERE, variant)))
    return docs, files


def strict(schema):
    """A CRD schema as the API server's strict field validation reads it: an object with
    properties and no other rule for extra fields refuses them."""
    if isinstance(schema, dict):
        schema = {k: strict(v) for k, v in schema.items()}
        if ("properties" in schema and "additionalProperties" not in schema
                and not schema.get("x-kubernetes-preserve-unknown-fields")):
            schema["additionalProperties"] = False
        return schema
    if isinstance(schema, list):
        return [strict(v) for v in schema]
    return schema


def crd_schemas():
    schemas = {}
    for name in sorted(os.listdir(KEDA_SCHEMAS)):
        if name.endswith(".yaml"):
            with open(os.path.join(KEDA_SCHEMAS, name)) as f:
                crd = yaml.safe_load(f)
            for version in crd["spec"]["versions"]:
                key = (f"{crd['spec']['group']}/{version['name']}", crd["spec"]["names"]["kind"])
                schema = strict(version["schema"]["openAPIV3Schema"])
                # metadata is the API server's, not the CRD's: checked below by hand.
                schema["properties"]["metadata"] = {"type": "object"}
                schemas[key] = schema
    return schemas


def by_kind(docs, kind):
    return [d for _, d in docs if d.get("kind") == kind]


def one(docs, kind, problems):
    found = by_kind(docs, kind)
    if len(found) != 1:
        problems.append(f"expected one {kind}, found {len(found)}")
        return None
    return found[0]


def toml_of(configmap, path, problems):
    name = os.path.basename(path)
    text = configmap.get("data", {}).get(name)
    if text is None:
        problems.append(f"ConfigMap {configmap['metadata']['name']} has no key {name}")
        return None, None
    return text, tomllib.loads(text)


def duration_secs(text):
    m = re.fullmatch(r"(\d+)(ms|s|m)", text)
    if not m:
        raise ValueError(f"duration {text!r}: expected e.g. 20s")
    return int(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60}[m.group(2)]


def check_schemas(docs, crds, problems):
    for path, doc in docs:
        where = f"{os.path.relpath(path, HERE)}: {doc.get('kind')} {doc.get('metadata', {}).get('name')}"
        key = (doc.get("apiVersion"), doc.get("kind"))
        if key in crds:
            for error in jsonschema.Draft7Validator(crds[key]).iter_errors(doc):
                problems.append(f"{where}: {'.'.join(map(str, error.path))}: {error.message}")
            name = doc.get("metadata", {}).get("name", "")
            if not re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name):
                problems.append(f"{where}: metadata.name {name!r} is not a DNS label")
            continue
        for version in KUBERNETES_VERSIONS:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.SchemaNotFoundError:
                problems.append(f"{where}: no Kubernetes {version} schema for {key}")
            except kubernetes_validate.ValidationError as e:
                problems.append(f"{where} (Kubernetes {version}): {e.message} at "
                                f"{'.'.join(map(str, e.path))}")


def check_trigger(scaled, docs, settings, workload, problems):
    spec = scaled["spec"]
    target = spec["scaleTargetRef"]
    if (target.get("kind", "Deployment"), target["name"]) != (workload["kind"],
                                                               workload["metadata"]["name"]):
        problems.append(f"ScaledObject targets {target}, not the {workload['kind']}")
    if spec.get("minReplicaCount", 0) > spec.get("maxReplicaCount", 100):
        problems.append("ScaledObject: minReplicaCount above maxReplicaCount")
    triggers = [t for t in spec["triggers"] if t["type"] == "kafka"]
    if len(triggers) != 1:
        problems.append(f"ScaledObject: expected one kafka trigger, found {len(triggers)}")
        return
    trigger = triggers[0]
    meta = trigger["metadata"]
    for key in sorted(set(meta) - KAFKA_METADATA):
        problems.append(f"kafka trigger: KEDA's kafka scaler does not read metadata `{key}`")
    for key in ("bootstrapServers", "consumerGroup", "topic", "lagThreshold"):
        if key not in meta:
            problems.append(f"kafka trigger: `{key}` missing")
    if not re.fullmatch(r"[1-9][0-9]*", str(meta.get("lagThreshold", ""))):
        problems.append(f"kafka trigger: lagThreshold {meta.get('lagThreshold')!r} is not a "
                        "positive integer")
    if meta.get("offsetResetPolicy", "latest") not in ("latest", "earliest"):
        problems.append(f"kafka trigger: offsetResetPolicy {meta['offsetResetPolicy']!r}")
    for key in KAFKA_BOOLEANS & set(meta):
        if str(meta[key]).lower() not in ("true", "false", "1", "0", "t", "f"):
            problems.append(f"kafka trigger: {key} {meta[key]!r} is not a boolean")
    if str(meta.get("allowIdleConsumers")).lower() == "true" and \
            str(meta.get("limitToPartitionsWithLag")).lower() == "true":
        problems.append("kafka trigger: allowIdleConsumers and limitToPartitionsWithLag conflict")
    # The same group, topic and brokers as ktransform, and where ktransform starts.
    rdkafka = settings.get("rdkafka", {})
    expected = {
        "bootstrapServers": settings.get("brokers", "127.0.0.1:9092"),
        "consumerGroup": settings.get("group", "ktransform"),
        "topic": settings.get("source", "name_stream"),
        "offsetResetPolicy": rdkafka.get("auto.offset.reset", "earliest"),
    }
    for key, value in expected.items():
        if meta.get(key, "latest" if key == "offsetResetPolicy" else None) != value:
            problems.append(f"kafka trigger: {key} is {meta.get(key)!r}, ktransform's is {value!r}")
    check_authentication(trigger, docs, rdkafka, problems)


def check_authentication(trigger, docs, rdkafka, problems):
    ref = trigger.get("authenticationRef")
    if ref is None:
        if "sasl.mechanisms" in rdkafka:
            problems.append("kafka trigger: the brokers need SASL, and it has no authenticationRef")
        return
    auths = [a for a in by_kind(docs, "TriggerAuthentication")
             if a["metadata"]["name"] == ref["name"]]
    if not auths:
        problems.append(f"kafka trigger: TriggerAuthentication {ref['name']} is not in the build")
        return
    secrets = {s["metadata"]["name"]: {**s.get("stringData", {}), **s.get("data", {})}
               for s in by_kind(docs, "Secret")}
    params = {}
    for t in auths[0]["spec"].get("secretTargetRef", []):
        if t["parameter"] not in KAFKA_AUTH_PARAMS:
            problems.append(f"TriggerAuthentication: KEDA's kafka scaler does not read "
                            f"`{t['parameter']}`")
        if t["key"] not in secrets.get(t["name"], {}):
            problems.append(f"TriggerAuthentication: Secret {t['name']} has no key {t['key']}")
        params[t["parameter"]] = secrets.get(t["name"], {}).get(t["key"])
    mechanism = rdkafka.get("sasl.mechanisms")
    if mechanism and params.get("sasl") != SASL.get(mechanism):
        problems.append(f"TriggerAuthentication: sasl is {params.get('sasl')!r}, ktransform "
                        f"uses {mechanism} ({SASL.get(mechanism)})")
    if "SSL" in rdkafka.get("security.protocol", "") and params.get("tls") != "enable":
        problems.append("TriggerAuthentication: the brokers speak TLS, and tls is not `enable`")


def container_of(workload):
    return workload["spec"]["template"]["spec"]["containers"][0]


def check_workload(workload, docs, settings, problems, variant):
    kind = workload["kind"]
    pod = workload["spec"]["template"]
    spec = pod["spec"]
    c = container_of(workload)
    labels = pod["metadata"].get("labels", {})
    for other in by_kind(docs, "Service") + by_kind(docs, "PodDisruptionBudget"):
        selector = other["spec"]["selector"]
        selector = selector.get("matchLabels", selector)
        if any(labels.get(k) != v for k, v in selector.items()):
            problems.append(f"{other['kind']} {other['metadata']['name']} does not select the pods")
    # The endpoints: where the TOML serves them, reachable from outside the pod.
    host, _, port = settings.get("metrics_addr", "127.0.0.1:9464").rpartition(":")
    if host not in ("0.0.0.0", "[::]"):
        problems.append(f"metrics_addr {settings.get('metrics_addr')!r}: the kubelet's probes and "
                        "Prometheus reach the pod IP, not its loopback")
    ports = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
    if str(ports.get("metrics")) != port:
        problems.append(f"container port `metrics` is {ports.get('metrics')}, metrics_addr's is {port}")
    probes = {name: c.get(name, {}).get("httpGet", {}) for name in
              ("livenessProbe", "readinessProbe", "startupProbe")}
    if probes["livenessProbe"].get("path") != "/livez":
        problems.append("livenessProbe must be /livez: /healthz fails while the brokers are away")
    if probes["readinessProbe"].get("path") != "/readyz":
        problems.append("readinessProbe must be /readyz")
    for name, probe in probes.items():
        if probe and probe.get("port") not in ("metrics", ports.get("metrics")):
            problems.append(f"{name} is not on the metrics port")
    for service in by_kind(docs, "Service"):
        annotations = service["metadata"].get("annotations", {})
        if annotations.get("prometheus.io/scrape") != "true" or \
                annotations.get("prometheus.io/port") != port:
            problems.append(f"Service {service['metadata']['name']}: prometheus.io annotations")
    grace = spec.get("terminationGracePeriodSeconds", 30)
    shutdown = duration_secs(settings.get("shutdown_timeout", "10s"))
    if grace <= shutdown:
        problems.append(f"terminationGracePeriodSeconds {grace} is not above shutdown_timeout "
                        f"{shutdown} s")
    security = {**spec.get("securityContext", {}), **c.get("securityContext", {})}
    for key, value in (("runAsNonRoot", True), ("readOnlyRootFilesystem", True),
                       ("allowPrivilegeEscalation", False)):
        if security.get(key) != value:
            problems.append(f"{kind}: securityContext.{key} should be {value}")
    requests = c.get("resources", {}).get("requests", {})
    if not {"cpu", "memory"} <= set(requests):
        problems.append(f"{kind}: cpu and memory requests")
    env = {e["name"]: e for e in c.get("env", [])}
    if env.get("KTRANSFORM_LOG_FORMAT", {}).get("value") != "json":
        problems.append(f"{kind}: KTRANSFORM_LOG_FORMAT=json")
    instance = env.get("KTRANSFORM_INSTANCE_ID", {}).get("valueFrom", {}).get("fieldRef", {})
    if variant == "statefulset" and instance.get("fieldPath") != "metadata.name":
        problems.append("StatefulSet: KTRANSFORM_INSTANCE_ID from the pod name (metadata.name)")
    if variant != "statefulset" and "KTRANSFORM_INSTANCE_ID" in env:
        problems.append("Deployment: a pod name is no stable --instance-id")


def config_path(workload, problems):
    args = container_of(workload).get("args", [])
    if "--config" not in args[:-1]:
        problems.append("the container does not pass --config")
        return None
    path = args[args.index("--config") + 1]
    mounts = {m["mountPath"]: m["name"] for m in container_of(workload).get("volumeMounts", [])}
    volumes = {v["name"]: v for v in workload["spec"]["template"]["spec"].get("volumes", [])}
    volume = volumes.get(mounts.get(os.path.dirname(path)), {})
    if "configMap" not in volume:
        problems.append(f"--config {path}: no ConfigMap is mounted at {os.path.dirname(path)}")
    return path


def check_with_ktransform(binary, workload, toml_text, docs, problems):
    """`ktransform run --print-config` with the pod's args and env, the Secret's values in
    place of $(VAR), and the tests' CA in place of the Secret's placeholder (librdkafka reads
    the CA file when the clients are made)."""
    c = container_of(workload)
    secrets = {s["metadata"]["name"]: {**s.get("stringData", {}), **s.get("data", {})}
               for s in by_kind(docs, "Secret")}
    values = {}
    env = {k: v for k, v in os.environ.items() if not k.startswith("KTRANSFORM_")}
    for e in c.get("env", []):
        source = e.get("valueFrom", {})
        if "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            values[e["name"]] = secrets.get(ref["name"], {}).get(ref["key"], "")
        elif "fieldRef" in source:
            values[e["name"]] = f"{workload['metadata']['name']}-0"
        else:
            values[e["name"]] = e.get("value", "")
        env[e["name"]] = values[e["name"]]
    with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as f:
        f.write(toml_text)
    try:
        args = [re.sub(r"\$\((\w+)\)", lambda m: values.get(m.group(1), ""), a)
                for a in c.get("args", [])]
        args[args.index("--config") + 1] = f.name
        command = [binary] + args + ["--print-config", "-X", f"ssl.ca.location={TEST_CA}"]
        out = subprocess.run(command, env=env, capture_output=True, text=True)
        if out.returncode != 0:
            problems.append(f"ktransform refuses the pod's configuration: {out.stderr.strip()}")
    finally:
        os.unlink(f.name)


def check(ktransform=None, mutate=None):
    """The problems found, after `mutate(variant, docs)` (for --self-test)."""
    problems = []
    crds = crd_schemas()
    read = set()
    scaled_objects = []
    for variant in VARIANTS:
        docs, files = load_variant(variant)
        read.update(files)
        if mutate:
            mutate(variant, docs)
        check_schemas(docs, crds, problems)
        workloads = by_kind(docs, "Deployment") + by_kind(docs, "StatefulSet")
        if len(workloads) != 1:
            problems.append(f"{variant}: expected one Deployment or StatefulSet")
            continue
        workload = workloads[0]
        path = config_path(workload, problems)
        configmap = one(docs, "ConfigMap", problems)
        if path is None or configmap is None:
            continue
        toml_text, settings = toml_of(configmap, path, problems)
        if settings is None:
            continue
        check_workload(workload, docs, settings, problems, variant)
        scaled = one(docs, "ScaledObject", problems)
        if scaled:
            check_trigger(scaled, docs, settings, workload, problems)
            scaled_objects.append(scaled)
        if ktransform:
            check_with_ktransform(ktransform, workload, toml_text, docs, problems)
    if len(scaled_objects) == 2 and \
            scaled_objects[0]["spec"]["triggers"] != scaled_objects[1]["spec"]["triggers"]:
        problems.append("the two variants' ScaledObjects have different triggers")
    if not mutate:
        for folder in ("", "common", "statefulset"):
            for name in os.listdir(os.path.join(HERE, folder)):
                path = os.path.normpath(os.path.join(HERE, folder, name))
                if name.endswith((".yaml", ".yml")) and path not in read:
                    problems.append(f"{os.path.relpath(path, HERE)} is in no kustomization")
    return problems


def self_test(ktransform):
    """Each break, applied to every variant, must be found."""
    def container(docs):
        return container_of([d for _, d in docs if d["kind"] in ("Deployment", "StatefulSet")][0])

    def trigger(docs):
        return [d for _, d in docs if d["kind"] == "ScaledObject"][0]["spec"]["triggers"][0]

    def configmap(docs):
        cm = [d for _, d in docs if d["kind"] == "ConfigMap"][0]
        return cm["data"]

    breaks = {
        "an unknown field in the pod": lambda docs: container(docs).update(restartPolcy="Always"),
        "lagThreshold not a string": lambda docs: trigger(docs)["metadata"].update(lagThreshold=1),
        "a metadata key KEDA ignores": lambda docs: trigger(docs)["metadata"].update(lagTreshold="5"),
        "a field the ScaledObject has not": lambda docs: [d for _, d in docs if d["kind"] ==
                                                          "ScaledObject"][0]["spec"].update(maxReplicas=3),
        "another consumer group": lambda docs: trigger(docs)["metadata"].update(consumerGroup="x"),
        "liveness on /healthz": lambda docs: container(docs)["livenessProbe"]["httpGet"].update(path="/healthz"),
        "grace below the shutdown timeout": lambda docs: [d for _, d in docs if d["kind"] in (
            "Deployment", "StatefulSet")][0]["spec"]["template"]["spec"].update(terminationGracePeriodSeconds=5),
        "metrics on loopback": lambda docs: configmap(docs).update({"ktransform.toml": configmap(docs)[
            "ktransform.toml"].replace('"0.0.0.0:9464"', '"127.0.0.1:9464"')}),
        "a writable root filesystem": lambda docs: container(docs)["securityContext"].update(
            readOnlyRootFilesystem=False),
    }
    if ktransform:
        breaks["a setting ktransform refuses"] = lambda docs: configmap(docs).update(
            {"ktransform.toml": 'batch_size = 0\n' + configmap(docs)["ktransform.toml"]})
    baseline = set(check(ktransform, lambda _variant, _docs: None))
    missed = []
    for name, damage in breaks.items():
        found = set(check(ktransform, lambda _variant, docs: damage(docs))) - baseline
        print(f"break: {name}: {len(found)} problem(s) found")
        if not found:
            missed.append(name)
    return missed


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ktransform", help="the ktransform binary, to check the configuration")
    parser.add_argument("--self-test", action="store_true")
    options = parser.parse_args()
    problems = check(options.ktransform)
    for p in problems:
        print(f"problem: {p}")
    if options.self_test:
        missed = self_test(options.ktransform)
        problems += [f"the check misses: {m}" for m in missed]
        for m in missed:
            print(f"problem: the check misses: {m}")
    print(f"deploy/kubernetes: {len(VARIANTS)} variants, {len(problems)} problem(s)")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
