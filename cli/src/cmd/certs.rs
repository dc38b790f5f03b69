//! `keyctl certs init`: a local CA, a server certificate and client certificates.

use super::Context;
use crate::args::CertsInitArgs;
use crate::certs::{self, Plan};
use crate::error::{Error, Result};
use crate::output::Mode;

#[derive(Debug)]
pub struct Init {
    plan: Plan,
}

impl Init {
    pub fn parse(a: CertsInitArgs) -> Result<Self> {
        let names = if a.names.is_empty() {
            vec![
                "localhost".to_owned(),
                "127.0.0.1".to_owned(),
                "::1".to_owned(),
            ]
        } else {
            a.names
                .iter()
                .map(|n| certs::server_name(n))
                .collect::<Result<_>>()?
        };
        let mut clients = a
            .clients
            .iter()
            .map(|c| certs::client_name(c))
            .collect::<Result<Vec<_>>>()?;
        let n = clients.len();
        clients.sort();
        clients.dedup();
        if clients.len() != n {
            return Err(Error::invalid(
                "--client",
                "each client name may appear once",
            ));
        }
        if a.days == 0 || a.days > 3650 {
            return Err(Error::invalid("--days", "must be between 1 and 3650"));
        }
        Ok(Self {
            plan: Plan {
                dir: a.dir,
                names,
                clients,
                days: a.days,
                force: a.force,
            },
        })
    }

    pub fn run(self, ctx: &mut Context) -> Result<()> {
        let written = certs::run(&self.plan)?;
        let out = &mut ctx.out;
        match out.mode {
            Mode::Json => out.json(&written)?,
            Mode::Quiet => {
                for w in &written {
                    out.line(&w.path)?;
                }
            }
            Mode::Human => {
                out.line(&format!(
                    "Certificates for {} in {} (keys are readable by you only):",
                    self.plan.names.join(", "),
                    self.plan.dir.display()
                ))?;
                for w in &written {
                    out.line(&format!("  {:<20}{}", w.kind, w.path))?;
                }
                out.line(
                    "Clients trust ca.crt (curl --cacert ca.crt); keep ca.key offline if you can.",
                )?;
            }
        }
        out.flush()
    }
}
