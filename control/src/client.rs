//! Connecting to the daemon's API: over its Unix socket, or over TCP with TLS (optionally
//! presenting a client certificate). Used by `sluicectl` and the tests.

use std::path::{Path, PathBuf};

use hyper_util::rt::TokioIo;
use sluice_proto::v1::control_client::ControlClient;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity, Uri};

/// The default socket path (`[api] socket`'s default).
pub const DEFAULT_SOCKET: &str = "/run/sluice/control.sock";

/// Where the API is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The Unix socket at this path.
    Unix(PathBuf),
    /// `https://HOST:PORT` with TLS.
    Tls {
        /// The URL, `https://host:port`.
        url: String,
        /// The CA certificate (PEM) that signed the server's certificate.
        ca: PathBuf,
        /// Client certificate and key (PEM), when the server asks for one.
        identity: Option<(PathBuf, PathBuf)>,
        /// The name to check the server certificate against (default: the URL's host).
        domain: Option<String>,
    },
}

/// Why no connection could be made.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// A file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The URL or TLS settings are invalid.
    #[error("{0}")]
    Setup(String),
    /// Connecting failed.
    #[error("cannot connect to {target}: {reason}")]
    Connect {
        /// Where.
        target: String,
        /// Why (with the transport's causes).
        reason: String,
    },
}

fn read(path: &Path) -> Result<Vec<u8>, ClientError> {
    std::fs::read(path).map_err(|source| ClientError::Read {
        path: path.to_owned(),
        source,
    })
}

/// The error and its sources, joined with `: `.
#[must_use]
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}

/// Connects to `target`.
///
/// # Errors
///
/// [`ClientError`].
pub async fn connect(target: &Target) -> Result<ControlClient<Channel>, ClientError> {
    let channel = match target {
        Target::Unix(path) => {
            let path = path.clone();
            let shown = format!("unix:{}", path.display());
            // The URI is required by the API but unused: the connector dials the socket.
            Endpoint::from_static("http://localhost")
                .connect_with_connector(tower::service_fn(move |_: Uri| {
                    let path = path.clone();
                    async move {
                        tokio::net::UnixStream::connect(path)
                            .await
                            .map(TokioIo::new)
                    }
                }))
                .await
                .map_err(|e| ClientError::Connect {
                    target: shown,
                    reason: chain(&e),
                })?
        }
        Target::Tls {
            url,
            ca,
            identity,
            domain,
        } => {
            let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read(ca)?));
            if let Some((cert, key)) = identity {
                tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?));
            }
            if let Some(d) = domain {
                tls = tls.domain_name(d.clone());
            }
            Endpoint::from_shared(url.clone())
                .map_err(|e| ClientError::Setup(format!("bad URL {url:?}: {e}")))?
                .tls_config(tls)
                .map_err(|e| ClientError::Setup(format!("TLS settings: {}", chain(&e))))?
                .connect()
                .await
                .map_err(|e| ClientError::Connect {
                    target: url.clone(),
                    reason: chain(&e),
                })?
        }
    };
    Ok(ControlClient::new(channel))
}
