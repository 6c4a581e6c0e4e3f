//! Layered configuration: defaults → optional TOML file → `TERN_<SERVICE>_<KEY>` environment
//! variables. Each service declares one typed struct; a bad value fails start-up with an error
//! that names the key.

use std::path::Path;

use anyhow::Context;
use serde::{de::DeserializeOwned, Serialize};

/// Loads `T` for `service` (e.g. "router"): the defaults of `T`, overlaid by `file` if given, then
/// by environment variables `TERN_<SERVICE>_<KEY>` (nested keys joined by `__`).
pub fn load<T>(service: &str, file: Option<&Path>) -> anyhow::Result<T>
where
    T: DeserializeOwned + Serialize + Default,
{
    let prefix = format!("TERN_{}", service.to_ascii_uppercase());
    load_with_env(service, file, config::Environment::with_prefix(&prefix))
}

fn load_with_env<T>(
    service: &str,
    file: Option<&Path>,
    env: config::Environment,
) -> anyhow::Result<T>
where
    T: DeserializeOwned + Serialize + Default,
{
    let defaults = config::Config::try_from(&T::default()).context("encode defaults")?;
    let mut builder = config::Config::builder().add_source(defaults);
    if let Some(path) = file {
        builder = builder.add_source(config::File::from(path).format(config::FileFormat::Toml));
    }
    let env = env.prefix_separator("_").separator("__").try_parsing(true);
    let cfg = builder
        .add_source(env)
        .build()
        .with_context(|| format!("read {service} configuration"))?;
    cfg.try_deserialize()
        .map_err(|e| anyhow::anyhow!("invalid {service} configuration: {e}"))
}

/// The config file named by `--config FILE` or `TERN_CONFIG`, if any.
pub fn config_file_from_args() -> Option<std::path::PathBuf> {
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--config" {
            return args.next().map(Into::into);
        }
        if let Some(v) = a.strip_prefix("--config=") {
            return Some(v.into());
        }
    }
    std::env::var_os("TERN_CONFIG").map(Into::into)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use std::collections::HashMap;

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    #[serde(default, deny_unknown_fields)]
    struct Demo {
        port: u16,
        name: String,
    }

    impl Default for Demo {
        fn default() -> Self {
            Self {
                port: 8000,
                name: "a".into(),
            }
        }
    }

    fn env(vars: &[(&str, &str)]) -> config::Environment {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        config::Environment::with_prefix("TERN_DEMO").source(Some(map))
    }

    #[test]
    fn layers_defaults_file_then_env() {
        let dir = std::env::temp_dir().join(format!("tern-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("demo.toml");
        std::fs::write(&file, "port = 9000\nname = \"file\"\n").unwrap();

        let d: Demo = load_with_env("demo", None, env(&[])).unwrap();
        assert_eq!(d, Demo::default());
        let d: Demo = load_with_env("demo", Some(&file), env(&[])).unwrap();
        assert_eq!(
            d,
            Demo {
                port: 9000,
                name: "file".into()
            }
        );
        let d: Demo =
            load_with_env("demo", Some(&file), env(&[("TERN_DEMO_PORT", "9100")])).unwrap();
        assert_eq!(
            d,
            Demo {
                port: 9100,
                name: "file".into()
            }
        );
    }

    #[test]
    fn bad_value_names_the_key() {
        let err = load_with_env::<Demo>("demo", None, env(&[("TERN_DEMO_PORT", "many")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("port"), "error should name the key: {err}");
        assert!(err.contains("demo"), "error should name the service: {err}");
    }

    #[test]
    fn unknown_key_is_rejected() {
        let dir = std::env::temp_dir().join(format!("tern-config-u-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("demo.toml");
        std::fs::write(&file, "prot = 9000\n").unwrap();
        let err = load_with_env::<Demo>("demo", Some(&file), env(&[]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("prot"),
            "error should name the unknown key: {err}"
        );
    }
}

/// A configuration value that is never printed (a secret key): `Debug` shows `<redacted>`.
#[derive(Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.is_empty() {
            f.write_str("\"\"")
        } else {
            f.write_str("<redacted>")
        }
    }
}
