//! Where the admin token comes from. Order: `--admin-token`, `--admin-token-file`,
//! env `KEYD_ADMIN_TOKEN`, then the `admin-token` file keyd writes beside its default
//! database (`$XDG_DATA_HOME/keygate/admin-token` or `~/.local/share/keygate/admin-token`).
//! An explicit file beats the environment because someone who names a file means it.

use crate::error::{Error, Result};
use crate::secret::Secret;
use std::path::{Path, PathBuf};

pub const ENV: &str = "KEYD_ADMIN_TOKEN";

/// The file keyd writes when it creates its default database.
pub fn default_path(env: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
    let non_empty = |k: &str| env(k).filter(|v| !v.is_empty());
    if let Some(xdg) = non_empty("XDG_DATA_HOME") {
        return Some(PathBuf::from(xdg).join("keygate").join("admin-token"));
    }
    non_empty("HOME").map(|h| {
        PathBuf::from(h)
            .join(".local/share")
            .join("keygate")
            .join("admin-token")
    })
}

pub fn resolve(
    flag: Option<&Secret>,
    file: Option<&Path>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Secret> {
    if let Some(t) = flag {
        return non_empty(t.expose(), "--admin-token");
    }
    if let Some(path) = file {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::invalid(
                "--admin-token-file",
                format!("cannot read {}: {e}", path.display()),
            )
        })?;
        return non_empty(&text, "--admin-token-file");
    }
    if let Some(t) = env(ENV) {
        return non_empty(&t, ENV);
    }
    let Some(path) = default_path(env) else {
        return Err(Error::Unauthenticated(
            "no admin token: pass --admin-token-file FILE or set KEYD_ADMIN_TOKEN".to_owned(),
        ));
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => non_empty(&text, &path.display().to_string()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Error::Unauthenticated(format!(
            "no admin token: none given and {} does not exist (keyd writes it there only \
             with its default database); pass --admin-token-file FILE or set KEYD_ADMIN_TOKEN",
            path.display()
        ))),
        Err(e) => Err(Error::Unauthenticated(format!(
            "no admin token: cannot read {} ({e}); pass --admin-token-file FILE or set \
             KEYD_ADMIN_TOKEN",
            path.display()
        ))),
    }
}

fn non_empty(text: &str, source: &str) -> Result<Secret> {
    let t = text.trim();
    if t.is_empty() {
        return Err(Error::Unauthenticated(format!(
            "the admin token from {source} is empty: use the token keyd created at its first start"
        )));
    }
    if t.chars().any(char::is_control) {
        return Err(Error::invalid(
            source,
            "the admin token contains control characters",
        ));
    }
    Ok(Secret::new(t))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn default_path_prefers_xdg() {
        let env = env_of(&[("XDG_DATA_HOME", "/x"), ("HOME", "/h")]);
        assert_eq!(
            default_path(&env).unwrap(),
            PathBuf::from("/x/keygate/admin-token")
        );
        let env = env_of(&[("HOME", "/h")]);
        assert_eq!(
            default_path(&env).unwrap(),
            PathBuf::from("/h/.local/share/keygate/admin-token")
        );
    }

    #[test]
    fn order_is_flag_file_env_default() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("t");
        std::fs::write(&file, "from-file\n").unwrap();
        let xdg = dir.path().join("xdg");
        std::fs::create_dir_all(xdg.join("keygate")).unwrap();
        std::fs::write(xdg.join("keygate/admin-token"), "from-default\n").unwrap();
        let xdg_s = xdg.to_str().unwrap();
        let env = env_of(&[(ENV, "from-env"), ("XDG_DATA_HOME", xdg_s)]);
        let flag = Secret::new("from-flag");
        let got = |f: Option<&Secret>, p: Option<&Path>, e: &dyn Fn(&str) -> Option<String>| {
            resolve(f, p, e).unwrap().expose().to_owned()
        };
        assert_eq!(got(Some(&flag), Some(&file), &env), "from-flag");
        assert_eq!(got(None, Some(&file), &env), "from-file");
        assert_eq!(got(None, None, &env), "from-env");
        let env = env_of(&[("XDG_DATA_HOME", xdg_s)]);
        assert_eq!(got(None, None, &env), "from-default");
    }

    #[test]
    fn missing_default_file_is_an_auth_error_naming_the_path() {
        let env = env_of(&[("XDG_DATA_HOME", "/nonexistent-keygate-test")]);
        let err = resolve(None, None, &env).unwrap_err();
        assert_eq!(err.exit_code(), 4);
        assert!(err
            .to_string()
            .contains("/nonexistent-keygate-test/keygate/admin-token"));
    }

    #[test]
    fn empty_token_is_rejected() {
        let env = env_of(&[(ENV, "  \n")]);
        assert_eq!(resolve(None, None, &env).unwrap_err().exit_code(), 4);
    }
}
