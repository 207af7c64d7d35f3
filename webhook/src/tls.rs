//! The webhook's TLS: a serving certificate that can be swapped under a running
//! server, kept either by the webhook itself (a CA and certificate in a Secret,
//! rotated before expiry, the CA bundle written into the
//! ValidatingWebhookConfiguration) or by someone else (files mounted from a
//! cert-manager Secret, reloaded when they change).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow};
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use serde_json::json;

use crate::metrics::Metrics;

/// The serving certificate, swappable while the server runs.
#[derive(Debug, Default)]
pub struct CertStore {
    current: RwLock<Option<Arc<CertifiedKey>>>,
    pem: RwLock<String>,
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.read().ok()?.clone()
    }
}

impl CertStore {
    /// Serves this certificate chain and key (PEM) from now on.
    pub fn set_pem(&self, cert_pem: &str, key_pem: &str) -> Result<bool> {
        if self.pem.read().map(|p| *p == cert_pem).unwrap_or(false) {
            return Ok(false);
        }
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(cert_pem.as_bytes())
                .collect::<Result<_, _>>()
                .map_err(|e| anyhow!("reading the certificate PEM: {e:?}"))?;
        if certs.is_empty() {
            return Err(anyhow!("no certificate in the PEM"));
        }
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
            .map_err(|e| anyhow!("reading the key PEM: {e:?}"))?;
        let signing = rustls::crypto::ring::sign::any_supported_type(&key)?;
        let certified = CertifiedKey::new(certs, signing);
        // A half-rotated mount (new certificate, old key) is not served: the
        // next poll tries again.
        certified
            .keys_match()
            .map_err(|e| anyhow!("the key does not belong to the certificate: {e}"))?;
        let certified = Arc::new(certified);
        *self
            .current
            .write()
            .map_err(|_| anyhow!("certificate lock poisoned"))? = Some(certified);
        *self
            .pem
            .write()
            .map_err(|_| anyhow!("certificate lock poisoned"))? = cert_pem.to_string();
        Ok(true)
    }

    /// Whether a certificate is loaded.
    pub fn ready(&self) -> bool {
        self.current.read().map(|c| c.is_some()).unwrap_or(false)
    }
}

/// Seconds since the epoch.
fn now_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

fn offset(seconds: u64) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp(i64::try_from(seconds).unwrap_or(i64::MAX))
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

const CA_NAME: &str = "ferrolb-webhook-ca";

fn ca_params(not_before: u64, not_after: u64) -> Result<CertificateParams> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, CA_NAME);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = offset(not_before);
    params.not_after = offset(not_after);
    Ok(params)
}

/// A new CA valid for `validity`: (certificate PEM, key PEM, not-after).
pub fn new_ca(validity: Duration) -> Result<(String, String, u64)> {
    let now = now_seconds();
    let not_after = now + validity.as_secs();
    let key = KeyPair::generate()?;
    let cert = ca_params(now.saturating_sub(60), not_after)?.self_signed(&key)?;
    Ok((cert.pem(), key.serialize_pem(), not_after))
}

/// A serving certificate signed by the CA whose key is `ca_key_pem`:
/// (certificate PEM, key PEM, not-after).
pub fn issue(
    ca_key_pem: &str,
    dns_names: &[String],
    ips: &[IpAddr],
    validity: Duration,
) -> Result<(String, String, u64)> {
    let ca_key = KeyPair::from_pem(ca_key_pem)?;
    // The issuer needs only the CA's name, key usages and key: rebuild them
    // rather than parse the CA certificate.
    let ca = ca_params(0, 0)?;
    let issuer = Issuer::from_params(&ca, &ca_key);
    let now = now_seconds();
    let not_after = now + validity.as_secs();
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(
        DnType::CommonName,
        dns_names.first().map_or("ferrolb-webhook", |s| s.as_str()),
    );
    for name in dns_names {
        params
            .subject_alt_names
            .push(SanType::DnsName(name.as_str().try_into()?));
    }
    for ip in ips {
        params.subject_alt_names.push(SanType::IpAddress(*ip));
    }
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.not_before = offset(now.saturating_sub(60));
    params.not_after = offset(not_after);
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;
    Ok((cert.pem(), key.serialize_pem(), not_after))
}

/// A certificate whose remaining life is under a third of `validity` is due.
fn due(not_after: Option<u64>, validity: Duration) -> bool {
    not_after.is_none_or(|t| t.saturating_sub(now_seconds()) < validity.as_secs() / 3)
}

