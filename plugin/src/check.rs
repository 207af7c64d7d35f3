//! What `convert --check` says about the apiserver's answers, pure: the
//! `Warning` headers it sent (admission webhooks' warnings among them), and
//! which of them only arise because a dry run stores nothing.
//!
//! A dry run judges each object alone, with nothing of the output stored: an
//! L2Advertisement naming a pool of the same output is warned that the pool
//! "does not exist yet", though it will once the output is applied. Those
//! warnings are left out; every other warning is shown.

use serde_json::Value;

/// The text of one `Warning` header value (`299 - "text"`, RFC 7234 as the
/// apiserver writes it: code, agent, quoted text with `\"` and `\\`
/// escaped). A value in another shape is returned as it is.
pub fn warning_text(header: &str) -> String {
    let mut parts = header.trim().splitn(3, ' ');
    let (Some(code), Some(_agent), Some(rest)) = (parts.next(), parts.next(), parts.next()) else {
        return header.trim().to_string();
    };
    let quoted = rest.trim();
    if code.len() != 3
        || !code.bytes().all(|b| b.is_ascii_digit())
        || quoted.len() < 2
        || !quoted.starts_with('"')
    {
        return header.trim().to_string();
    }
    let mut text = String::new();
    let mut chars = quoted[1..].chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(next) = chars.next() {
                    text.push(next);
                }
            }
            // The closing quote; a date may follow, unused.
            '"' => return text,
            c => text.push(c),
        }
    }
    header.trim().to_string()
}

/// Whether `warning` only says that an object of `output` does not exist:
/// true once the output is applied, so not worth showing after a dry run.
pub fn moot_in_dry_run(warning: &str, output: &[Value]) -> bool {
    if !warning.contains("does not exist yet") {
        return false;
    }
    output.iter().any(|object| {
        let kind = object["kind"].as_str().unwrap_or_default();
        let name = object["metadata"]["name"].as_str().unwrap_or_default();
        if kind.is_empty() || name.is_empty() {
            return false;
        }
        if kind == "Secret" {
            let namespace = object["metadata"]["namespace"]
                .as_str()
                .unwrap_or("default");
            return warning.contains(&format!("Secret {namespace}/{name} "));
        }
        warning.contains(&format!("{kind} '{name}'"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_apiserver_warning_header_gives_its_text_unescaped() {
        assert_eq!(
            warning_text(r#"299 - "spec.bfdProfile: BFDProfile 'fast' does not exist yet""#),
            "spec.bfdProfile: BFDProfile 'fast' does not exist yet"
        );
        assert_eq!(
            warning_text(r#"299 - "a \"quoted\" word and a back\\slash""#),
            r#"a "quoted" word and a back\slash"#
        );
        assert_eq!(
            warning_text(r#"299 kube-apiserver "text" "Mon, 30 Nov 2026 08:00:00 GMT""#),
            "text"
        );
        // Unicode passes through.
        assert_eq!(warning_text("299 - \"a — b\""), "a — b");
        // Anything else is shown as sent, not lost.
        assert_eq!(warning_text("not a warning"), "not a warning");
        assert_eq!(
            warning_text(r#"299 - "unterminated"#),
            r#"299 - "unterminated"#
        );
    }

    #[test]
    fn warnings_about_objects_of_the_same_output_are_moot_others_are_not() {
        let output = vec![
            json!({"kind": "IPAddressPool", "metadata": {"name": "default"}}),
            json!({"kind": "BFDProfile", "metadata": {"name": "fast"}}),
            json!({"kind": "Secret", "metadata": {"name": "ferrolb-bgp-passwords", "namespace": "ferrolb-system"}}),
        ];
        let pool = "spec.ipAddressPools: IPAddressPool 'default' does not exist yet; it is advertised as soon as it does";
        let other_pool = "spec.ipAddressPools: IPAddressPool 'elsewhere' does not exist yet; it is advertised as soon as it does";
        let profile = "spec.bfdProfile: BFDProfile 'fast' does not exist yet; the sessions run without BFD until it does";
        let secret = "spec.passwordSecretRef: Secret ferrolb-system/ferrolb-bgp-passwords with key 'router' does not exist yet; sessions to this peer fail until it does";
        let other_secret = "spec.passwordSecretRef: Secret default/ferrolb-bgp-passwords with key 'router' does not exist yet; sessions to this peer fail until it does";
        let stranded = "IPAddressPool 'default': Services default/web (192.0.2.7) keep IPs that will be in no pool";
        assert!(moot_in_dry_run(pool, &output));
        assert!(moot_in_dry_run(profile, &output));
        assert!(moot_in_dry_run(secret, &output));
        assert!(!moot_in_dry_run(other_pool, &output));
        assert!(!moot_in_dry_run(other_secret, &output));
        assert!(!moot_in_dry_run(stranded, &output));
        // A prefix of another name is not that name.
        let prefix = "spec.ipAddressPools: IPAddressPool 'defaults' does not exist yet";
        assert!(!moot_in_dry_run(prefix, &output));
    }
}
