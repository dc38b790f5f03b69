//! A local certificate authority for a homelab or a test: a CA, one server certificate for
//! the names given, and client certificates for mTLS. ECDSA P-256 keys, private keys written
//! 0600 and never overwritten unless asked.

use crate::error::{Error, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use time::{Duration, OffsetDateTime};

/// The CA outlives the certificates it signs, so re-issuing them keeps clients' trust.
const CA_DAYS: i64 = 3650;

/// What `certs init` makes.
#[derive(Debug)]
pub struct Plan {
    pub dir: PathBuf,
    pub names: Vec<String>,
    pub clients: Vec<String>,
    pub days: u32,
    pub force: bool,
}

/// A file written, for the report.
#[derive(Debug, serde::Serialize)]
pub struct Written {
    pub path: String,
    pub kind: &'static str,
}

/// Checks a server name: a DNS name (wildcards allowed in the first label) or an IP.
pub fn server_name(s: &str) -> Result<String> {
    let s = s.trim();
    if s.parse::<IpAddr>().is_ok() {
        return Ok(s.to_owned());
    }
    let label_ok = |l: &str, first: bool| {
        (first && l == "*")
            || (!l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
    };
    let ok = !s.is_empty()
        && s.len() <= 253
        && s.split('.').enumerate().all(|(i, l)| label_ok(l, i == 0));
    if !ok {
        return Err(Error::invalid(
            "--name",
            "must be a DNS name (gateway.lan, *.lan) or an IP address",
        ));
    }
    Ok(s.to_ascii_lowercase())
}

/// Checks a client name; it becomes part of a file name.
pub fn client_name(s: &str) -> Result<String> {
    let ok = !s.is_empty()
        && s.len() <= 64
        && !s.starts_with('.')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !ok {
        return Err(Error::invalid(
            "--client",
            "use 1-64 characters of letters, digits, '-', '_' and '.' (it names the files)",
        ));
    }
    Ok(s.to_owned())
}

fn rcgen_err(what: &str, e: rcgen::Error) -> Error {
    Error::Other(format!("cannot create the {what}: {e}"))
}

fn dn(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "keygate");
    dn.push(DnType::CommonName, cn);
    dn
}

pub fn run(plan: &Plan) -> Result<Vec<Written>> {
    let mut files = vec![
        ("ca.crt", false),
        ("ca.key", true),
        ("server.crt", false),
        ("server.key", true),
    ];
    let client_files: Vec<(String, String)> = plan
        .clients
        .iter()
        .map(|c| (format!("client-{c}.crt"), format!("client-{c}.key")))
        .collect();
    for (crt, key) in &client_files {
        files.push((crt.as_str(), false));
        files.push((key.as_str(), true));
    }
    if !plan.force {
        if let Some((existing, _)) = files.iter().find(|(f, _)| plan.dir.join(f).exists()) {
            return Err(Error::Conflict(format!(
                "{} already exists: pick another directory, or pass --force to replace every file",
                plan.dir.join(existing).display()
            )));
        }
    }
    create_dir(&plan.dir)?;

    let now = OffsetDateTime::now_utc();
    let leaf_until = now + Duration::days(i64::from(plan.days));

    let ca_key = KeyPair::generate().map_err(|e| rcgen_err("CA key", e))?;
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(|e| rcgen_err("CA", e))?;
    ca.distinguished_name = dn("keygate local CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca.not_before = now - Duration::minutes(5);
    ca.not_after = now + Duration::days(CA_DAYS);
    let ca_cert = ca.self_signed(&ca_key).map_err(|e| rcgen_err("CA", e))?;

    let server_key = KeyPair::generate().map_err(|e| rcgen_err("server key", e))?;
    let mut server = CertificateParams::new(plan.names.clone())
        .map_err(|e| rcgen_err("server certificate", e))?;
    server.distinguished_name = dn(plan.names.first().map_or("localhost", String::as_str));
    server.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    server.not_before = now - Duration::minutes(5);
    server.not_after = leaf_until;
    let server_cert = server
        .signed_by(&server_key, &ca_cert, &ca_key)
        .map_err(|e| rcgen_err("server certificate", e))?;

    let mut written = Vec::new();
    let mut write = |name: &str, text: &str, secret: bool, kind: &'static str| -> Result<()> {
        let path = plan.dir.join(name);
        write_file(&path, text, secret, plan.force)?;
        written.push(Written {
            path: path.display().to_string(),
            kind,
        });
        Ok(())
    };
    write("ca.crt", &ca_cert.pem(), false, "ca certificate")?;
    write("ca.key", &ca_key.serialize_pem(), true, "ca key")?;
    write(
        "server.crt",
        &server_cert.pem(),
        false,
        "server certificate",
    )?;
    write(
        "server.key",
        &server_key.serialize_pem(),
        true,
        "server key",
    )?;

    for (client, (crt, key)) in plan.clients.iter().zip(&client_files) {
        let client_key = KeyPair::generate().map_err(|e| rcgen_err("client key", e))?;
        let mut params = CertificateParams::new(Vec::<String>::new())
            .map_err(|e| rcgen_err("client certificate", e))?;
        params.distinguished_name = dn(client);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.not_before = now - Duration::minutes(5);
        params.not_after = leaf_until;
        let cert = params
            .signed_by(&client_key, &ca_cert, &ca_key)
            .map_err(|e| rcgen_err("client certificate", e))?;
        write(crt, &cert.pem(), false, "client certificate")?;
        write(key, &client_key.serialize_pem(), true, "client key")?;
    }
    Ok(written)
}

/// Creates `dir` 0700 if missing (an existing directory keeps its permissions).
fn create_dir(dir: &Path) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::file(format!("cannot create {}", dir.display()), e))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| Error::file(format!("cannot restrict {}", dir.display()), e))
}