/// The webhook keeps its own CA and serving certificate in a Secret.
pub struct SelfManaged {
    /// A client with rights on the Secret and the webhook configuration.
    pub client: Client,
    /// The Secret's namespace.
    pub namespace: String,
    /// The Secret's name.
    pub secret: String,
    /// The ValidatingWebhookConfiguration to write the CA bundle into.
    pub webhook_config: String,
    /// DNS names of the serving certificate (the Service's names).
    pub dns_names: Vec<String>,
    /// IP addresses of the serving certificate.
    pub ips: Vec<IpAddr>,
    /// Lifetime of a serving certificate; it is replaced with a third left.
    pub validity: Duration,
    /// Lifetime of the CA.
    pub ca_validity: Duration,
    /// Where the serving certificate goes.
    pub store: Arc<CertStore>,
    /// Counts certificates issued.
    pub metrics: Arc<Metrics>,
}

const ANNOTATION_NOT_AFTER: &str = "ferrolb.io/not-after";
const ANNOTATION_CA_NOT_AFTER: &str = "ferrolb.io/ca-not-after";
const ANNOTATION_SANS: &str = "ferrolb.io/sans";

impl SelfManaged {
    fn sans(&self) -> String {
        let mut sans: Vec<String> = self.dns_names.clone();
        sans.extend(self.ips.iter().map(ToString::to_string));
        sans.join(",")
    }

    /// Makes sure a valid certificate is in the Secret, served, and trusted by
    /// the webhook configuration; issues and rotates as needed.
    pub async fn ensure(&self) -> Result<()> {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), &self.namespace);
        let existing = api.get_opt(&self.secret).await?;
        let data: BTreeMap<String, String> = existing
            .as_ref()
            .and_then(|s| s.data.clone())
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
            .collect();
        let annotations = existing
            .as_ref()
            .and_then(|s| s.metadata.annotations.clone())
            .unwrap_or_default();
        let number = |key: &str| annotations.get(key).and_then(|v| v.parse::<u64>().ok());
        let mut next = data.clone();
        let mut next_annotations = annotations.clone();
        let ca_due = !data.contains_key("ca.crt")
            || !data.contains_key("ca.key")
            || due(number(ANNOTATION_CA_NOT_AFTER), self.ca_validity);
        if ca_due {
            let (cert, key, not_after) = new_ca(self.ca_validity)?;
            if let Some(old) = data.get("ca.crt") {
                // Trusted alongside the new CA until the next CA rotation.
                next.insert("ca-previous.crt".into(), old.clone());
            }
            next.insert("ca.crt".into(), cert);
            next.insert("ca.key".into(), key);
            next_annotations.insert(ANNOTATION_CA_NOT_AFTER.into(), not_after.to_string());
            tracing::info!(secret = %self.secret, "issued a new webhook CA");
        }
        let cert_due = ca_due
            || !data.contains_key("tls.crt")
            || !data.contains_key("tls.key")
            || annotations.get(ANNOTATION_SANS) != Some(&self.sans())
            || due(number(ANNOTATION_NOT_AFTER), self.validity);
        if cert_due {
            let ca_key = next.get("ca.key").context("CA key")?;
            let (cert, key, not_after) = issue(ca_key, &self.dns_names, &self.ips, self.validity)?;
            next.insert("tls.crt".into(), cert);
            next.insert("tls.key".into(), key);
            next_annotations.insert(ANNOTATION_NOT_AFTER.into(), not_after.to_string());
            next_annotations.insert(ANNOTATION_SANS.into(), self.sans());
        }
        if cert_due {
            let secret = Secret {
                metadata: ObjectMeta {
                    name: Some(self.secret.clone()),
                    namespace: Some(self.namespace.clone()),
                    annotations: Some(next_annotations),
                    resource_version: existing
                        .as_ref()
                        .and_then(|s| s.metadata.resource_version.clone()),
                    ..ObjectMeta::default()
                },
                type_: Some("kubernetes.io/tls".into()),
                data: Some(
                    next.iter()
                        .map(|(k, v)| (k.clone(), ByteString(v.clone().into_bytes())))
                        .collect(),
                ),
                ..Secret::default()
            };
            // Create, or replace the version we read: with several replicas the
            // first writer wins and the others load its certificate next time.
            let written = match existing {
                None => api.create(&PostParams::default(), &secret).await,
                Some(_) => {
                    api.replace(&self.secret, &PostParams::default(), &secret)
                        .await
                }
            };
            match written {
                Ok(_) => {
                    self.metrics.certificates.inc();
                    tracing::info!(secret = %self.secret, "serving certificate issued");
                }
                Err(kube::Error::Api(e)) if e.code == 409 => {
                    tracing::info!(
                        "another replica wrote the certificate first; loading it next round"
                    );
                    return Ok(());
                }
                Err(e) => return Err(e.into()),
            }
        }
        let (cert, key) = (
            next.get("tls.crt").context("certificate")?,
            next.get("tls.key").context("key")?,
        );
        if self.store.set_pem(cert, key)? {
            tracing::info!("serving certificate loaded");
        }
        let mut bundle = next.get("ca.crt").cloned().unwrap_or_default();
        if let Some(previous) = next.get("ca-previous.crt") {
            bundle.push_str(previous);
        }
        self.publish_bundle(bundle.as_bytes()).await
    }

    /// Writes the CA bundle into every webhook of the configuration (server-side
    /// apply, only the caBundle fields).
    async fn publish_bundle(&self, bundle: &[u8]) -> Result<()> {
        let api: Api<ValidatingWebhookConfiguration> = Api::all(self.client.clone());
        let Some(config) = api.get_opt(&self.webhook_config).await? else {
            tracing::warn!(name = %self.webhook_config, "no ValidatingWebhookConfiguration of that name yet");
            return Ok(());
        };
        let webhooks = config.webhooks.unwrap_or_default();
        if webhooks
            .iter()
            .all(|w| w.client_config.ca_bundle.as_ref().map(|b| b.0.as_slice()) == Some(bundle))
        {
            return Ok(());
        }
        let entries: Vec<serde_json::Value> = webhooks
            .iter()
            .map(|w| json!({ "name": w.name, "clientConfig": { "caBundle": ByteString(bundle.to_vec()) } }))
            .collect();
        let body = json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingWebhookConfiguration",
            "metadata": { "name": self.webhook_config },
            "webhooks": entries,
        });
        api.patch(
            &self.webhook_config,
            &PatchParams::apply(ferrolb_api::constants::manager::WEBHOOK).force(),
            &Patch::Apply(body),
        )
        .await?;
        tracing::info!(name = %self.webhook_config, "CA bundle written into the webhook configuration");
        Ok(())
    }

    /// Keeps the certificate valid until the process ends.
    pub async fn run(self) {
        let every = (self.validity / 10).clamp(Duration::from_millis(500), Duration::from_secs(60));
        loop {
            if let Err(e) = self.ensure().await {
                tracing::warn!(error = %e, "cannot maintain the serving certificate");
            }
            tokio::time::sleep(every).await;
        }
    }
}

