//! Validated options shared by the proxy config generators (`keyctl config envoy|nginx|caddy`).
//!
//! Every value ends up inside another program's config syntax, so anything that could
//! break out of it (quotes, braces, `;`, `$`, whitespace) is rejected here, once.

use crate::args::ProxyArgs;
use crate::error::{Error, Result};
use reqwest::Url;
use std::net::{IpAddr, SocketAddr};

/// Where the proxy listens: one address, or every interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listen {
    pub ip: Option<IpAddr>,
    pub port: u16,
}

impl Listen {
    pub fn parse(flag: &str, s: &str) -> Result<Self> {
        let s = s.trim();
        const HELP: &str = "use IP:PORT (127.0.0.1:8080, [::1]:8080) or :PORT for every interface";
        if let Some(port) = s.strip_prefix(':') {
            let port = port
                .parse::<u16>()
                .map_err(|_| Error::invalid(flag, HELP))?;
            return Self::checked(flag, None, port);
        }
        let addr: SocketAddr = s.parse().map_err(|_| Error::invalid(flag, HELP))?;
        Self::checked(flag, Some(addr.ip()), addr.port())
    }

    fn checked(flag: &str, ip: Option<IpAddr>, port: u16) -> Result<Self> {
        if port == 0 {
            return Err(Error::invalid(flag, "port 0 is not a fixed port; pick one"));
        }
        let ip = ip.filter(|ip| !ip.is_unspecified() || ip.is_ipv6());
        Ok(Self { ip, port })
    }

    /// `127.0.0.1:8080`, `[::1]:8080`, or `0.0.0.0:8080` for every interface.
    pub fn socket(&self) -> String {
        match self.ip {
            Some(ip) => SocketAddr::new(ip, self.port).to_string(),
            None => format!("0.0.0.0:{}", self.port),
        }
    }

