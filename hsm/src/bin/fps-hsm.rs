//! `fps-hsm`: list, generate, rotate and import keys in the switch's
//! PKCS#11 token. A thin shell over [`fps_hsm::admin`]. The PIN is read
//! from an environment variable or a file, never from the command line;
//! imported key material from a file, never from the command line either.
//!
//! Exit status: 0 on success, 2 when the input is wrong (a usage error, or
//! an `import` key file or label that cannot be used), 1 on any other
//! failure (module, token, PIN, token refusal).

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use fps_hsm::pkcs11::{default_module, init_token, TokenSession, SOFTHSM2_MODULES};
use fps_hsm::{admin, HsmError, Mechanism, Pin, PinSource};
use zeroize::Zeroizing;

/// Largest `--key-file` read: a hex key of the longest accepted HMAC key,
/// with generous room for whitespace.
const MAX_KEY_FILE_BYTES: u64 = 4 * admin::MAX_HMAC_KEY_BYTES as u64;
/// Exit status for input the command cannot use (as clap's usage errors).
const EXIT_BAD_INPUT: u8 = 2;
/// Exit status for any other failure.
const EXIT_FAILED: u8 = 1;

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
    /// Import a MAC key a bank provides as the next version of a label
    /// (`-v1` if none exists): sensitive, never extractable.
    Import {
        /// Base label (the token object is `<label>-vN`).
        #[arg(long)]
        label: String,
        /// hmac_sha256 | aes_cmac
        #[arg(long)]
        mechanism: String,
        /// File holding the key as hex (whitespace around it ignored), as
        /// the danger_software backend's `.hmac.hex` / `.cmac.hex` files.
        #[arg(long)]
        key_file: PathBuf,
    },
    /// Delete one version of a key (`<label>-vN`), every object of it: once
    /// no one uses it (after a rotation's overlap), or a leftover test key.
    Destroy {
        /// Full label with its version (`mac-bank004-v1`).
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

/// Input the command cannot use: exits with [`EXIT_BAD_INPUT`].
#[derive(Debug)]
struct BadInput(String);

impl std::fmt::Display for BadInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BadInput {}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        // One line for input to fix; otherwise the report a
        // `fn main() -> anyhow::Result<()>` gives (causes, backtrace).
        Err(e) if e.is::<BadInput>() => {
            eprintln!("Error: {e}");
            ExitCode::from(EXIT_BAD_INPUT)
        }
        Err(e) => {
            eprintln!("Error: {e:?}");
            ExitCode::from(EXIT_FAILED)
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    let module = cli
        .module
        .clone()
        .or_else(default_module)
        // Not installed: loading it fails, naming the path.
        .unwrap_or_else(|| PathBuf::from(SOFTHSM2_MODULES[0]));
    let token = cli
        .token
        .clone()
        .or_else(|| std::env::var("FPS_HSM_TOKEN").ok())
        .unwrap_or_else(|| "fps-switch".to_owned());
    let pin_source = match &cli.pin_file {
        Some(path) => PinSource::File(path.clone()),
        None => PinSource::Env(cli.pin_env.clone()),
    };
    // Read when a command needs it (`import` checks its input first).
    let pin = || pin_source.read();

    match cli.command {
        Command::InitToken { so_pin_env } => {
            let user_pin = pin()?;
            let so_pin = PinSource::Env(so_pin_env).read()?;
            init_token(&module, &token, &so_pin, &user_pin)?;
            println!("token `{token}` ready");
        }
        Command::List => {
            let session = open(&module, &token, &pin()?)?;
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
            let session = open(&module, &token, &pin()?)?;
            match admin::generate(&session, &label, mechanism) {
                Ok(full) => println!("generated {full} ({mechanism})"),
                Err(HsmError::KeyExists { label: existing }) if if_missing => {
                    println!("kept {existing} (already present)")
                }
                Err(e) => return Err(e.into()),
            }
        }
        Command::Rotate { label } => {
            let session = open(&module, &token, &pin()?)?;
            let full = admin::rotate(&session, &label)?;
            println!("generated {full}; running switches use it after their next key re-scan");
        }
        Command::Import {
            label,
            mechanism,
            key_file,
        } => {
            let (mechanism, key) = import_input(&label, &mechanism, &key_file)?;
            let session = open(&module, &token, &pin()?)?;
            let full = match admin::import_secret(&session, &label, mechanism, &key) {
                Ok(full) => full,
                // Input is checked above; what the token adds is about the
                // label (a key of another kind, the last version).
                Err(e @ HsmError::InvalidInput { .. }) => {
                    return Err(BadInput(format!("--label: {}", reason(e))).into())
                }
                Err(e) => return Err(e.into()),
            };
            println!("imported {full} ({mechanism}); running switches use it after their next key re-scan");
        }
        Command::Destroy { label } => {
            let session = open(&module, &token, &pin()?)?;
            match admin::destroy_key(&session, &label) {
                Ok(()) => println!("destroyed {label}"),
                Err(e @ (HsmError::InvalidInput { .. } | HsmError::KeyNotFound { .. })) => {
                    return Err(BadInput(format!("--label: {}", reason(e))).into())
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(())
}

/// The mechanism and key bytes of `import`, every problem named by its
/// option. The messages carry lengths, never key bytes.
fn import_input(
    label: &str,
    mechanism: &str,
    key_file: &Path,
) -> Result<(Mechanism, Zeroizing<Vec<u8>>)> {
    let bad = |what: String| anyhow::Error::new(BadInput(what));
    fps_hsm::config::check_base_label(label).map_err(|e| bad(format!("--label: {}", reason(e))))?;
    let mechanism = match Mechanism::from_name(&mechanism.replace('-', "_")) {
        Some(m) if m.is_mac() => m,
        _ => {
            return Err(bad(format!(
                "--mechanism: `{mechanism}` cannot be imported; use hmac_sha256 or aes_cmac"
            )))
        }
    };
    let file = key_file.display();
    let cannot_read = |e: std::io::Error| bad(format!("--key-file: cannot read {file}: {e}"));
    // Bounded read: one byte past the limit tells a file that is too big.
    // Room for all of it up front, so no reallocation leaves a copy behind.
    let mut text = Zeroizing::new(Vec::with_capacity(MAX_KEY_FILE_BYTES as usize + 1));
    std::fs::File::open(key_file)
        .and_then(|f| f.take(MAX_KEY_FILE_BYTES + 1).read_to_end(&mut text))
        .map_err(cannot_read)?;
    if text.len() as u64 > MAX_KEY_FILE_BYTES {
        return Err(bad(format!(
            "--key-file: {file} is longer than a hex MAC key can be ({MAX_KEY_FILE_BYTES} bytes at most)"
        )));
    }
    let key = std::str::from_utf8(&text)
        .ok()
        .and_then(|t| fps_hsm::software::decode_hex(t.trim()))
        .map(Zeroizing::new)
        .ok_or_else(|| bad("--key-file: not hex".to_owned()))?;
    admin::check_secret_len(mechanism, key.len())
        .map_err(|e| bad(format!("--key-file: {}", reason(e))))?;
    Ok((mechanism, key))
}

/// The reason of an input error, without the variant's prefix.
fn reason(e: HsmError) -> String {
    match e {
        HsmError::InvalidInput { reason } => reason,
        other => other.to_string(),
    }
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
