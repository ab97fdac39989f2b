//! The value grammar of pg_flo's settings, one parser per kind of value, shared by the three
//! places a setting can come from: the command line (clap `value_parser`), the `PG_FLO_*`
//! environment and the YAML config file (the serde modules below, used with
//! `#[serde(with = "...")]` on the fields of [`crate::runtime`]).
//!
//! Every parser takes text and returns a message without the value when the value may be a
//! secret. The serde modules accept what pg_flo's viper accepted: any YAML scalar is read as
//! its text (`port: "5432"` and `port: 5432` are the same), `null` and empty text mean "not
//! set", and a list or map where one value is expected is an error.

use std::net::SocketAddr;
use std::time::Duration;

use secrecy::SecretString;

/// Go's `strconv.ParseBool` spellings.
pub fn parse_bool(s: &str) -> Result<bool, String> {
    match s.trim() {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        other => Err(format!("expected true or false, got {other:?}")),
    }
}

/// A TCP port, 1..=65535.
pub fn parse_port(s: &str) -> Result<u16, String> {
    match s.trim().parse::<i64>() {
        Ok(n) if (1..=65535).contains(&n) => u16::try_from(n).map_err(|e| e.to_string()),
        Ok(n) => Err(format!("port must be between 1 and 65535, got {n}")),
        Err(_) => Err(format!(
            "port must be a number between 1 and 65535, got {s:?}"
        )),
    }
}

/// A humantime duration: `1s`, `500ms`, `2m 30s`, `0`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|e| format!("invalid duration {s:?} ({e}): use e.g. 1s, 500ms or 2m"))
}

/// A whole number greater than 0.
pub fn parse_positive(s: &str) -> Result<u64, String> {
    match s.trim().parse::<u64>() {
        Ok(0) => Err("must be greater than 0".to_owned()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("expected a whole number greater than 0, got {s:?}")),
    }
}

/// Any integer (for pg_flo settings where a value <= 0 means "default").
pub fn parse_int(s: &str) -> Result<i64, String> {
    s.trim()
        .parse::<i64>()
        .map_err(|_| format!("expected a whole number, got {s:?}"))
}

/// A whole number >= 0 that fits 32 bits.
pub fn parse_count(s: &str) -> Result<u32, String> {
    s.trim()
        .parse::<u32>()
        .map_err(|_| format!("expected a whole number >= 0, got {s:?}"))
}

/// A size in bytes greater than 0: `1048576`, `512KiB`, `1MiB`, `10GiB` (binary), `1MB`
/// (decimal); a trailing `B` and spaces before the unit are allowed.
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let invalid = || format!("invalid size {s:?}: use bytes or a unit, e.g. 1048576, 512KiB, 1MiB");
    let n: u64 = digits.parse().map_err(|_| invalid())?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "t" | "tib" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        _ => return Err(invalid()),
    };
    match n.checked_mul(factor) {
        Some(0) => Err("must be greater than 0".to_owned()),
        Some(v) => Ok(v),
        None => Err(format!("size {s:?} is too large")),
    }
}

/// `host:port` with an IP address; `:9100` means every interface (`0.0.0.0:9100`).
pub fn parse_socket_addr(s: &str) -> Result<SocketAddr, String> {
    let t = s.trim();
    let t = if t.starts_with(':') {
        format!("0.0.0.0{t}")
    } else {
        t.to_owned()
    };
    t.parse::<SocketAddr>()
        .map_err(|_| format!("invalid address {s:?}: use ip:port, e.g. 0.0.0.0:9100 or :9100"))
}

/// A password or header; never fails and never echoes the value.
pub fn parse_secret(s: &str) -> Result<SecretString, String> {
    Ok(SecretString::from(s))
}

