//! Validated commands. `Command::from_args` checks every value with keygate-core's
//! constructors before anything is sent, so an invalid value exits 2 without a request and
//! keyd and keyctl agree on what is valid; `run` then talks to keyd and prints.

mod audit;
mod certs;
mod config;
mod issue;
mod keys;
mod list;
mod policy;
mod register;
mod signing_key;

use crate::admin_token;
use crate::args::{CertsArgs, CommandArgs, ConfigArgs, GlobalArgs, SigningKeyArgs};
use crate::client::{BaseUrl, Keyd};
use crate::error::{Error, Result};
use crate::output::{Mode, Out};
use crate::secret::Secret;
use keygate_core::apikey::KeyId;
use std::path::PathBuf;

/// What every command may need: where keyd is, how to authenticate, where to print.
#[derive(Debug)]
pub struct Context {
    url: String,
    admin_token: Option<Secret>,
    admin_token_file: Option<PathBuf>,
    pub out: Out,
}

impl Context {
    pub fn new(global: GlobalArgs) -> Self {
        let mode = if global.json {
            Mode::Json
        } else if global.quiet {
            Mode::Quiet
        } else {
            Mode::Human
        };
        Self {
            url: global.url,
            admin_token: global.admin_token,
            admin_token_file: global.admin_token_file,
            out: Out::stdout(mode),
        }
    }

    /// Checks `--url` without needing a token, so a bad URL is an invalid argument even for
    /// commands that fail later for other reasons.
    pub fn base_url(&self) -> Result<BaseUrl> {
        BaseUrl::parse("--url", &self.url)
    }

    /// An authenticated keyd client; the token is looked up only when a command needs it.
    pub fn keyd(&self) -> Result<Keyd> {
        let base = self.base_url()?;
        let env = |k: &str| std::env::var(k).ok();
        let token = admin_token::resolve(
            self.admin_token.as_ref(),
            self.admin_token_file.as_deref(),
            &env,
        )?;
        Keyd::new(base, token)
    }
}

#[derive(Debug)]
pub enum Command {
    Issue(issue::Issue),
    List(list::List),
    Show(keys::Show),
    Rotate(keys::Rotate),
    Revoke(keys::Revoke),
    Token(keys::Token),
    Audit(audit::Audit),
    SigningKeyRotate(signing_key::Rotate),
    Register(register::Register),
    Config(config::Config),
    CertsInit(certs::Init),
}

impl Command {
    pub fn from_args(args: CommandArgs) -> Result<Self> {
        Ok(match args {
            CommandArgs::Issue(a) => Self::Issue(issue::Issue::parse(a)?),
            CommandArgs::List(a) => Self::List(list::List::parse(a)),
            CommandArgs::Show(a) => Self::Show(keys::Show::parse(a)?),
            CommandArgs::Rotate(a) => Self::Rotate(keys::Rotate::parse(a)?),
            CommandArgs::Revoke(a) => Self::Revoke(keys::Revoke::parse(a)?),
            CommandArgs::Token(a) => Self::Token(keys::Token::parse(a)?),
            CommandArgs::Audit(a) => Self::Audit(audit::Audit::parse(a)?),
            CommandArgs::SigningKey(SigningKeyArgs::Rotate { which }) => {
                Self::SigningKeyRotate(signing_key::Rotate::new(which))
            }
            CommandArgs::Register(a) => Self::Register(register::Register::parse(a)?),
            CommandArgs::Config(ConfigArgs::Envoy(a)) => Self::Config(config::Config::envoy(a)?),
            CommandArgs::Config(ConfigArgs::Nginx(a)) => Self::Config(config::Config::nginx(a)?),
            CommandArgs::Config(ConfigArgs::Caddy(a)) => Self::Config(config::Config::caddy(a)?),
            CommandArgs::Certs(CertsArgs::Init(a)) => Self::CertsInit(certs::Init::parse(a)?),
        })
    }

    pub fn run(self, ctx: &mut Context) -> Result<()> {
        match self {
            Self::Issue(c) => c.run(ctx),
            Self::List(c) => c.run(ctx),
            Self::Show(c) => c.run(ctx),
            Self::Rotate(c) => c.run(ctx),
            Self::Revoke(c) => c.run(ctx),
            Self::Token(c) => c.run(ctx),
            Self::Audit(c) => c.run(ctx),
            Self::SigningKeyRotate(c) => c.run(ctx),
            Self::Register(c) => c.run(ctx),
            Self::Config(c) => c.run(ctx),
            Self::CertsInit(c) => c.run(ctx),
        }
    }
}

/// Validates a key id argument. The value is never echoed: people paste whole keys here.
fn key_id(flag: &str, s: &str) -> Result<KeyId> {
    let s = s.trim();
    if s.starts_with(keygate_core::apikey::PREFIX) && s.len() > keygate_core::apikey::ID_LEN {
        return Err(Error::invalid(
            flag,
            "that looks like a whole API key; pass only its id (the 12 characters after kg_) \
             and keep the key secret",
        ));
    }
    KeyId::parse(s).map_err(|_| {
        Error::invalid(
            flag,
            "a key id is 12 characters of a-z and 2-7 (as shown by 'keyctl list')",
        )
    })
}

/// Text the user typed for the audit log: one line, bounded.
fn plain_text(flag: &str, s: &str, max: usize) -> Result<String> {
    if s.len() > max {
        return Err(Error::invalid(flag, format!("must be at most {max} bytes")));
    }
    if s.chars().any(char::is_control) {
        return Err(Error::invalid(flag, "must not contain control characters"));
    }
    Ok(s.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_ids_are_validated_without_echo() {
        assert!(key_id("ID", "abcdefghijk2").is_ok());
        let e = key_id("ID", "kg_abcdefghijk2_secretsecret").unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(!e.to_string().contains("secretsecret"));
        assert_eq!(key_id("ID", "ABC").unwrap_err().exit_code(), 2);
        assert_eq!(key_id("ID", "abcdefghijk1").unwrap_err().exit_code(), 2);
    }
}
