//! Training configs: a TOML file, overridden by `--set key=value` (dotted keys), then deserialised
//! into the algorithm's typed config, so a typo fails with the key's name instead of being ignored.

use serde::de::DeserializeOwned;
use std::path::Path;

/// Why a config could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: {cause}")]
    Read {
        /// The file.
        path: String,
        /// The cause.
        cause: std::io::Error,
    },
    /// The file or the merged result is not a valid config.
    #[error("{origin}: {message}")]
    Invalid {
        /// The file, or "--set KEY=VALUE".
        origin: String,
        /// What is wrong, with the key.
        message: String,
    },
}

/// Applies `key.sub=value` overrides to a TOML table. A value is read as a TOML literal (number,
/// bool, string in quotes, array) and, failing that, as a bare string.
pub fn apply_overrides(table: &mut toml::Table, sets: &[String]) -> Result<(), ConfigError> {
    for set in sets {
        let invalid = |message: String| ConfigError::Invalid { origin: format!("--set {set}"), message };
        let (key, raw) = set.split_once('=').ok_or_else(|| invalid("expected KEY=VALUE".into()))?;
        let value: toml::Value = match format!("v = {raw}").parse::<toml::Table>() {
            Ok(mut t) => t.remove("v").unwrap_or_else(|| toml::Value::String(raw.to_string())),
            Err(_) => toml::Value::String(raw.to_string()),
        };
        let parts: Vec<&str> = key.trim().split('.').collect();
        let (last, path) = parts.split_last().ok_or_else(|| invalid("empty key".into()))?;
        let mut t = &mut *table;
        for p in path {
            let entry = t.entry(p.to_string()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
            t = entry.as_table_mut().ok_or_else(|| invalid(format!("{p} is not a table")))?;
        }
        t.insert(last.to_string(), value);
    }
    Ok(())
}

/// A stage config shipped in `configs/` and compiled into the binary, so an installed `factrl`
/// can run every stage (`factrl config show NAME`, or `--config NAME`).
pub struct Shipped {
    /// Its name: the file name without `.toml`.
    pub name: &'static str,
    /// Its path in the repository (for messages).
    pub file: &'static str,
    /// The TOML text.
    pub text: &'static str,
}

macro_rules! shipped {
    ($konst:ident, $name:literal) => {
        #[doc = concat!("`configs/", $name, ".toml`.")]
        pub const $konst: Shipped = Shipped {
            name: $name,
            file: concat!("configs/", $name, ".toml"),
            text: include_str!(concat!("../../configs/", $name, ".toml")),
        };
    };
}
shipped!(CLIP, "clip");
shipped!(PRETRAIN, "pretrain");
shipped!(SFT, "sft");
shipped!(SFT_FOCUS, "sft_focus");
shipped!(SFT_RETURN, "sft_return");
shipped!(REWARD, "reward");
shipped!(PPO, "ppo");
shipped!(PPO_LLAVA_RLHF, "ppo_llava_rlhf");
shipped!(DPO, "dpo");

/// Every shipped config, in pipeline order.
pub const SHIPPED: [&Shipped; 9] =
    [&CLIP, &PRETRAIN, &SFT, &SFT_FOCUS, &SFT_RETURN, &REWARD, &PPO, &PPO_LLAVA_RLHF, &DPO];

/// The shipped config called `name` (with or without `.toml`).
pub fn shipped(name: &str) -> Option<&'static Shipped> {
    let name = name.strip_suffix(".toml").unwrap_or(name);
    SHIPPED.iter().copied().find(|s| s.name == name)
}

impl Shipped {
    /// What it is for: the first sentence of its leading comment, at most about 100 characters.
    pub fn about(&self) -> String {
        let comment: Vec<&str> = self.text.lines().map_while(|l| l.strip_prefix("# ")).collect();
        let text = comment.join(" ");
        let sentence = text.split(". ").next().unwrap_or("").trim_end_matches('.');
        match sentence.char_indices().nth(100) {
            Some((cut, _)) => format!("{}...", sentence[..cut].trim_end()),
            None => sentence.to_string(),
        }
    }
}

