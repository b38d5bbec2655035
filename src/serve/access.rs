//! Who may use the server: the bearer token (`--token-file`) checked on every gRPC call and
//! on the HTTP endpoints, and the TLS identity (`--tls-cert`, `--tls-key`). The token is
//! compared in constant time and never logged or echoed.

use anyhow::Context as _;
use std::sync::Arc;
use subtle::ConstantTimeEq;
use tonic::{Request, Status};

/// Reads the token: the file's content less surrounding whitespace, which must not be empty.
pub fn read_token(path: &str) -> anyhow::Result<Arc<[u8]>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the token file `{path}`"))?;
    let token = text.trim();
    if token.is_empty() {
        anyhow::bail!(
            "the token file `{path}` is empty: put the bearer token clients will send in it (e.g. `openssl rand -hex 32 > {path}`)"
        );
    }
    if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        anyhow::bail!(
            "the token in `{path}` contains whitespace or control characters, which cannot travel in an `authorization` header; use e.g. `openssl rand -hex 32 > {path}`"
        );
    }
    Ok(token.as_bytes().into())
}

/// The TLS identity from a PEM certificate chain and key.
pub fn tls_identity(cert: &str, key: &str) -> anyhow::Result<tonic::transport::Identity> {
    let c = std::fs::read(cert).with_context(|| format!("cannot read `--tls-cert {cert}`"))?;
    let k = std::fs::read(key).with_context(|| format!("cannot read `--tls-key {key}`"))?;
    for (flag, path, data, marker) in [
        ("--tls-cert", cert, &c, "CERTIFICATE"),
        ("--tls-key", key, &k, "PRIVATE KEY"),
    ] {
        if !String::from_utf8_lossy(data).contains(marker) {
            anyhow::bail!(
                "`{flag} {path}` is not a PEM file with a {marker} block (`-----BEGIN …{marker}-----`)"
            );
        }
    }
    Ok(tonic::transport::Identity::from_pem(c, k))
}

/// The token check, cheap to clone into every service.
#[derive(Clone)]
pub struct Gate {
    token: Option<Arc<[u8]>>,
}

impl Gate {
    pub fn new(token: Option<Arc<[u8]>>) -> Gate {
        Gate { token }
    }

    /// Whether an `authorization` header value (or its absence) carries the token; always
    /// true without one.
    pub fn allows(&self, authorization: Option<&[u8]>) -> bool {
        let Some(token) = &self.token else {
            return true;
        };
        let Some(sent) = authorization.and_then(|v| v.strip_prefix(b"Bearer ")) else {
            return false;
        };
        sent.ct_eq(token).into()
    }

    /// The gRPC interceptor: UNAUTHENTICATED without the right token.
    #[allow(clippy::result_large_err)]
    pub fn check(&self, request: Request<()>) -> Result<Request<()>, Status> {
        let sent = request
            .metadata()
            .get("authorization")
            .map(|v| v.as_bytes());
        if self.allows(sent) {
            Ok(request)
        } else {
            Err(Status::unauthenticated(if sent.is_none() {
                "this server needs a bearer token: send the metadata `authorization: Bearer <token>`"
            } else {
                "the bearer token is wrong"
            }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_token_is_allowed() {
        let g = Gate::new(Some(b"s3cret".as_slice().into()));
        assert!(g.allows(Some(b"Bearer s3cret")));
        for wrong in [
            &b"Bearer s3cre"[..],
            b"Bearer s3cret2",
            b"bearer s3cret",
            b"s3cret",
            b"Bearer ",
        ] {
            assert!(!g.allows(Some(wrong)), "{}", String::from_utf8_lossy(wrong));
        }
        assert!(!g.allows(None));
        assert!(Gate::new(None).allows(None));
    }
}
