//! `fps-hsm`: list, generate and rotate keys in the switch's PKCS#11 token.
//! A thin shell over [`fps_hsm::admin`]; `fps-switch hsm` calls the same
//! functions. The PIN is read from an environment variable or a file, never
//! from the command line.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use fps_hsm::pkcs11::{init_token, TokenSession};
use fps_hsm::{admin, HsmError, Mechanism, Pin, PinSource};

/// Where Debian/Ubuntu install SoftHSM2's module.
const DEFAULT_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

#[derive(Debug, Parser)]
#[command(name = "fps-hsm", about = "Manage fps-switch keys in a PKCS#11 token")]
struct Cli {
    /// PKCS#11 module [default: $FPS_HSM_MODULE or the SoftHSM2 module]
    #[arg(long, global = true)]
    module: Option<PathBuf>,
    /// Token label [default: $FPS_HSM_TOKEN or fps-switch]
    #[arg(long, global = true)]
    token: Option<String>,
    /// Environment variable holding the user PIN
    #[arg(
        long,
        global = true,
        default_value = "FPS_HSM_PIN",
        conflicts_with = "pin_file"
    )]
    pin_env: String,
    /// File holding the user PIN (instead of --pin-env)
    #[arg(long, global = true)]
    pin_file: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// List keys with label, class, type, sensitive, extractable, private.
    List,
    /// Generate version 1 of a new key inside the token.
    Generate {
        /// Base label (the token object is `<label>-v1`).
        #[arg(long)]
        label: String,
        /// hmac-sha256 | aes-cmac | ecdsa-p256-sha256 | rsa-pss-sha256 | ed25519
        #[arg(long)]
        kind: String,
        /// Succeed without change if a version of the key already exists.
        #[arg(long)]
        if_missing: bool,
    },
    /// Generate the next version (`-vN+1`) of an existing key, same kind.
    Rotate {
        /// Base label.
        #[arg(long)]
        label: String,
    },
    /// Initialise a token with this label in a free slot and set the user
    /// PIN (no-op if it exists). SO PIN from $FPS_HSM_SO_PIN.
    InitToken {
        /// Environment variable holding the SO PIN.
        #[arg(long, default_value = "FPS_HSM_SO_PIN")]
        so_pin_env: String,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let module = cli
        .module
        .clone()
        .or_else(|| std::env::var_os("FPS_HSM_MODULE").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_MODULE));
    let token = cli
        .token
        .clone()
        .or_else(|| std::env::var("FPS_HSM_TOKEN").ok())
        .unwrap_or_else(|| "fps-switch".to_owned());
    let pin = match &cli.pin_file {
        Some(path) => PinSource::File(path.clone()),
        None => PinSource::Env(cli.pin_env.clone()),
    }
    .read()?;

    match cli.command {
        Command::InitToken { so_pin_env } => {
            let so_pin = PinSource::Env(so_pin_env).read()?;
            init_token(&module, &token, &so_pin, &pin)?;
            println!("token `{token}` ready");
        }
        Command::List => {
            let session = open(&module, &token, &pin)?;
            println!(
                "{:<32} {:<8} {:<18} {:<9} {:<11} {:<7}",
                "LABEL", "CLASS", "TYPE", "SENSITIVE", "EXTRACTABLE", "PRIVATE"
            );
            for key in admin::list_keys(&session)? {
                let flag = |b: Option<bool>| b.map_or("-", |b| if b { "true" } else { "false" });
                println!(
                    "{:<32} {:<8} {:<18} {:<9} {:<11} {:<7}",
                    key.label,
                    key.class,
                    key.key_type,
                    flag(key.sensitive),
                    flag(key.extractable),
                    flag(key.private)
                );
            }
        }
        Command::Generate {
            label,
            kind,
            if_missing,
        } => {
            let mechanism = parse_kind(&kind)?;
            let session = open(&module, &token, &pin)?;
            match admin::generate(&session, &label, mechanism) {
                Ok(full) => println!("generated {full} ({mechanism})"),
                Err(HsmError::KeyExists { label: existing }) if if_missing => {
                    println!("kept {existing} (already present)")
                }
                Err(e) => return Err(e.into()),
            }
        }
        Command::Rotate { label } => {
            let session = open(&module, &token, &pin)?;
            let full = admin::rotate(&session, &label)?;
            println!("generated {full}; running switches use it after their next key re-scan");
        }
    }
    Ok(())
}

fn open(module: &std::path::Path, token: &str, pin: &Pin) -> Result<TokenSession> {
    TokenSession::open(module, token, pin)
        .with_context(|| format!("opening token `{token}` with module {}", module.display()))
}

fn parse_kind(kind: &str) -> Result<Mechanism> {
    let name = kind.replace('-', "_");
    let name = match name.as_str() {
        "ecdsa_p256" => "ecdsa_p256_sha256",
        "rsa_pss" => "rsa_pss_sha256",
        other => other,
    };
    match Mechanism::from_name(name) {
        Some(m) => Ok(m),
        None => bail!(
            "unknown key kind `{kind}`; use hmac-sha256, aes-cmac, ecdsa-p256-sha256, rsa-pss-sha256 or ed25519"
        ),
    }
}
