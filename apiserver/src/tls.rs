//! TLS for the API: client-go sends a bearer token only over HTTPS, so the
//! server keeps its own CA under the data directory (key readable by root only)
//! and signs a fresh serving certificate for the addresses it listens on at
//! every start. The CA certificate goes into the kubeconfig.

use std::fs;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::ServerConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::kubeconfig::write_private;

pub(crate) const CA_CERT: &str = "ca.crt";
const CA_KEY: &str = "ca.key";

/// The server's TLS configuration and the CA certificate clients should trust.
pub struct Tls {
    pub config: Arc<ServerConfig>,
    pub ca_pem: String,
}

fn tls_error(error: impl std::fmt::Display) -> io::Error {
    io::Error::other(error.to_string())
}

fn ca_params() -> Result<CertificateParams, rcgen::Error> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params
        .distinguished_name
        .push(DnType::CommonName, "stowage-apiserver-ca");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(params)
}

/// Loads the CA from `dir` (creating it on first start) and issues a serving certificate.
pub fn load_or_create(dir: &Path, listen: SocketAddr) -> io::Result<Tls> {
    let (ca_key, ca_pem) = match (
        fs::read_to_string(dir.join(CA_KEY)),
        fs::read_to_string(dir.join(CA_CERT)),
    ) {
        (Ok(key), Ok(cert)) => (KeyPair::from_pem(&key).map_err(tls_error)?, cert),
        _ => create_ca(dir)?,
    };
    let issuer = Issuer::new(ca_params().map_err(tls_error)?, ca_key);
    let server_key = KeyPair::generate().map_err(tls_error)?;
    let mut params = CertificateParams::new(subject_names(listen)).map_err(tls_error)?;
    params
        .distinguished_name
        .push(DnType::CommonName, "stowage-apiserver");
    let certificate = params.signed_by(&server_key, &issuer).map_err(tls_error)?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der()));
    let chain: Vec<CertificateDer<'static>> = vec![certificate.der().clone()];
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(tls_error)?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(tls_error)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Tls {
        config: Arc::new(config),
        ca_pem,
    })
}

fn create_ca(dir: &Path) -> io::Result<(KeyPair, String)> {
    let key = KeyPair::generate().map_err(tls_error)?;
    let certificate = ca_params()
        .and_then(|p| p.self_signed(&key))
        .map_err(tls_error)?;
    write_private(&dir.join(CA_KEY), key.serialize_pem().as_bytes())?;
    let pem = certificate.pem();
    write_private(&dir.join(CA_CERT), pem.as_bytes())?;
    Ok((key, pem))
}

/// localhost and the loopback addresses always; the listening address when specific.
fn subject_names(listen: SocketAddr) -> Vec<String> {
    let mut names = vec![
        "localhost".to_string(),
        IpAddr::V4(Ipv4Addr::LOCALHOST).to_string(),
        IpAddr::V6(Ipv6Addr::LOCALHOST).to_string(),
    ];
    let ip = listen.ip();
    if !ip.is_unspecified() && !ip.is_loopback() {
        names.push(ip.to_string());
    }
    names
}
