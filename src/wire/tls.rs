//! TLS with rustls (ring provider), following libpq's `sslmode`:
//!
//! | sslmode | chain checked against sslrootcert | host name checked |
//! |---|---|---|
//! | prefer / require, no root certificate | no (encrypt only) | no |
//! | require with a root certificate, verify-ca | yes | no |
//! | verify-full | yes | yes |
//!
//! Also the `tls-server-end-point` channel binding for SCRAM-SHA-256-PLUS, and a
//! `MakeTlsConnect` so ordinary tokio-postgres sessions follow the same rules.

use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use sha2::Digest;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_rustls::TlsConnector;

use super::WireError;
use super::conn_config::{ConnConfig, SslMode};

/// How the server's certificate is checked, decided from sslmode and the root certificate.
#[derive(Debug, Clone)]
pub struct TlsSettings {
    config: Arc<ClientConfig>,
}

impl TlsSettings {
    /// Build the rustls configuration for `cfg`; `None` when TLS is off (`sslmode=disable`).
    pub fn for_config(cfg: &ConnConfig) -> Result<Option<Self>, WireError> {
        let target = cfg.redacted();
        let fail = |reason: String| WireError::Tls {
            target: target.clone(),
            reason,
            source: None,
        };
        if cfg.sslmode() == SslMode::Disable {
            return Ok(None);
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| fail(format!("cannot set up TLS: {e}")))?;
        let root_path = root_cert_path(cfg);
        let verify_chain = matches!(cfg.sslmode(), SslMode::VerifyCa | SslMode::VerifyFull)
            || root_path.as_ref().is_some_and(|p| p.exists());
        let config = if !verify_chain {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(EncryptOnly(provider)))
                .with_no_client_auth()
        } else {
            let path = root_path.ok_or_else(|| {
                fail(format!(
                    "sslmode={} needs a root certificate: set sslrootcert to a PEM file",
                    cfg.sslmode().as_str()
                ))
            })?;
            let roots = Arc::new(load_roots(&path).map_err(fail)?);
            if cfg.sslmode() == SslMode::VerifyFull {
                builder.with_root_certificates(roots).with_no_client_auth()
            } else {
                let inner = WebPkiServerVerifier::builder_with_provider(roots, provider)
                    .build()
                    .map_err(|e| fail(format!("cannot use {}: {e}", path.display())))?;
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(ChainOnly(inner)))
                    .with_no_client_auth()
            }
        };
        Ok(Some(TlsSettings {
            config: Arc::new(config),
        }))
    }

    /// The name to verify (and send as SNI). Modes that do not check the name accept any host
    /// text, so an unusual one falls back to a placeholder.
    fn server_name(&self, host: &str) -> Result<ServerName<'static>, io::Error> {
        ServerName::try_from(host.to_owned())
            .or_else(|_| ServerName::try_from("invalid.host".to_owned()))
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
    }

    /// Run the TLS handshake over an established socket.
    pub async fn handshake<S>(
        &self,
        socket: S,
        host: &str,
    ) -> io::Result<tokio_rustls::client::TlsStream<S>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let name = self.server_name(host)?;
        TlsConnector::from(self.config.clone())
            .connect(name, socket)
            .await
    }
}

/// `sslrootcert`, or libpq's default `~/.postgresql/root.crt`.
fn root_cert_path(cfg: &ConnConfig) -> Option<PathBuf> {
    cfg.sslrootcert()
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".postgresql/root.crt")))
}

fn load_roots(path: &std::path::Path) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read root certificate {}: {e}", path.display()))?;
    for cert in certs {
        let cert =
            cert.map_err(|e| format!("bad PEM in root certificate {}: {e}", path.display()))?;
        roots
            .add(cert)
            .map_err(|e| format!("bad certificate in {}: {e}", path.display()))?;
    }
    if roots.is_empty() {
        return Err(format!("no certificates in {}", path.display()));
    }
    Ok(roots)
}

/// `tls-server-end-point` channel binding data (RFC 5929): the server certificate hashed with
/// its signature's hash, SHA-256 when that is MD5, SHA-1 or unknown.
pub fn server_end_point(cert_der: &[u8]) -> Vec<u8> {
    const SHA384: &[&[u8]] = &[
        &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0c],
        &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03],
    ];
    const SHA512: &[&[u8]] = &[
        &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0d],
        &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x04],
    ];
    match signature_algorithm_oid(cert_der) {
        Some(oid) if SHA384.contains(&oid) => sha2::Sha384::digest(cert_der).to_vec(),
        Some(oid) if SHA512.contains(&oid) => sha2::Sha512::digest(cert_der).to_vec(),
        _ => sha2::Sha256::digest(cert_der).to_vec(),
    }
}

/// Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm SEQUENCE { OID, .. }, .. }
fn signature_algorithm_oid(der: &[u8]) -> Option<&[u8]> {
    let (_, cert, _) = der_element(der)?;
    let (_, _tbs, rest) = der_element(cert)?;
    let (_, alg, _) = der_element(rest)?;
    let (tag, oid, _) = der_element(alg)?;
    (tag == 0x06).then_some(oid)
}

/// One DER element: (tag, contents, rest).
fn der_element(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let tag = *b.first()?;
    let first = *b.get(1)?;
    let (len, header) = if first < 0x80 {
        (usize::from(first), 2)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 {
            return None;
        }
        let len = b
            .get(2..2 + n)?
            .iter()
            .fold(0usize, |acc, x| (acc << 8) | usize::from(*x));
        (len, 2 + n)
    };
    let end = header.checked_add(len)?;
    Some((tag, b.get(header..end)?, b.get(end..)?))
}

/// `sslmode=require` without a root certificate: encrypted, but any certificate is accepted,
/// as libpq does. The handshake signatures are still checked.
#[derive(Debug)]
struct EncryptOnly(Arc<CryptoProvider>);

impl ServerCertVerifier for EncryptOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca`: the chain must lead to the root certificate; the host name is not checked.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // The verifier checks the chain before the name, so a name error means the chain is good.
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// Channel binding data of an established TLS connection.
pub fn channel_binding_of<S>(stream: &tokio_rustls::client::TlsStream<S>) -> Option<Vec<u8>> {
    let certs = stream.get_ref().1.peer_certificates()?;
    Some(server_end_point(certs.first()?.as_ref()))
}

/// tokio-postgres's TLS hook, with the same sslmode rules as the replication connection.
#[derive(Debug, Clone)]
pub struct MakeRustlsConnect(pub TlsSettings);

impl tokio_postgres::tls::MakeTlsConnect<tokio_postgres::Socket> for MakeRustlsConnect {
    type Stream = RustlsStream;
    type TlsConnect = RustlsConnect;
    type Error = io::Error;

    fn make_tls_connect(&mut self, domain: &str) -> io::Result<RustlsConnect> {
        Ok(RustlsConnect {
            settings: self.0.clone(),
            host: domain.to_owned(),
        })
    }
}

#[derive(Debug)]
pub struct RustlsConnect {
    settings: TlsSettings,
    host: String,
}

type TlsFuture = Pin<Box<dyn Future<Output = io::Result<RustlsStream>> + Send>>;

impl tokio_postgres::tls::TlsConnect<tokio_postgres::Socket> for RustlsConnect {
    type Stream = RustlsStream;
    type Error = io::Error;
    type Future = TlsFuture;

    fn connect(self, socket: tokio_postgres::Socket) -> TlsFuture {
        Box::pin(async move {
            let stream = self.settings.handshake(socket, &self.host).await?;
            Ok(RustlsStream(Box::new(stream)))
        })
    }
}

#[derive(Debug)]
pub struct RustlsStream(Box<tokio_rustls::client::TlsStream<tokio_postgres::Socket>>);

impl AsyncRead for RustlsStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for RustlsStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_shutdown(cx)
    }
}

impl tokio_postgres::tls::TlsStream for RustlsStream {
    fn channel_binding(&self) -> tokio_postgres::tls::ChannelBinding {
        match channel_binding_of(&self.0) {
            Some(data) => tokio_postgres::tls::ChannelBinding::tls_server_end_point(data),
            None => tokio_postgres::tls::ChannelBinding::none(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_reader_rejects_truncation() {
        assert_eq!(der_element(&[0x30]), None);
        assert_eq!(der_element(&[0x30, 0x05, 1, 2]), None);
        assert_eq!(der_element(&[0x30, 0x80]), None);
        assert_eq!(
            der_element(&[0x06, 0x01, 0x2a, 0xff]),
            Some((0x06, &[0x2a][..], &[0xff][..]))
        );
        assert_eq!(signature_algorithm_oid(&[0x30, 0x00]), None);
        // Garbage still yields a SHA-256 binding rather than a panic.
        assert_eq!(server_end_point(b"not a certificate").len(), 32);
    }
}
