//! Human durations (`90s`, `15m`, `1h`, `30d`), shared by keyctl and keyd so both agree on
//! what is valid.

/// A validated, positive duration in whole seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Duration(u64);

impl Duration {
    /// Ten years: longer is a typo, not a policy.
    pub const MAX_SECS: u64 = 10 * 366 * 86_400;

    pub fn try_from_secs(secs: u64) -> Result<Self, &'static str> {
        if secs == 0 {
            return Err("duration must be positive");
        }
        if secs > Self::MAX_SECS {
            return Err("duration must be at most 10 years");
        }
        Ok(Self(secs))
    }

    /// Parses `N` followed by `s`, `m`, `h`, `d` or `w`; a bare number is seconds.
    pub fn parse(s: &str) -> Result<Self, &'static str> {
        let s = s.trim();
        const HELP: &str = "duration must look like 90s, 15m, 1h, 30d or 2w";
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (n, unit) = s.split_at(split);
        let n: u64 = n.parse().map_err(|_| HELP)?;
        let mult = match unit {
            "" | "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86_400,
            "w" => 7 * 86_400,
            _ => return Err(HELP),
        };
        Self::try_from_secs(n.checked_mul(mult).ok_or(HELP)?)
    }

    pub fn secs(self) -> u64 {
        self.0
    }

    pub fn secs_i64(self) -> i64 {
        i64::try_from(self.0).unwrap_or(i64::MAX)
    }
}

impl core::fmt::Display for Duration {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let s = self.0;
        for (unit, n) in [("w", 604_800), ("d", 86_400), ("h", 3600), ("m", 60)] {
            if s % n == 0 {
                return write!(f, "{}{unit}", s / n);
            }
        }
        write!(f, "{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_durations() {
        assert_eq!(Duration::parse("15m").unwrap().secs(), 900);
        assert_eq!(Duration::parse("30d").unwrap().to_string(), "30d");
        assert!(Duration::parse("0s").is_err());
        assert!(Duration::parse("1y").is_err());
        assert!(Duration::parse("-1s").is_err());
        assert!(Duration::parse("").is_err());
    }
}
