//! The failover key speakers sign their probes and hand-offs with: a Secret
//! the operator creates once with 32 random bytes. It never reads it back (an
//! existing Secret is left as it is), so its RBAC needs only `create`.

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};

/// The Secret's name in the ferrolb namespace.
pub const SECRET: &str = ferrolb_api::constants::FAILOVER_SECRET;
/// The key inside it.
pub const KEY: &str = "key";

/// Creates the failover Secret unless it exists; retries until the apiserver
/// answers one way or the other.
pub async fn ensure(client: Client, namespace: String) {
    let namespace = namespace.as_str();
    let api: Api<Secret> = Api::namespaced(client, namespace);
    loop {
        let mut bytes = vec![0u8; 32];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
            .expect("system randomness");
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(SECRET.to_string()),
                namespace: Some(namespace.to_string()),
                labels: Some(
                    [(
                        "app.kubernetes.io/part-of".to_string(),
                        "ferrolb".to_string(),
                    )]
                    .into(),
                ),
                ..ObjectMeta::default()
            },
            data: Some([(KEY.to_string(), ByteString(bytes))].into()),
            type_: Some("Opaque".to_string()),
            ..Secret::default()
        };
        match api.create(&PostParams::default(), &secret).await {
            Ok(_) => {
                tracing::info!(secret = %format!("{namespace}/{SECRET}"), "created the failover key");
                return;
            }
            Err(kube::Error::Api(status)) if status.code == 409 => return,
            Err(e) => {
                tracing::warn!(error = %e, "cannot create the failover key yet; retrying");
                tokio::time::sleep(std::time::Duration::from_secs(5)).await;
            }
        }
    }
}
