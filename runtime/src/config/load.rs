//! Finding and reading the config file: `--config` / `PG_FLO_CONFIG` (which must be readable
//! YAML) or else `$HOME/.pg_flo.yaml` when it exists (a broken one is only a warning), then
//! [`resolve`].

use std::path::{Path, PathBuf};

use pg_flo_config::runtime::Settings;

use super::{resolve, Loaded};
use crate::cli::{Command, CommandLine};

/// Why the configuration could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {}", path.display())]
    ReadFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid YAML in config file {}", path.display())]
    ParseFile {
        path: PathBuf,
        #[source]
        source: serde_yaml::Error,
    },
    #[error("config file {} must be a map of flat keys such as `host: db.example`", path.display())]
    NotAMap { path: PathBuf },
    /// Every problem found, each naming how to set the value.
    #[error("invalid configuration:{}", .0.iter().map(|p| format!("\n  - {p}")).collect::<String>())]
    Invalid(Vec<String>),
}

impl ConfigError {
    /// Metric label / log category.
    pub fn category(&self) -> &'static str {
        match self {
            ConfigError::ReadFile { .. } => "config_file_read",
            ConfigError::ParseFile { .. } | ConfigError::NotAMap { .. } => "config_file_parse",
            ConfigError::Invalid(_) => "config_invalid",
        }
    }

    /// Configuration errors never go away by retrying.
    pub fn retry(&self) -> crate::retry::Retry {
        crate::retry::Retry::Permanent
    }
}

/// A parsed flat YAML config file.
#[derive(Clone, Debug, Default)]
pub struct ConfigFile {
    pub path: PathBuf,
    /// The known keys (lower case) with their values as written: [`super::resolve`] parses
    /// those a command reads, with the shared model, so a bad value is reported only where it
    /// is used (and not when a flag or variable overrides it).
    pub(super) values: serde_yaml::Mapping,
    /// Unknown or unusable keys.
    pub warnings: Vec<String>,
}

impl ConfigFile {
    /// Parses pg_flo's flat kebab-case YAML. Keys are case-insensitive (as viper's); a key no
    /// setting has is a warning.
    pub fn parse(path: &Path, text: &str) -> Result<ConfigFile, ConfigError> {
        let doc: serde_yaml::Value =
            serde_yaml::from_str(text).map_err(|source| ConfigError::ParseFile {
                path: path.to_owned(),
                source,
            })?;
        let mut file = ConfigFile {
            path: path.to_owned(),
            ..ConfigFile::default()
        };
        let map = match doc {
            serde_yaml::Value::Null => return Ok(file),
            serde_yaml::Value::Mapping(map) => map,
            _ => {
                return Err(ConfigError::NotAMap {
                    path: path.to_owned(),
                })
            }
        };
        for (key, value) in map {
            let serde_yaml::Value::String(key) = key else {
                file.warnings.push(format!(
                    "ignoring non-text key {key:?} in config file {}",
                    path.display()
                ));
                continue;
            };
            let key = key.to_ascii_lowercase();
            if Settings::is_known(&key) {
                file.values.insert(key.into(), value);
            } else {
                file.warnings.push(format!(
                    "unknown key {key:?} in config file {} (ignored)",
                    path.display()
                ));
            }
        }
        Ok(file)
    }

    /// The value of `key`, unless unset (absent, `null`, empty).
    pub(super) fn get(&self, key: &str) -> Option<&serde_yaml::Value> {
        self.values
            .get(key)
            .filter(|v| !pg_flo_config::value::is_unset(v))
    }

    /// Reads and parses `path`.
    pub fn read(path: &Path) -> Result<ConfigFile, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::ReadFile {
            path: path.to_owned(),
            source,
        })?;
        ConfigFile::parse(path, &text)
    }
}

/// Resolves the command line against the process environment and the config file.
pub fn load(cli: &CommandLine) -> Result<Loaded, ConfigError> {
    load_with(cli, &|name| std::env::var(name).ok())
}

/// [`load`] with an injected environment lookup.
///
/// The config file is `--config` (or `PG_FLO_CONFIG`), which must be readable valid YAML;
/// without it `$HOME/.pg_flo.yaml` is used when it exists (a broken one is a warning).
pub fn load_with(
    cli: &CommandLine,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Loaded, ConfigError> {
    if matches!(cli.cli.command, Command::Version) {
        return resolve(cli, env, None);
    }
    let mut warnings = Vec::new();
    let explicit = cli.cli.config.clone().or_else(|| {
        env("PG_FLO_CONFIG")
            .filter(|p| !p.trim().is_empty())
            .map(PathBuf::from)
    });
    let file = match explicit {
        Some(path) => Some(ConfigFile::read(&path)?),
        None => default_config_file(env, &mut warnings),
    };
    let mut loaded = match resolve(cli, env, file.as_ref()) {
        Ok(loaded) => loaded,
        Err(ConfigError::Invalid(mut problems)) => {
            problems.extend(warnings.into_iter().map(|w| format!("(warning) {w}")));
            return Err(ConfigError::Invalid(problems));
        }
        Err(e) => return Err(e),
    };
    warnings.append(&mut loaded.warnings);
    loaded.warnings = warnings;
    Ok(loaded)
}

/// `$HOME/.pg_flo.yaml`, if it exists and parses; problems with it become warnings.
fn default_config_file(
    env: &dyn Fn(&str) -> Option<String>,
    warnings: &mut Vec<String>,
) -> Option<ConfigFile> {
    let home = env("HOME").filter(|h| !h.is_empty())?;
    let path = Path::new(&home).join(".pg_flo.yaml");
    match std::fs::read_to_string(&path) {
        Ok(text) => match ConfigFile::parse(&path, &text) {
            Ok(file) => Some(file),
            Err(e) => {
                warnings.push(format!(
                    "ignoring {}: {}",
                    path.display(),
                    crate::redact::error_chain(&e)
                ));
                None
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            warnings.push(format!("ignoring {}: cannot read it: {e}", path.display()));
            None
        }
    }
}
