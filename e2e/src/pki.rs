//! Certificates for the test control plane: one CA, the apiserver's serving
//! certificate, an admin client certificate and the service-account signing key.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

/// The files written by [`write_pki`].
#[derive(Clone, Debug)]
pub struct Pki {
    /// The CA certificate (PEM).
    pub ca_cert: PathBuf,
    /// The apiserver's serving certificate and key.
    pub serving_cert: PathBuf,
    /// See `serving_cert`.
    pub serving_key: PathBuf,
    /// The admin client certificate (`system:masters`) and key.
    pub admin_cert: PathBuf,
    /// See `admin_cert`.
    pub admin_key: PathBuf,
    /// The service-account token signing key.
    pub service_account_key: PathBuf,
    /// Its public half, which the apiserver verifies tokens with.
    pub service_account_pub: PathBuf,
}

fn write(dir: &Path, name: &str, contents: &str) -> Result<PathBuf> {
    let path = dir.join(name);
    std::fs::write(&path, contents).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// A CA that signs leaf certificates.
pub struct Authority {
    params: CertificateParams,
    key: KeyPair,
    pem: String,
}

impl Authority {
    /// A new self-signed CA named `name`.
    pub fn new(name: &str) -> Result<Authority> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate()?;
        let pem = params.self_signed(&key)?.pem();
        Ok(Authority { params, key, pem })
    }

    /// The CA certificate in PEM.
    pub fn pem(&self) -> &str {
        &self.pem
    }

    /// The CA's private key in PEM (the controller-manager signs with it).
    pub fn key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    /// A leaf certificate and its key (PEM), for a server (`sans` set) or a client
    /// (`organization` set, which Kubernetes reads as the user's group).
    pub fn issue(
        &self,
        common_name: &str,
        organization: Option<&str>,
        sans: &[&str],
        server: bool,
    ) -> Result<(String, String)> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        if let Some(org) = organization {
            params
                .distinguished_name
                .push(DnType::OrganizationName, org);
        }
        for san in sans {
            params.subject_alt_names.push(match san.parse() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName((*san).try_into()?),
            });
        }
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![if server {
            ExtendedKeyUsagePurpose::ServerAuth
        } else {
            ExtendedKeyUsagePurpose::ClientAuth
        }];
        let key = KeyPair::generate()?;
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(&key, &issuer)?;
        Ok((cert.pem(), key.serialize_pem()))
    }
}

/// Writes a fresh PKI for an apiserver on loopback into `dir`.
pub fn write_pki(dir: &Path) -> Result<Pki> {
    let ca = Authority::new("ferrolb-test-ca")?;
    let (serving, serving_key) = ca.issue(
        "kube-apiserver",
        None,
        &[
            "localhost",
            "127.0.0.1",
            "::1",
            "kubernetes",
            "kubernetes.default.svc",
        ],
        true,
    )?;
    let (admin, admin_key) = ca.issue("admin", Some("system:masters"), &[], false)?;
    let sa = KeyPair::generate()?;
    Ok(Pki {
        ca_cert: write(dir, "ca.crt", ca.pem())?,
        serving_cert: write(dir, "apiserver.crt", &serving)?,
        serving_key: write(dir, "apiserver.key", &serving_key)?,
        admin_cert: write(dir, "admin.crt", &admin)?,
        admin_key: write(dir, "admin.key", &admin_key)?,
        service_account_key: write(dir, "sa.key", &sa.serialize_pem())?,
        service_account_pub: write(dir, "sa.pub", &sa.public_key_pem())?,
    })
}