/// Writes a file with its final mode from the first byte: a key is never readable by others,
/// not even for a moment.
fn write_file(path: &Path, text: &str, secret: bool, replace: bool) -> Result<()> {
    let mode = if secret { 0o600 } else { 0o644 };
    let ctx = || format!("cannot write {}", path.display());
    if replace && path.exists() {
        std::fs::remove_file(path).map_err(|e| Error::file(ctx(), e))?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| Error::file(ctx(), e))?;
    // The umask may have removed bits from `mode`; set exactly what we mean.
    f.set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(|e| Error::file(ctx(), e))?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| Error::file(ctx(), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(dir: &Path) -> Plan {
        Plan {
            dir: dir.to_owned(),
            names: vec!["localhost".into(), "127.0.0.1".into()],
            clients: vec!["alice".into()],
            days: 30,
            force: false,
        }
    }

    #[test]
    fn writes_files_with_modes_and_refuses_to_overwrite() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("certs");
        let written = run(&plan(&dir)).unwrap();
        assert_eq!(written.len(), 6);
        let mode = |f: &str| std::fs::metadata(dir.join(f)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode("ca.key"), 0o600);
        assert_eq!(mode("server.key"), 0o600);
        assert_eq!(mode("client-alice.key"), 0o600);
        assert_eq!(mode("ca.crt"), 0o644);
        assert_eq!(
            std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
            0o700
        );
        let pem = std::fs::read_to_string(dir.join("server.crt")).unwrap();
        assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"));
        let before = std::fs::read_to_string(dir.join("ca.key")).unwrap();
        let err = run(&plan(&dir)).unwrap_err();
        assert_eq!(err.exit_code(), 6);
        assert_eq!(std::fs::read_to_string(dir.join("ca.key")).unwrap(), before);
        let mut p = plan(&dir);
        p.force = true;
        run(&p).unwrap();
        assert_ne!(std::fs::read_to_string(dir.join("ca.key")).unwrap(), before);
    }

    #[test]
    fn names_are_checked() {
        assert_eq!(server_name("Gateway.LAN").unwrap(), "gateway.lan");
        assert!(server_name("*.lan").is_ok());
        assert!(server_name("::1").is_ok());
        for bad in ["", "a b", "a..b", "-a.lan", "a.*.lan"] {
            assert!(server_name(bad).is_err(), "{bad}");
        }
        assert!(client_name("alice.laptop").is_ok());
        for bad in ["", "../x", "a/b", ".hidden"] {
            assert!(client_name(bad).is_err(), "{bad}");
        }
    }
}
