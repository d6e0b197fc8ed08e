//! `factrl config`: the shipped stage configs compiled into the binary.

use crate::train::config::{SHIPPED, shipped};
use clap::Subcommand;

/// Subcommands of `factrl config`.
#[derive(Subcommand)]
pub enum ConfigCommand {
    /// The shipped configs, one a line: name and what it is for.
    List,
    /// Print a shipped config (`factrl config show ppo > my.toml`); `--config NAME` takes it as is.
    Show {
        /// Its name, as `factrl config list` prints it.
        name: String,
    },
}

/// Runs `factrl config`.
pub fn run(cmd: ConfigCommand) -> anyhow::Result<()> {
    match cmd {
        ConfigCommand::List => {
            for s in SHIPPED {
                super::print(&format!("{:<16} {}", s.name, s.about()))?;
            }
        }
        ConfigCommand::Show { name } => {
            let names: Vec<&str> = SHIPPED.iter().map(|s| s.name).collect();
            let s = shipped(&name).ok_or_else(|| {
                anyhow::anyhow!("no shipped config `{name}` (shipped: {})", names.join(", "))
            })?;
            super::print(s.text.trim_end())?;
        }
    }
    Ok(())
}
