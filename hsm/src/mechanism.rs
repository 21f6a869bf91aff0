//! The closed set of algorithms the switch uses with banks.

use serde::Deserialize;

/// An authentication algorithm. Names double as config values and as metric
/// label values (a bounded set).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Mechanism {
    /// HMAC with SHA-256 over a generic secret key (ISO 8583 MAC, JSON APIs).
    HmacSha256,
    /// AES-CMAC (RFC 4493) with an AES-128 or AES-256 key (ISO 8583 MAC).
    AesCmac,
    /// ECDSA on P-256 over SHA-256; signatures are raw `r || s` (64 bytes).
    EcdsaP256Sha256,
    /// RSA-PSS with SHA-256, MGF1-SHA-256 and a 32-byte salt.
    RsaPssSha256,
    /// Ed25519 (PureEdDSA), where the token supports it.
    Ed25519,
}

/// Every mechanism, for listings and exhaustive tests.
pub const ALL_MECHANISMS: [Mechanism; 5] = [
    Mechanism::HmacSha256,
    Mechanism::AesCmac,
    Mechanism::EcdsaP256Sha256,
    Mechanism::RsaPssSha256,
    Mechanism::Ed25519,
];

impl Mechanism {
    /// The config / metric label name, e.g. `hmac_sha256`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Mechanism::HmacSha256 => "hmac_sha256",
            Mechanism::AesCmac => "aes_cmac",
            Mechanism::EcdsaP256Sha256 => "ecdsa_p256_sha256",
            Mechanism::RsaPssSha256 => "rsa_pss_sha256",
            Mechanism::Ed25519 => "ed25519",
        }
    }

    /// Parses a config name (`hmac_sha256`, ...); `None` if unknown.
    pub fn from_name(name: &str) -> Option<Self> {
        ALL_MECHANISMS.into_iter().find(|m| m.as_str() == name)
    }

    /// True for MAC (secret key) mechanisms, false for signatures.
    pub const fn is_mac(self) -> bool {
        matches!(self, Mechanism::HmacSha256 | Mechanism::AesCmac)
    }

    /// Whether `op` makes sense with this mechanism (MAC ops with MAC keys,
    /// sign/verify with signature keys).
    pub const fn supports(self, op: Operation) -> bool {
        match op {
            Operation::Mac | Operation::VerifyMac => self.is_mac(),
            Operation::Sign | Operation::Verify => !self.is_mac(),
        }
    }
}

impl std::fmt::Display for Mechanism {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a request asks the HSM to do (a metric label value too).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Operation {
    /// Make a signature.
    Sign,
    /// Check a signature.
    Verify,
    /// Make a MAC.
    Mac,
    /// Check a MAC.
    VerifyMac,
}

impl Operation {
    /// The metric label name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Operation::Sign => "sign",
            Operation::Verify => "verify",
            Operation::Mac => "mac",
            Operation::VerifyMac => "verify_mac",
        }
    }
}

impl std::fmt::Display for Operation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
