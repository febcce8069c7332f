//! Loading: the four layers (defaults → TOML file → `DEDUP_GATEWAY_*` environment → CLI flags)
//! merged by figment, then validated once, so no caller ever holds an unchecked configuration.

use std::path::PathBuf;

use figment::{
    Figment,
    providers::{Env, Format, Serialized, Toml},
};
use serde::Serialize;

use super::{Config, ConfigError, ENV_PREFIX};

/// Settings given on the command line; `None` leaves the lower layers' value.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Overrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_format: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dedup: Option<DedupOverrides>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<PolicyOverrides>,
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct DedupOverrides {
    pub ttl: String,
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct PolicyOverrides {
    pub pending_grace: String,
}

impl Config {
    /// Loads defaults, then `file`, then the environment, then `overrides`, and validates.
    pub fn load(
        file: Option<&std::path::Path>,
        overrides: &Overrides,
    ) -> Result<Self, ConfigError> {
        Self::load_with_env(file, overrides, Env::prefixed(ENV_PREFIX).split("__"))
    }

    /// Like [`Config::load`] with an explicit environment provider, so tests need not mutate
    /// the process environment.
    pub fn load_with_env(
        file: Option<&std::path::Path>,
        overrides: &Overrides,
        env: Env,
    ) -> Result<Self, ConfigError> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            if !path.exists() {
                return Err(ConfigError::Load(format!(
                    "config file {} does not exist",
                    path.display()
                )));
            }
            fig = fig.merge(Toml::file(path));
        }
        let fig = fig
            .merge(env.map(|k| k.as_str().to_ascii_lowercase().into()))
            .merge(Serialized::defaults(overrides));
        let cfg: Config = fig.extract().map_err(load_error)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Parses a TOML string over the defaults (no environment); for tests and examples.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let cfg: Config = Figment::from(Serialized::defaults(Config::default()))
            .merge(Toml::string(text))
            .extract()
            .map_err(|e| ConfigError::Load(e.to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }
}

/// Every figment error in one line, each naming the key it is about.
fn load_error(e: figment::Error) -> ConfigError {
    let mut msg = String::new();
    for err in e {
        if !msg.is_empty() {
            msg.push_str("; ");
        }
        let path = err.path.join(".");
        if path.is_empty() {
            msg.push_str(&err.kind.to_string());
        } else {
            msg.push_str(&format!("invalid `{path}`: {}", err.kind));
        }
    }
    ConfigError::Load(msg)
}
