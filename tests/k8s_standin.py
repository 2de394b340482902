"""A Kubernetes API server stand-in on loopback over real TLS: the real resource paths, bearer-token checks,
strategic-merge / merge / JSON patches applied to stored objects, and every request recorded."""
from __future__ import annotations

import copy
import datetime as dt
import ipaddress
import json
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.http_helpers import send_json


def make_ca(name: str = "standin-ca") -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    return key, cert


def make_server_cert(ca_key, ca_cert) -> tuple[bytes, bytes]:
    """(cert PEM, key PEM) for 127.0.0.1, signed by the CA."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]))
            .issuer_name(ca_cert.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def merge(base: dict, patch: dict) -> dict:
    """RFC 7386 merge patch (for the maps we patch, strategic merge behaves the same)."""
    for key, value in patch.items():
        if value is None:
            base.pop(key, None)
        elif isinstance(value, dict) and isinstance(base.get(key), dict):
            merge(base[key], value)
        else:
            base[key] = copy.deepcopy(value)
    return base


class KubeStandin:
    """`with KubeStandin(tmp_path, token) as kube`: objects live in `kube.objects` by API path."""

    def __init__(self, workdir: Path, token: str) -> None:
        self.token = token
        self.ca_key, self.ca_cert = make_ca()
        cert_pem, key_pem = make_server_cert(self.ca_key, self.ca_cert)
        (workdir / "server.crt").write_bytes(cert_pem)
        (workdir / "server.key").write_bytes(key_pem)
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(workdir / "server.crt", workdir / "server.key")
        self.objects: dict[str, dict] = {}
        self.requests: list[dict] = []   # method, path, query, headers, body of every request

    @property
    def ca_pem(self) -> str:
        return pem(self.ca_cert)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> "KubeStandin":
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                standin.handle(self, "GET")

            def do_PATCH(self):  # noqa: N802
                standin.handle(self, "PATCH")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.socket = self.context.wrap_socket(self.server.socket, server_side=True)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def put(self, path: str, obj: dict) -> None:
        obj.setdefault("metadata", {}).setdefault("resourceVersion", "1")
        self.objects[path] = obj

    def handle(self, request: BaseHTTPRequestHandler, method: str) -> None:
        url = urlsplit(request.path)
        length = int(request.headers.get("Content-Length") or 0)
        body = request.rfile.read(length) if length else b""
        self.requests.append({"method": method, "path": url.path, "query": parse_qs(url.query),
                              "headers": dict(request.headers), "body": body})
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return send_json(request, 401, _status(401, "Unauthorized", "Unauthorized"))
        if method == "GET":
            return self._get(request, url.path, parse_qs(url.query))
        return self._patch(request, url.path, request.headers.get("Content-Type", ""), json.loads(body))

    def _get(self, request, path: str, query: dict) -> None:
        if path.endswith("/log") and path[:-4] in self.objects:
            lines = self.objects[path[:-4]].get("_log", [])
            tail = int(query.get("tailLines", [len(lines)])[0])
            data = "".join(f"{line}\n" for line in lines[-tail:]).encode()
            request.send_response(200)
            request.send_header("Content-Type", "text/plain")
            request.send_header("Content-Length", str(len(data)))
            request.end_headers()
            request.wfile.write(data)
            return None
        if path.endswith("/scale") and path[:-6] in self.objects:
            return send_json(request, 200, _scale(self.objects[path[:-6]]))
        if path in self.objects:
            return send_json(request, 200, self.objects[path])
        items = [obj for key, obj in self.objects.items() if key.rsplit("/", 1)[0] == path]
        selector = query.get("labelSelector", [""])[0]
        if selector:
            wanted = dict(pair.split("=", 1) for pair in selector.split(","))
            items = [obj for obj in items if wanted.items() <= obj["metadata"].get("labels", {}).items()]
        if items or path.endswith("s"):
            return send_json(request, 200, {"kind": "List", "items": items})
        return send_json(request, 404, _status(404, "NotFound", f"{path} not found"))

    def _patch(self, request, path: str, content_type: str, patch) -> None:
        scale = path.endswith("/scale")
        key = path[:-6] if scale else path
        if key not in self.objects:
            return send_json(request, 404, _status(404, "NotFound", f"{key} not found"))
        obj = self.objects[key]
        if content_type == "application/json-patch+json":
            for op in patch:
                if op["op"] == "test" and obj["metadata"]["resourceVersion"] != op["value"]:
                    return send_json(request, 422, _status(422, "Invalid", "the test operation failed"))
                if op["op"] == "replace" and op["path"] == "/spec/template":
                    obj["spec"]["template"] = op["value"]
        elif scale:
            obj["spec"]["replicas"] = patch["spec"]["replicas"]
        else:
            merge(obj, patch)
        obj["metadata"]["generation"] = obj["metadata"].get("generation", 1) + 1
        obj["metadata"]["resourceVersion"] = str(int(obj["metadata"]["resourceVersion"]) + 1)
        return send_json(request, 200, _scale(obj) if scale else obj)


def _scale(obj: dict) -> dict:
    return {"kind": "Scale", "apiVersion": "autoscaling/v1", "metadata": {"name": obj["metadata"]["name"]},
            "spec": {"replicas": obj["spec"]["replicas"]}, "status": {"replicas": obj["spec"]["replicas"]}}


def _status(code: int, reason: str, message: str) -> dict:
    return {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message, "reason": reason,
            "code": code}
