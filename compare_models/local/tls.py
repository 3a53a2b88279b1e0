"""The mutual-TLS material of SeaweedFS' internal ports: a local certificate authority whose signing
key is discarded, and the one node certificate it signed, under ``$COMPARE_MODELS_HOME/tls``."""

from __future__ import annotations

import datetime
import ipaddress
import secrets
from pathlib import Path

from compare_models.config import Settings
from compare_models.local.private_files import private_dir, write_private

TLS_FILES = ("ca.crt", "node.crt", "node.key")


def ensure_tls(settings: Settings) -> dict[str, Path]:
    """The mutual-TLS material of SeaweedFS' internal ports: a CA certificate and one node certificate
    and key, signed by that CA, used by every component as server and client. Made once; the CA's
    private key is never written, so no further certificate can be issued. Returns the three paths."""
    folder = private_dir(settings.home / "tls")
    paths = {name: folder / name for name in TLS_FILES}
    if all(p.is_file() for p in paths.values()) and _tls_valid(paths["node.crt"]):
        return paths
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)
    start, end = now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=3650)
    ca_key, node_key = (
        ec.generate_private_key(ec.SECP256R1()),
        ec.generate_private_key(ec.SECP256R1()),
    )
    ca_name = x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, f"compare-models local CA {secrets.token_hex(4)}")]
    )
    unused = dict(
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        encipher_only=False,
        decipher_only=False,
    )
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, **unused),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    node = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "compare-models-seaweedfs")])
        )
        .issuer_name(ca_name)
        .public_key(node_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    for path in paths.values():
        path.unlink(missing_ok=True)
    write_private(
        paths["node.key"],
        node_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    write_private(paths["node.crt"], node.public_bytes(serialization.Encoding.PEM))
    write_private(paths["ca.crt"], ca.public_bytes(serialization.Encoding.PEM))
    return paths


def _tls_valid(cert_path: Path) -> bool:
    from cryptography import x509

    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    except (ValueError, OSError):
        return False
    return cert.not_valid_after_utc > datetime.datetime.now(datetime.UTC) + datetime.timedelta(
        days=30
    )