/// Splits a table list on commas and/or whitespace, dropping empty items.
pub fn split_list(s: &str) -> Vec<String> {
    s.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|item| !item.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The text of a YAML scalar (`None` for a list or map).
pub fn scalar_text(value: &serde_yaml::Value) -> Option<String> {
    match value {
        serde_yaml::Value::String(s) => Some(s.clone()),
        serde_yaml::Value::Bool(b) => Some(b.to_string()),
        serde_yaml::Value::Number(n) => Some(n.to_string()),
        serde_yaml::Value::Tagged(t) => scalar_text(&t.value),
        serde_yaml::Value::Null => Some(String::new()),
        _ => None,
    }
}

/// Whether `value` means "not set": `null`, empty text or an empty list.
pub fn is_unset(value: &serde_yaml::Value) -> bool {
    match value {
        serde_yaml::Value::Sequence(items) => items.is_empty(),
        other => scalar_text(other).is_some_and(|s| s.trim().is_empty()),
    }
}

/// Serde support for the fields of [`crate::runtime`]: each module reads one kind of value
/// from any YAML scalar with the parser above and writes it back in the form the parser
/// reads.
pub mod serde_as {
    use std::fmt::Display;
    use std::net::SocketAddr;
    use std::path::PathBuf;
    use std::time::Duration;

    use secrecy::SecretString;
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serializer};

    use super::scalar_text;

    /// One setting's text, `None` when unset; a list or map is an error.
    fn text<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        let value = serde_yaml::Value::deserialize(d)?;
        match scalar_text(&value) {
            Some(s) if s.trim().is_empty() => Ok(None),
            Some(s) => Ok(Some(s)),
            None => Err(D::Error::custom(
                "expected a single value, not a list or map",
            )),
        }
    }

    /// [`text`] through `parse`.
    fn parsed<'de, D: Deserializer<'de>, T>(
        d: D,
        parse: fn(&str) -> Result<T, String>,
    ) -> Result<Option<T>, D::Error> {
        text(d)?
            .map(|s| parse(&s).map_err(D::Error::custom))
            .transpose()
    }

    fn display<S: Serializer, T: Display>(v: &Option<T>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => s.collect_str(v),
            None => s.serialize_none(),
        }
    }

    macro_rules! kind {
        ($(#[$doc:meta])* $name:ident: $t:ty, $parse:expr, $ser:expr) => {
            $(#[$doc])*
            pub mod $name {
                use super::*;

                pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<$t>, D::Error> {
                    parsed(d, $parse)
                }

                pub fn serialize<S: Serializer>(v: &Option<$t>, s: S) -> Result<S::Ok, S::Error> {
                    ($ser)(v, s)
                }
            }
        };
    }

    fn plain<S: Serializer, T: serde::Serialize>(v: &Option<T>, s: S) -> Result<S::Ok, S::Error> {
        serde::Serialize::serialize(v, s)
    }

    kind!(
        /// Text (host names, database and group names, URLs).
        text: String, |s| Ok(s.to_owned()), plain
    );
    kind!(
        /// A file or directory path.
        path: PathBuf, |s| Ok(PathBuf::from(s)), plain
    );
    kind!(
        /// `true`/`false` as Go's `ParseBool`.
        flag: bool, super::super::parse_bool, plain
    );
    kind!(
        /// A TCP port.
        port: u16, super::super::parse_port, plain
    );
    kind!(
        /// A whole number greater than 0.
        positive: u64, super::super::parse_positive, plain
    );
    kind!(
        /// Any whole number.
        int: i64, super::super::parse_int, plain
    );
    kind!(
        /// A whole number >= 0.
        count: u32, super::super::parse_count, plain
    );
    kind!(
        /// A size in bytes (written as a number).
        bytes: u64, super::super::parse_bytes, plain
    );
    kind!(
        /// A humantime duration (written as `5m`, `500ms`).
        duration: Duration, super::super::parse_duration,
        |v: &Option<Duration>, s| display(&v.map(humantime::format_duration), s)
    );
    kind!(
        /// `ip:port` (written as `0.0.0.0:9100`).
        addr: SocketAddr, super::super::parse_socket_addr, display
    );
    kind!(
        /// libpq's `sslmode`.
        sslmode: crate::SslMode, |s| s.parse(), display
    );
    kind!(
        /// `text` or `json`.
        log_format: crate::runtime::LogFormat, |s| s.parse(), display
    );

    /// A secret (password): read like text, never written (`skip_serializing` on the field),
    /// so a rendered config file cannot carry one.
    pub fn secret<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SecretString>, D::Error> {
        Ok(text(d)?.map(SecretString::from))
    }

    /// A list of names: a YAML list (items split on commas and spaces too) or one text split on
    /// commas and spaces.
    pub mod list {
        use super::*;

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
            items(d, "names", super::super::split_list)
        }

        pub fn serialize<S: Serializer>(v: &[String], s: S) -> Result<S::Ok, S::Error> {
            s.collect_seq(v)
        }
    }

    /// Lines of secret text (webhook headers): a YAML list of texts or one text, each split
    /// into its non-blank lines; never written.
    pub fn lines<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<SecretString>, D::Error> {
        let lines = items(d, "\"Name: value\" strings", |s| {
            s.lines()
                .filter(|line| !line.trim().is_empty())
                .map(str::to_owned)
                .collect()
        })?;
        Ok(lines.into_iter().map(SecretString::from).collect())
    }

    fn items<'de, D: Deserializer<'de>>(
        d: D,
        what: &str,
        split: impl Fn(&str) -> Vec<String>,
    ) -> Result<Vec<String>, D::Error> {
        match serde_yaml::Value::deserialize(d)? {
            serde_yaml::Value::Sequence(items) => {
                let mut out = Vec::new();
                for item in &items {
                    match scalar_text(item) {
                        Some(s) => out.extend(split(&s)),
                        None => {
                            return Err(D::Error::custom(format!(
                                "list items must be {what}, not lists or maps"
                            )))
                        }
                    }
                }
                Ok(out)
            }
            value => match scalar_text(&value) {
                Some(s) => Ok(split(&s)),
                None => Err(D::Error::custom(format!("expected a list of {what}"))),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_parsers() {
        assert_eq!(parse_bytes("1MiB"), Ok(1 << 20));
        assert_eq!(parse_bytes("10 GB"), Ok(10_000_000_000));
        assert_eq!(parse_bytes("4096"), Ok(4096));
        assert!(parse_bytes("0").is_err());
        assert!(parse_bytes("1XB").is_err());
        assert_eq!(parse_port("5432"), Ok(5432));
        assert!(parse_port("0").is_err());
        assert!(parse_port("-1").is_err());
        assert_eq!(parse_duration("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_bool("T"), Ok(true));
        assert!(parse_bool("yes").is_err());
        assert_eq!(parse_count("0"), Ok(0));
        assert!(parse_count("-1").is_err());
        assert_eq!(parse_int("-1"), Ok(-1));
        assert_eq!(
            parse_socket_addr(":9100"),
            Ok("0.0.0.0:9100".parse().unwrap())
        );
        assert_eq!(split_list(" a,b c ,\td "), ["a", "b", "c", "d"]);
    }
}