/// Reads a TOML config file, applies overrides and deserialises it. A bare name that is no file
/// (`ppo`, `reward.toml`) names a shipped config.
pub fn load<T: DeserializeOwned>(path: &Path, sets: &[String]) -> Result<T, ConfigError> {
    let bare = path.parent().is_none_or(|p| p.as_os_str().is_empty());
    if bare
        && !path.exists()
        && let Some(s) = path.to_str().and_then(shipped)
    {
        return parse(s.text, s.file, sets);
    }
    let text = std::fs::read_to_string(path)
        .map_err(|cause| ConfigError::Read { path: path.display().to_string(), cause })?;
    parse(&text, &path.display().to_string(), sets)
}

/// Parses TOML `text` (named `origin` in errors), applies overrides and deserialises it.
pub fn parse<T: DeserializeOwned>(text: &str, origin: &str, sets: &[String]) -> Result<T, ConfigError> {
    let mut table: toml::Table = text.parse().map_err(|e: toml::de::Error| ConfigError::Invalid {
        origin: origin.to_string(),
        message: e.to_string(),
    })?;
    apply_overrides(&mut table, sets)?;
    T::deserialize(toml::Value::Table(table)).map_err(|e| ConfigError::Invalid {
        origin: if sets.is_empty() { origin.to_string() } else { format!("{origin} with --set") },
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Cfg {
        lr: f64,
        name: String,
        optim: Optim,
    }

    #[derive(serde::Deserialize, Debug, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Optim {
        steps: u32,
        clip: bool,
    }

    #[test]
    fn overrides_reach_nested_keys_and_typos_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, "lr = 0.1\nname = \"a\"\n[optim]\nsteps = 3\nclip = false\n").unwrap();
        let c: Cfg = load(
            &p,
            &["optim.steps=7".into(), "name=bare".into(), "lr=2e-4".into(), "optim.clip=true".into()],
        )
        .unwrap();
        assert_eq!(c, Cfg { lr: 2e-4, name: "bare".into(), optim: Optim { steps: 7, clip: true } });
        let err = load::<Cfg>(&p, &["optim.stpes=7".into()]).unwrap_err().to_string();
        assert!(err.contains("stpes"), "{err}");
        let err = load::<Cfg>(&p, &["lr".into()]).unwrap_err().to_string();
        assert!(err.contains("--set lr") && err.contains("KEY=VALUE"), "{err}");
    }

    #[test]
    fn shipped_configs_are_found_by_name_and_describe_themselves() {
        assert_eq!(shipped("ppo").map(|s| s.file), Some("configs/ppo.toml"));
        assert_eq!(shipped("reward.toml").map(|s| s.name), Some("reward"));
        assert!(shipped("nope").is_none());
        for s in SHIPPED {
            assert!(!s.about().is_empty() && s.text.parse::<toml::Table>().is_ok(), "{}", s.file);
        }
        // A bare name that is no file loads the shipped config; a missing path is still an error.
        let t: toml::Table = load(Path::new("ppo"), &["lr=1.0".into()]).unwrap();
        assert_eq!(t["lr"].as_float(), Some(1.0));
        assert!(load::<toml::Table>(Path::new("no/such/ppo"), &[]).is_err());
    }

    #[test]
    fn every_shipped_config_is_one_its_trainer_accepts() {
        use crate::train::{clip, dpo, ppo, reward, sft};
        for s in SHIPPED {
            let ok = match s.name {
                "clip" => parse::<clip::ClipConfig>(s.text, s.file, &[]).map(drop),
                "reward" => parse::<reward::RewardConfig>(s.text, s.file, &[]).map(drop),
                "dpo" => parse::<dpo::DpoConfig>(s.text, s.file, &[]).map(drop),
                "ppo" | "ppo_llava_rlhf" => {
                    let c: ppo::PpoConfig = parse(s.text, s.file, &[]).unwrap();
                    assert!(c.validate().is_ok(), "{}", s.file);
                    Ok(())
                }
                _ => parse::<sft::SftConfig>(s.text, s.file, &[]).map(drop),
            };
            assert!(ok.is_ok(), "{}: {:?}", s.file, ok.err());
        }
    }
}