    /// The form the user would write on the command line.
    pub fn arg(&self) -> String {
        match self.ip {
            Some(_) => self.socket(),
            None => format!(":{}", self.port),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

/// An HTTP service the proxy talks to (Ollama or keyd): scheme, host and port only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub scheme: Scheme,
    /// As in a URL: a name, an IPv4 address or a bracketed IPv6 address.
    pub host: String,
    pub port: u16,
}

impl Endpoint {
    pub fn parse(flag: &str, s: &str) -> Result<Self> {
        let help = "use a URL like http://127.0.0.1:11434";
        if !s.contains("://") {
            return Err(Error::invalid(flag, format!("needs a scheme: {help}")));
        }
        let url = Url::parse(s.trim()).map_err(|e| Error::invalid(flag, format!("{e}: {help}")))?;
        let scheme = match url.scheme() {
            "http" => Scheme::Http,
            "https" => Scheme::Https,
            _ => {
                return Err(Error::invalid(
                    flag,
                    format!("must be http or https: {help}"),
                ))
            }
        };
        if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
            return Err(Error::invalid(
                flag,
                format!(
                    "must not have a path or query (the proxy forwards paths as they are): {help}"
                ),
            ));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(Error::invalid(flag, "must not carry credentials"));
        }
        // IPv6 hosts come back bracketed, as they must be written next to a port.
        let host = match url.host_str() {
            Some(h) if !h.is_empty() => h.to_owned(),
            _ => return Err(Error::invalid(flag, format!("has no host: {help}"))),
        };
        let port = url
            .port_or_known_default()
            .ok_or_else(|| Error::invalid(flag, format!("has no port: {help}")))?;
        Ok(Self { scheme, host, port })
    }

    pub fn host_port(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    pub fn url(&self) -> String {
        let scheme = match self.scheme {
            Scheme::Http => "http",
            Scheme::Https => "https",
        };
        format!("{scheme}://{}", self.host_port())
    }
}

/// TLS 1.3 on the listener, optionally requiring client certificates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tls {
    pub cert: String,
    pub key: String,
    pub client_ca: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyOpts {
    pub listen: Listen,
    pub upstream: Endpoint,
    pub keyd: Vec<Endpoint>,
    pub tls: Option<Tls>,
}

impl ProxyOpts {
    pub fn parse(a: ProxyArgs) -> Result<Self> {
        let listen = Listen::parse("--listen", &a.listen)?;
        let upstream = Endpoint::parse("--upstream", &a.upstream)?;
        if a.keyd.is_empty() {
            return Err(Error::invalid("--keyd", "give at least one keyd URL"));
        }
        let keyd = a
            .keyd
            .iter()
            .map(|k| Endpoint::parse("--keyd", k))
            .collect::<Result<Vec<_>>>()?;
        let tls = match (a.tls_cert, a.tls_key) {
            (Some(cert), Some(key)) => Some(Tls {
                cert: config_path("--tls-cert", &cert)?,
                key: config_path("--tls-key", &key)?,
                client_ca: a
                    .client_ca
                    .as_deref()
                    .map(|c| config_path("--client-ca", c))
                    .transpose()?,
            }),
            (None, None) if a.client_ca.is_some() => {
                return Err(Error::invalid(
                    "--client-ca",
                    "needs --tls-cert and --tls-key",
                ))
            }
            (None, None) => None,
            _ => {
                return Err(Error::invalid(
                    "--tls-cert",
                    "--tls-cert and --tls-key go together",
                ))
            }
        };
        Ok(Self {
            listen,
            upstream,
            keyd,
            tls,
        })
    }

    /// The options as command-line flags, for the "generated by" line of a config.
    pub fn args(&self) -> String {
        let mut s = format!(
            "--listen {} --upstream {}",
            self.listen.arg(),
            self.upstream.url()
        );
        for k in &self.keyd {
            s.push_str(&format!(" --keyd {}", k.url()));
        }
        if let Some(t) = &self.tls {
            s.push_str(&format!(" --tls-cert {} --tls-key {}", t.cert, t.key));
            if let Some(ca) = &t.client_ca {
                s.push_str(&format!(" --client-ca {ca}"));
            }
        }
        s
    }
}

/// A file path that goes into a config verbatim. Characters with a meaning in nginx,
/// Caddyfile or YAML syntax are refused rather than escaped three different ways.
pub fn config_path(flag: &str, s: &str) -> Result<String> {
    if s.is_empty() {
        return Err(Error::invalid(flag, "empty path"));
    }
    if let Some(c) = s
        .chars()
        .find(|c| c.is_whitespace() || c.is_control() || "\"'`;{}$#\\".contains(*c))
    {
        return Err(Error::invalid(
            flag,
            format!(
                "the path contains {c:?}, which config files cannot hold safely; move the file"
            ),
        ));
    }
    Ok(s.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_forms() {
        let l = Listen::parse("--listen", "127.0.0.1:8080").unwrap();
        assert_eq!(
            (l.socket(), l.arg()),
            ("127.0.0.1:8080".into(), "127.0.0.1:8080".into())
        );
        let l = Listen::parse("--listen", ":443").unwrap();
        assert_eq!((l.socket(), l.arg()), ("0.0.0.0:443".into(), ":443".into()));
        let l = Listen::parse("--listen", "0.0.0.0:443").unwrap();
        assert_eq!(l.ip, None);
        let l = Listen::parse("--listen", "[::1]:8443").unwrap();
        assert_eq!(l.socket(), "[::1]:8443");
        for bad in ["localhost:80", "8080", "1.2.3.4", "1.2.3.4:0", ":x", ""] {
            assert_eq!(
                Listen::parse("--listen", bad).unwrap_err().exit_code(),
                2,
                "{bad}"
            );
        }
    }

    #[test]
    fn endpoint_forms() {
        let e = Endpoint::parse("--upstream", "http://127.0.0.1:11434/").unwrap();
        assert_eq!(e.url(), "http://127.0.0.1:11434");
        let e = Endpoint::parse("--upstream", "http://ollama").unwrap();
        assert_eq!(e.host_port(), "ollama:80");
        let e = Endpoint::parse("--keyd", "https://[::1]:7433").unwrap();
        assert_eq!(e.url(), "https://[::1]:7433");
        for bad in [
            "127.0.0.1:11434",
            "ftp://h",
            "http://h/api",
            "http://h/?a=1",
            "http://u:p@h",
        ] {
            assert_eq!(
                Endpoint::parse("--upstream", bad).unwrap_err().exit_code(),
                2,
                "{bad}"
            );
        }
    }

    #[test]
    fn paths_that_break_configs_are_refused() {
        assert!(config_path("--tls-cert", "/etc/keygate/server.crt").is_ok());
        for bad in ["a b", "a;b", "a\"b", "a}b", "$HOME/x", "a\nb", ""] {
            assert_eq!(
                config_path("--tls-cert", bad).unwrap_err().exit_code(),
                2,
                "{bad:?}"
            );
        }
    }
}
