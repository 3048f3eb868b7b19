//! Which certificate authorities HTTPS mirrors are checked against: the system's, as curl and
//! pacman use them.
//!
//! ureq's default is a list compiled into the binary (webpki-roots), which knows nothing of a
//! private CA an administrator added with `trust anchor` or `update-ca-certificates`. The
//! platform verifier reads the system store instead (on Linux through rustls-native-certs,
//! which honours `SSL_CERT_FILE` and `SSL_CERT_DIR` as curl and OpenSSL do). Shared by the
//! client's direct downloads and the daemon's agent, so both trust the same mirrors.

use ureq::tls::{RootCerts, TlsConfig};

/// TLS settings that verify servers against the system's trust store.
pub fn system_trust() -> TlsConfig {
    TlsConfig::builder()
        .root_certs(RootCerts::PlatformVerifier)
        .build()
}