/// A certificate and key mounted as files (cert-manager), reloaded on change.
pub struct Mounted {
    /// The certificate chain (PEM).
    pub cert: PathBuf,
    /// The key (PEM).
    pub key: PathBuf,
    /// Where they go.
    pub store: Arc<CertStore>,
}

impl Mounted {
    /// Loads the files once.
    pub fn load(&self) -> Result<bool> {
        let cert = std::fs::read_to_string(&self.cert)
            .with_context(|| format!("reading {}", self.cert.display()))?;
        let key = std::fs::read_to_string(&self.key)
            .with_context(|| format!("reading {}", self.key.display()))?;
        self.store.set_pem(&cert, &key)
    }

    /// Reloads whenever the files change, until the process ends.
    pub async fn run(self) {
        loop {
            match self.load() {
                Ok(true) => {
                    tracing::info!(cert = %self.cert.display(), "certificate (re)loaded from files")
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "cannot load the mounted certificate"),
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_certificates_load_and_swap() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let (_, ca_key, ca_after) = new_ca(Duration::from_secs(3600)).expect("ca");
        assert!(ca_after > now_seconds());
        let (cert, key, _) = issue(
            &ca_key,
            &["webhook.ferrolb-system.svc".into()],
            &["127.0.0.1".parse().expect("ip")],
            Duration::from_secs(60),
        )
        .expect("issue");
        let store = CertStore::default();
        assert!(!store.ready());
        assert!(store.set_pem(&cert, &key).expect("load"));
        assert!(
            !store.set_pem(&cert, &key).expect("same"),
            "the same certificate is not reloaded"
        );
        let (cert2, key2, _) = issue(
            &ca_key,
            &[],
            &["127.0.0.1".parse().expect("ip")],
            Duration::from_secs(60),
        )
        .expect("issue");
        assert!(store.set_pem(&cert2, &key2).expect("swap"));
        assert!(store.ready());
        assert!(store.set_pem("garbage", &key2).is_err());
        let (cert3, _, _) = issue(&ca_key, &[], &[], Duration::from_secs(60)).expect("issue");
        assert!(
            store.set_pem(&cert3, &key2).is_err(),
            "a key of another certificate is refused"
        );
    }

    #[test]
    fn certificates_are_due_with_a_third_of_their_life_left() {
        let validity = Duration::from_secs(300);
        assert!(due(None, validity));
        assert!(due(Some(now_seconds() + 50), validity));
        assert!(!due(Some(now_seconds() + 250), validity));
    }
}
