"""Test certificates for the brokers' TLS listeners, made with the openssl CLI (EC P-256:
fast to make, and Java and librdkafka both take it).

    tls = make_tls(directory)
    tls.ca           CA that signed the brokers' certificates (clients trust it)
    tls.other_ca     a CA that signed nothing the brokers present ("wrong CA" tests)
    tls.keystore     PEM with the broker's key + certificate chain (Kafka ssl.keystore.type=PEM)
    tls.expired_keystore  the same for a certificate whose validity ended in 2021

Certificates name DNS:localhost and IP:127.0.0.1, the address the brokers advertise.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

SAN = "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n"


@dataclass(frozen=True)
class TlsFiles:
    ca: Path
    other_ca: Path
    keystore: Path
    expired_keystore: Path


def _openssl(*args: str, cwd: Path) -> None:
    res = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True,
                         timeout=60, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed: {res.stderr.strip()}")


def _new_ca(d: Path, name: str) -> None:
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
             "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "3650",
             "-subj", f"/CN=ddc test {name}", cwd=d)


def _server_csr(d: Path, name: str) -> None:
    _openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
             "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
             "-subj", "/CN=localhost", cwd=d)


def make_tls(directory: Path) -> TlsFiles:
    """Make (once: kept in `directory`) the CAs and the broker certificates."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    files = TlsFiles(d / "ca.pem", d / "other-ca.pem", d / "broker.keystore.pem",
                     d / "expired.keystore.pem")
    if all(p.is_file() for p in (files.ca, files.other_ca, files.keystore,
                                 files.expired_keystore)):
        return files
    (d / "san.ext").write_text(SAN)
    _new_ca(d, "ca")
    _new_ca(d, "other-ca")
    _server_csr(d, "broker")
    _openssl("x509", "-req", "-in", "broker.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
             "-set_serial", "2", "-days", "3650", "-extfile", "san.ext", "-out", "broker.pem",
             cwd=d)
    # openssl 3.0's x509 cannot back-date; `openssl ca` takes explicit start/end dates
    _server_csr(d, "expired")
    (d / "index.txt").write_text("")
    (d / "serial").write_text("03\n")
    (d / "ca.cnf").write_text(
        f"[ca]\ndefault_ca = test\n[test]\ndatabase = {d}/index.txt\nnew_certs_dir = {d}\n"
        f"serial = {d}/serial\ndefault_md = sha256\npolicy = any\n[any]\n"
        "commonName = supplied\n")
    _openssl("ca", "-batch", "-config", "ca.cnf", "-cert", "ca.pem", "-keyfile", "ca.key",
             "-startdate", "20200101000000Z", "-enddate", "20210101000000Z",
             "-extfile", "san.ext", "-notext", "-in", "expired.csr", "-out", "expired.pem",
             cwd=d)
    ca = files.ca.read_text()
    for name, keystore in (("broker", files.keystore), ("expired", files.expired_keystore)):
        keystore.write_text((d / f"{name}.key").read_text() + (d / f"{name}.pem").read_text()
                            + ca)
    return files
