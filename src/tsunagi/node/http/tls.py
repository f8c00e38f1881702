"""TLS for the node's HTTP listener: a development certificate made, kept and reused for you.

``tsunagi node --http ... --tls-dev`` serves HTTPS with a self-signed certificate for
``localhost``, ``127.0.0.1`` and ``::1``, kept in the data directory (``tls/``) so that a user
trusts it once (in the browser, or ``curl --cacert``) and the node reuses it on every start. It
is made again only when it is missing, unreadable, does not match its key, or is close to
expiry. For anything but development, pass a real certificate with ``--tls-cert``/``--tls-key``.

The key is ECDSA P-256: every browser accepts it for TLS (Ed25519 certificates are not), and
making one takes a millisecond.
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tsunagi.errors import ConfigError
from tsunagi.ledger.log import write_file_atomically
from tsunagi.node import limits

__all__ = ["DEV_CERT_FILE", "DEV_KEY_FILE", "DEV_NAMES", "TLS_DIRECTORY", "check_pair",
           "dev_certificate"]

log = logging.getLogger("tsunagi.node.http.tls")

TLS_DIRECTORY = "tls"  # inside the data directory
DEV_CERT_FILE = "dev-cert.pem"
DEV_KEY_FILE = "dev-key.pem"
# The names a development certificate is valid for: this machine, by name and by address.
DEV_NAMES = ("localhost", "127.0.0.1", "::1")


def dev_certificate(data: str | Path, now: datetime.datetime | None = None
                    ) -> tuple[Path, Path]:
    """(certificate file, key file) of the data directory's development certificate, made
    when there is none usable as of ``now`` (default: the current time)."""
    now = now or datetime.datetime.now(datetime.UTC)
    directory = Path(data) / TLS_DIRECTORY
    cert_path, key_path = directory / DEV_CERT_FILE, directory / DEV_KEY_FILE
    problem = _unusable(cert_path, key_path, now)
    if problem is None:
        return cert_path, key_path
    if cert_path.exists():
        log.warning("making a new development certificate: %s", problem)
    try:
        directory.mkdir(mode=0o700, exist_ok=True)
        key = ec.generate_private_key(ec.SECP256R1())
        write_file_atomically(key_path, key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()), mode=0o600)
        certificate = _self_signed(key, now)
        write_file_atomically(cert_path, certificate.public_bytes(serialization.Encoding.PEM))
    except OSError as exc:
        raise ConfigError(f"cannot write the development certificate in {directory}: "
                          f"{exc.strerror or exc}; check the data directory's permissions, "
                          "or pass --tls-cert and --tls-key") from exc
    return cert_path, key_path


def _self_signed(key: ec.EllipticCurvePrivateKey, now: datetime.datetime) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tsunagi development node")])
    names = [x509.DNSName(DEV_NAMES[0])] + [x509.IPAddress(ipaddress.ip_address(address))
                                           for address in DEV_NAMES[1:]]
    public = key.public_key()
    return (x509.CertificateBuilder()
            .subject_name(name).issuer_name(name).public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))  # a clock slightly behind
            .not_valid_after(now + datetime.timedelta(days=limits.dev_certificate_valid_days))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, key_cert_sign=False,
                                         crl_sign=False, encipher_only=False,
                                         decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public),
                           critical=False)
            .sign(key, hashes.SHA256()))


def _unusable(cert_path: Path, key_path: Path, now: datetime.datetime) -> str | None:
    """Why the kept certificate cannot serve (None when it can)."""
    if not cert_path.exists() or not key_path.exists():
        return "there is none"
    try:
        certificate = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        return f"{cert_path} or {key_path} cannot be read ({exc})"
    if key.public_key() != certificate.public_key():
        return f"{cert_path} does not match {key_path}"
    renew = datetime.timedelta(days=limits.dev_certificate_renew_days)
    if certificate.not_valid_after_utc - renew < now:
        return f"{cert_path} expires on {certificate.not_valid_after_utc:%Y-%m-%d}"
    return None


def check_pair(cert_path: str | Path, key_path: str | Path) -> None:
    """Raises ConfigError, saying what to fix, unless the files are a PEM certificate and the
    PEM key that belongs to it (uvicorn's own error would be an SSL traceback)."""
    try:
        certificate = x509.load_pem_x509_certificate(Path(cert_path).read_bytes())
    except OSError as exc:
        raise ConfigError(f"cannot read --tls-cert {cert_path}: {exc.strerror}") from exc
    except ValueError:
        raise ConfigError(f"--tls-cert {cert_path} is not a PEM certificate "
                          "(-----BEGIN CERTIFICATE-----)") from None
    try:
        key = serialization.load_pem_private_key(Path(key_path).read_bytes(), password=None)
    except OSError as exc:
        raise ConfigError(f"cannot read --tls-key {key_path}: {exc.strerror}") from exc
    except (ValueError, TypeError):
        raise ConfigError(f"--tls-key {key_path} is not an unencrypted PEM private key") \
            from None
    if key.public_key() != certificate.public_key():
        raise ConfigError(f"--tls-key {key_path} is not the key of --tls-cert {cert_path}")

