//! `inferno keys`: make API keys.

use clap::Subcommand;

use crate::auth::{generate_key, key_file_line};

/// Arguments of `inferno keys`.
#[derive(Debug, clap::Args)]
pub struct KeysArgs {
    /// What to do with keys.
    #[command(subcommand)]
    pub command: KeysCommand,
}

/// Key operations.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Print a fresh random key and the entry to add to the API keys file (only its SHA-256
    /// is stored there).
    New {
        /// The key's id, used in logs and metric labels.
        #[arg(long, default_value = "default")]
        id: String,
    },
}

/// Runs `inferno keys`.
pub fn run(args: KeysArgs) -> anyhow::Result<()> {
    match args.command {
        KeysCommand::New { id } => {
            anyhow::ensure!(
                !id.is_empty()
                    && id.len() <= 64
                    && !id.chars().any(|c| c.is_whitespace() || c.is_control()),
                "the id must be 1..=64 characters without whitespace"
            );
            let key = generate_key();
            println!("{key}");
            println!(
                "# Add these lines to the API keys file (TOML format); keep the key above secret:"
            );
            print!("{}", key_file_line(&id, &key));
            Ok(())
        }
    }
}
